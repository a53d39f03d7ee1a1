/* uname(2) N times (argv[1]) through syscall(SYS_uname), then prints nodename and release.
 * With argv[2] == "sync": creates /ready, waits for /go (created by the test on the host),
 * makes the N calls, creates /done and waits to be killed, so that the test reads the
 * sentry's counts exactly around the loop. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static void create(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(path); exit(2); }
    close(fd);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1;
    int sync = argc > 2 && strcmp(argv[2], "sync") == 0;
    struct utsname u;
    if (sync) {
        create("/ready");
        while (access("/go", F_OK) != 0) usleep(10000);
    }
    for (long i = 0; i < n; i++)
        if (syscall(SYS_uname, &u) != 0) { perror("uname"); return 1; }
    printf("%s %s\n", u.nodename, u.release);
    fflush(stdout);
    if (sync) {
        create("/done");
        for (;;) pause();
    }
    return 0;
}
