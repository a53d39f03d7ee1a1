/* fd-relative escapes. argv[1] is the absolute host path of a directory outside the rootfs
 * (the sentinel); inside the container "../../.."+that path resolves to the rootfs's own copy.
 * "writes" (argv[2]): every trapped *at call from directory fds (/, a deep directory, an O_PATH
 *   fd) with "../"-chains to the sentinel; prints "label errno" (0: done, in the rootfs).
 * "inject": opens of directories that the filter traps (open("/", O_PATH|O_WRONLY) and the
 *   like); when one returns an fd, reads through it with "..", /proc/self/fd/N/.. and fchdir,
 *   and writes through it; prints "read label <content>" for what it could read. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char up[256], rel[2048];

static const char *at(const char *name) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", rel, name);
    return path;
}

static void report(const char *label, long r) { printf("%s %d\n", label, r < 0 ? errno : 0); }

static void read_through(const char *label, int dfd, const char *path) {
    char buf[256] = {0};
    int fd = openat(dfd, path, O_RDONLY);
    if (fd < 0) { printf("read %s errno=%d\n", label, errno); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    printf("read %s %s\n", label, buf);
}

static void append(const char *label, int dfd, const char *path, int flags) {
    int fd = openat(dfd, path, flags, 0644);
    long r = fd;
    if (fd >= 0) r = write(fd, "pwned\n", 6), close(fd);
    report(label, r);
}

static void writes(const char *l, int dfd) {
    char label[128];
    struct { unsigned long long flags, mode, resolve; } how = {O_WRONLY | O_APPEND, 0, 0};
#define L(what) (snprintf(label, sizeof label, "%s:%s", l, what), label)
    append(L("openat-append"), dfd, at("f"), O_WRONLY | O_APPEND);
    append(L("openat-creat"), dfd, at("created"), O_WRONLY | O_CREAT);
    append(L("openat-trunc"), dfd, at("g"), O_WRONLY | O_TRUNC);
    long fd = syscall(SYS_openat2, dfd, at("f"), &how, sizeof how);
    if (fd >= 0) write((int)fd, "pwned\n", 6), close((int)fd);
    report(L("openat2"), fd);
    report(L("mkdirat"), mkdirat(dfd, at("newdir"), 0755));
    report(L("mknodat"), mknodat(dfd, at("fifo"), S_IFIFO | 0644, 0));
    report(L("fchmodat"), fchmodat(dfd, at("f"), 0777, 0));
    report(L("fchownat"), fchownat(dfd, at("f"), 65534, 65534, 0));
    report(L("utimensat"), utimensat(dfd, at("f"), NULL, 0));
    report(L("symlinkat"), symlinkat("x", dfd, at("sl")));
    if (linkat(dfd, at("f"), AT_FDCWD, "/work/hardlink", 0) == 0) {
        append(L("linkat+append"), AT_FDCWD, "/work/hardlink", O_WRONLY | O_APPEND);
        unlink("/work/hardlink");
    } else {
        report(L("linkat"), -1);
    }
    report(L("renameat-out"), renameat(dfd, at("g"), AT_FDCWD, "/work/stolen"));
    report(L("renameat-back"), renameat(AT_FDCWD, "/work/stolen", dfd, at("g")));
    report(L("renameat-in"), renameat(AT_FDCWD, "/work/planted", dfd, at("planted")));
    report(L("unlinkat"), unlinkat(dfd, at("g"), 0));
    report(L("unlinkat-dir"), unlinkat(dfd, at("dir"), AT_REMOVEDIR));
#undef L
}

static void injected(const char *dir, int flags, const char *fl) {
    char label[128], path[8192];
    int fd = open(dir, flags, 0755);
    snprintf(label, sizeof label, "inject:%s:%s", dir, fl);
    report(label, fd);
    if (fd < 0) return;
    read_through(label, fd, at("secret"));
    snprintf(path, sizeof path, "/proc/self/fd/%d/%s", fd, at("secret"));
    read_through(label, AT_FDCWD, path);
    append(label, fd, at("f"), O_WRONLY | O_APPEND);
    if (fchdir(fd) == 0) {
        read_through(label, AT_FDCWD, at("secret"));
        append(label, AT_FDCWD, at("f"), O_WRONLY | O_APPEND);
        report(label, mkdir(at("fchdir-dir"), 0755));
        if (chdir("/") != 0) perror("chdir /");
    }
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 3 || argv[1][0] != '/') { fprintf(stderr, "usage: dirfd_escape /HOST/DIR writes|inject\n"); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 24; i++) strcat(up, "../");
    snprintf(rel, sizeof rel, "%s%s", up, argv[1] + 1);
    mkdir("/work", 0755);
    mkdir("/work/a", 0755);
    mkdir("/work/a/b", 0755);
    close(open("/work/planted", O_WRONLY | O_CREAT, 0644));
    int rootfd = open("/", O_RDONLY | O_DIRECTORY);
    int deepfd = open("/work/a/b", O_RDONLY | O_DIRECTORY);
    int pathfd = open("/work/a", O_PATH | O_DIRECTORY);
    if (rootfd < 0 || deepfd < 0 || pathfd < 0) { perror("open dirs"); return 1; }
    read_through("rootfd", rootfd, at("secret")); /* the kernel's own answer: the rootfs copy */
    if (strcmp(argv[2], "writes") == 0) {
        writes("rootfd", rootfd);
        writes("deepfd", deepfd);
        writes("pathfd", pathfd);
        return 0;
    }
    const char *dirs[] = {"/", "/work"};
    for (int d = 0; d < 2; d++) {
#define I(flags) injected(dirs[d], flags, #flags)
        I(O_PATH | O_WRONLY);
        I(O_PATH | O_RDWR);
        I(O_PATH | O_CREAT);
        I(O_PATH | O_TRUNC);
        I(O_PATH | O_WRONLY | O_DIRECTORY);
        I(O_RDONLY | O_DIRECTORY | O_TRUNC);
        I(O_WRONLY | O_DIRECTORY);
        I(O_RDWR | O_DIRECTORY);
        I(O_CREAT | O_DIRECTORY);
        I(O_RDONLY | O_CREAT);
#undef I
    }
    return 0;
}
