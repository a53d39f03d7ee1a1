/* open_loop MODE PATH N [CPU]: time N open+close pairs of PATH; print microseconds per pair.
 *
 * MODE "write" opens with O_WRONLY|O_CREAT|O_TRUNC, which zerovisor's filter traps and the
 * sentry serves through the gofer; MODE "read" opens O_RDONLY, which the filter lets run
 * natively. It times itself with CLOCK_MONOTONIC around the loop, so process and container
 * start-up stay out of the number. CPU >= 0 pins it there first (-1: unpinned).
 */
#include "selftime.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Pairs before the clock starts: the first open creates the file (write mode) and fills
 * caches on every side (dentries, the supervisor's per-task state). */
#define WARMUP 16

static int pair(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        perror(path);
        return -1;
    }
    if (close(fd) != 0) {
        perror("close");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s write|read PATH N [CPU]\n", argv[0]);
        return 2;
    }
    int flags;
    if (strcmp(argv[1], "write") == 0) {
        flags = O_WRONLY | O_CREAT | O_TRUNC;
    } else if (strcmp(argv[1], "read") == 0) {
        flags = O_RDONLY;
    } else {
        fprintf(stderr, "MODE is write or read, not %s\n", argv[1]);
        return 2;
    }
    const char *path = argv[2];
    long n = strtol(argv[3], NULL, 10);
    int cpu = argc > 4 ? atoi(argv[4]) : -1;
    if (n <= 0) {
        fprintf(stderr, "N must be > 0\n");
        return 2;
    }
    if (pin_to(cpu) != 0)
        return 1;
    for (int i = 0; i < WARMUP; i++) {
        if (pair(path, flags) != 0) {
            return 1;
        }
    }
    double start = now_us();
    for (long i = 0; i < n; i++) {
        if (pair(path, flags) != 0) {
            return 1;
        }
    }
    printf("%.4f\n", (now_us() - start) / n);
    return 0;
}
