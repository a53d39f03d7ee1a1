/* Writes the filter does not trap, on fds opened read-only (natively): fchmod, fchown and
 * fsetxattr on each path in argv must fail with EROFS, the kernel's view being read-only.
 * Prints "call path <strerror>" ("ok" when the call succeeded). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static void show(const char *call, const char *path, int r) {
    printf("%s %s %s\n", call, path, r == 0 ? "ok" : strerror(errno));
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) { printf("open %s %s\n", argv[i], strerror(errno)); continue; }
        show("fchmod", argv[i], fchmod(fd, 0600));
        show("fchown", argv[i], fchown(fd, 1, 1));
        show("fsetxattr", argv[i], fsetxattr(fd, "user.zerovisor", "x", 1, 0));
        close(fd);
    }
    return 0;
}
