/* Symlinks swapped during the call. /race/d flips between a directory and a symlink to
 * argv[1] (a path that leaves the rootfs if resolved on the host) in one thread, while the
 * main thread creates, writes, chmods, chowns, renames, links, truncates and removes through
 * /race/d argv[2] times. Prints "flips=N ops=M". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static atomic_int stop;
static long flips;

static int exchange(void) {
    if (syscall(SYS_renameat2, AT_FDCWD, "/race/d", AT_FDCWD, "/race/s", RENAME_EXCHANGE) == 0) return 1;
    if (errno != EINVAL && errno != ENOSYS) return 0;
    /* No RENAME_EXCHANGE: park the directory, move the symlink in, and back. */
    if (rename("/race/d", "/race/parked") != 0) return 0;
    int ok = rename("/race/s", "/race/d") == 0;
    ok = ok && rename("/race/d", "/race/s") == 0;
    return rename("/race/parked", "/race/d") == 0 && ok;
}

static void *flipper(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) flips += exchange();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: swap_race TARGET N\n"); return 2; }
    long n = atol(argv[2]), ops = 0;
    pthread_t t;
    mkdir("/race", 0755);
    if (mkdir("/race/d", 0755) != 0 && errno != EEXIST) { perror("mkdir /race/d"); return 1; }
    unlink("/race/s");
    if (symlink(argv[1], "/race/s") != 0) { perror("symlink"); return 1; }
    pthread_create(&t, NULL, flipper, NULL);
    for (long i = 0; i < n; i++) {
        int fd, r = -1;
        switch (i % 12) {
        case 0:
            fd = open("/race/d/f", O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) r = (int)write(fd, "race\n", 5), close(fd);
            break;
        case 1: r = mkdir("/race/d/m", 0755); break;
        case 2: r = chmod("/race/d/f", 0777); break;
        case 3: r = chown("/race/d/f", 65534, 65534); break;
        case 4: r = rename("/race/d/f", "/race/d/g"); break;
        case 5: r = rename("/race/d/g", "/race/d/f"); break;
        case 6: r = link("/race/d/f", "/race/d/h"); break;
        case 7: r = unlink("/race/d/h"); break;
        case 8: r = truncate("/race/d/f", 1); break;
        case 9: r = rmdir("/race/d/m"); break;
        case 10: r = symlink("/etc/passwd", "/race/d/l"); break;
        case 11:
            r = unlink("/race/d/l");
            fd = open("/race/d/f", O_WRONLY | O_TRUNC);
            if (fd >= 0) close(fd);
            break;
        }
        ops += r >= 0;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("flips=%ld ops=%ld\n", flips, ops);
    return 0;
}
