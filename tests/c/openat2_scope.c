/* openat2 for write with RESOLVE_* flags, each case printed as "name result" (result "ok" or
 * strerror): the sentry must enforce the flags exactly as the program's kernel would.
 * Expects a writable /work and a bind mount at argv[1]. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void try(const char *name, int dirfd, const char *path, unsigned long long resolve) {
    struct open_how how = {.flags = O_WRONLY | O_CREAT | O_CLOEXEC, .mode = 0644, .resolve = resolve};
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    printf("%s %s\n", name, fd >= 0 ? "ok" : strerror(errno));
    if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
    const char *mnt = argc > 1 ? argv[1] : "/mnt";
    char path[256];
    if (mkdir("/work/dir", 0755) || symlink("dir", "/work/link") || symlink("/", "/work/dir/up")) {
        perror("setup");
        return 1;
    }
    int work = open("/work", O_PATH | O_DIRECTORY), dir = open("/work/dir", O_PATH | O_DIRECTORY);
    int mfd = open(mnt, O_PATH | O_DIRECTORY);
    if (work < 0 || dir < 0 || mfd < 0) { perror("open dirs"); return 1; }
    try("no_symlinks_through_link", AT_FDCWD, "/work/link/a", RESOLVE_NO_SYMLINKS);
    try("no_symlinks_plain", AT_FDCWD, "/work/dir/b", RESOLVE_NO_SYMLINKS);
    try("beneath_dotdot", dir, "../c", RESOLVE_BENEATH);
    try("beneath_absolute", dir, "/d", RESOLVE_BENEATH);
    try("beneath_inside", work, "dir/e", RESOLVE_BENEATH);
    try("beneath_abs_symlink", dir, "up/f", RESOLVE_BENEATH);
    try("in_root_absolute", dir, "/g", RESOLVE_IN_ROOT);
    try("in_root_abs_symlink", dir, "up/h", RESOLVE_IN_ROOT);
    try("in_root_dotdot", dir, "../../i", RESOLVE_IN_ROOT);
    snprintf(path, sizeof path, "%s/j", mnt);
    try("no_xdev_into_mount", AT_FDCWD, path, RESOLVE_NO_XDEV);
    try("no_xdev_inside_mount", mfd, "k", RESOLVE_NO_XDEV);
    try("no_magiclinks", AT_FDCWD, "/proc/self/cwd/l", RESOLVE_NO_MAGICLINKS);
    try("cwd_relative_beneath", AT_FDCWD, "work/m", RESOLVE_BENEATH);
    try("bad_fd", 77, "n", RESOLVE_BENEATH);
    return 0;
}
