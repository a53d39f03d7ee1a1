/* Connecting to the services from inside: AF_UNIX connect to each socket under $ZV_RUN_DIR
 * (fd channels and ZMQ endpoints) and to the abstract name $ZV_ABSTRACT. Prints "label errno"
 * (0: connected). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void try(const char *label, int type, const char *path, int abstract) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len + 2 > sizeof sa.sun_path) { printf("%s toolong\n", label); return; }
    memcpy(sa.sun_path + abstract, path, len);
    int fd = socket(AF_UNIX, type, 0);
    if (fd < 0) { printf("%s socket-%d\n", label, errno); return; }
    int r = connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + abstract + len));
    printf("%s %d\n", label, r == 0 ? 0 : errno);
    close(fd);
}

int main(void) {
    const char *run = getenv("ZV_RUN_DIR"), *name = getenv("ZV_ABSTRACT");
    const char *names[] = {"controller", "sentry", "gofer", "platform"};
    char path[4096], label[64];
    if (!run || !name) { fprintf(stderr, "ZV_RUN_DIR and ZV_ABSTRACT must be set\n"); return 2; }
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s.fds", run, names[i]);
        snprintf(label, sizeof label, "%s.fds", names[i]);
        try(label, SOCK_SEQPACKET, path, 0);
        snprintf(path, sizeof path, "%s/%s.zmq", run, names[i]);
        snprintf(label, sizeof label, "%s.zmq", names[i]);
        try(label, SOCK_STREAM, path, 0);
    }
    snprintf(path, sizeof path, "%s/events.zmq", run);
    try("events.zmq", SOCK_STREAM, path, 0);
    try("abstract", SOCK_STREAM, name, 1);
    return 0;
}
