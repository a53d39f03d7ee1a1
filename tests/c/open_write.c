/* A trapped open for write: open(argv[1], O_WRONLY|O_CREAT|O_TRUNC) must give an fd that
 * works (write, fstat), then O_RDWR|O_APPEND on the same file reads back what was written. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MSG "hello from a trapped open\n"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/f";
    struct stat st;
    char buf[128] = {0};
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    if (fd < 0) { perror("open O_WRONLY|O_CREAT"); return 1; }
    if (write(fd, MSG, strlen(MSG)) != (ssize_t)strlen(MSG)) { perror("write"); return 1; }
    if (fstat(fd, &st) != 0) { perror("fstat"); return 1; }
    printf("fd=%d size=%lld mode=%o\n", fd, (long long)st.st_size, st.st_mode & 07777);
    close(fd);
    fd = open(path, O_RDWR | O_APPEND);
    if (fd < 0) { perror("open O_RDWR|O_APPEND"); return 1; }
    if (write(fd, "more\n", 5) != 5) { perror("append"); return 1; }
    if (pread(fd, buf, sizeof buf - 1, 0) < 0) { perror("pread"); return 1; }
    printf("read=%s", buf);
    return close(fd) != 0;
}
