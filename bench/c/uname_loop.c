/* uname_loop N [CPU]: time N uname(2) calls; print microseconds per call on stdout.
 *
 * The program every variant of the "trapped uname" case runs (natively, under the C
 * seccomp-notify floor, in a zerovisor container, under proot), so they differ only in who
 * answers the call. It times itself with CLOCK_MONOTONIC around the loop, so process and
 * container start-up stay out of the number. CPU >= 0 pins it there first (-1: unpinned). It
 * is a raw syscall(SYS_uname): libc could cache or vDSO-answer a call, the kernel will not.
 */
#include "selftime.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Calls before the clock starts: fault in the stack and the supervisor's per-task state
 * (its /proc/PID/mem fd, its caches), which a first call pays once. */
#define WARMUP 16

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s N [CPU]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    int cpu = argc > 2 ? atoi(argv[2]) : -1;
    if (n <= 0) {
        fprintf(stderr, "N must be > 0\n");
        return 2;
    }
    if (pin_to(cpu) != 0)
        return 1;
    struct utsname u;
    for (int i = 0; i < WARMUP; i++) {
        if (syscall(SYS_uname, &u) != 0) {
            perror("uname");
            return 1;
        }
    }
    double start = now_us();
    for (long i = 0; i < n; i++) {
        if (syscall(SYS_uname, &u) != 0) {
            perror("uname");
            return 1;
        }
    }
    double elapsed = now_us() - start;
    /* A supervisor that answered without writing the struct would be measured as too cheap. */
    if (u.sysname[0] == '\0') {
        fprintf(stderr, "uname returned an empty sysname\n");
        return 1;
    }
    /* The release first: who answered shows in it (the sentry reports its own). */
    printf("%s %.4f\n", u.release, elapsed / n);
    return 0;
}
