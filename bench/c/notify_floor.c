/* notify_floor CPU PROGRAM [ARG...]: run PROGRAM with uname(2) trapped to a minimal seccomp
 * user-notification supervisor written in C; the floor of the mechanism zerovisor's sentry
 * uses, on this machine.
 *
 * The child sets no_new_privs, loads a hand-written BPF filter that returns
 * SECCOMP_RET_USER_NOTIF for uname and ALLOW for everything else (KILL_PROCESS for a foreign
 * architecture), hands the listener fd to the parent over a socketpair (SCM_RIGHTS), and execs
 * PROGRAM (the same uname loop every other variant runs; it times itself). The parent answers
 * each notification with the work the sentry does for uname: write a struct utsname into the
 * task through a kept-open /proc/PID/mem (checking the notification is still valid when it
 * opens it), answer 0. It
 * blocks in NOTIF_RECV (no poll first) and, where the kernel has it (6.6+), asks to be woken on
 * the trapping task's CPU (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP), as the sentry does: nothing
 * cheaper is possible with this mechanism.
 *
 * The filter is no sandbox: it checks the architecture but not the x32 bit, and allows the
 * rest; it only has to trap uname the way zerovisor's filter does.
 *
 * CPU >= 0 pins the supervisor there (the program pins itself through its own argv, which the
 * bench passes); -1 leaves it unpinned. Exits with the program's status.
 */
#define _GNU_SOURCE
#include "selftime.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "notify_floor: unknown architecture"
#endif

static int listener = -1;
static struct utsname answer;

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* The child's side: load the filter, hand over its listener, become PROGRAM. Nothing trapped
 * may run between loading and handing over (the call would wait for a supervisor that has no
 * fd yet), hence uname is the only trapped call and none of this makes it. */
static void child(int sock, char **argv) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("PR_SET_NO_NEW_PRIVS");
    int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0)
        die("seccomp");
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1)
        die("sendmsg");
    close(fd);
    close(sock);
    execv(argv[0], argv);
    die("execv");
}

static int receive_fd(int sock) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    if (recvmsg(sock, &msg, 0) != 1)
        return -1;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
    return fd;
}

/* The supervisor loop, on its own thread so that the main thread can wait for the child:
 * NOTIF_RECV never returns once the tasks are gone, so the process ends it by exiting. */
static void *serve(void *unused) {
    (void)unused;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    int mem = -1;
    pid_t mem_pid = 0;
    char path[64];
    for (;;) {
        memset(&req, 0, sizeof req); /* the kernel refuses a receive buffer that is not zero */
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR || errno == ENOENT)
                continue; /* the task was interrupted or died before we read it */
            die("NOTIF_RECV");
        }
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        /* Opened on the first call, after the exec (a pre-exec fd would see the old mm). As
         * the sentry (services/sentry/taskmem.py): a fresh fd is confirmed to be the asking
         * task's before anything is written through it, so that a process that took over a
         * dead task's pid is never written into; a kept one is still on the task's mm. */
        if (req.pid != (uint32_t)mem_pid) {
            if (mem >= 0)
                close(mem);
            snprintf(path, sizeof path, "/proc/%u/mem", req.pid);
            mem = open(path, O_RDWR | O_CLOEXEC);
            mem_pid = mem >= 0 ? (pid_t)req.pid : 0;
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) != 0)
                continue;
        }
        if (mem < 0 || pwrite(mem, &answer, sizeof answer, (off_t)req.data.args[0]) != (ssize_t)sizeof answer)
            resp.error = -EFAULT;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT)
            die("NOTIF_SEND");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPU PROGRAM [ARG...]\n", argv[0]);
        return 2;
    }
    int cpu = atoi(argv[1]);
    if (pin_to(cpu) != 0)
        return 1;
    if (uname(&answer) != 0)
        die("uname");
    int socks[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, socks) != 0)
        die("socketpair");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(socks[0]);
        child(socks[1], argv + 2);
    }
    close(socks[1]);
    listener = receive_fd(socks[0]);
    close(socks[0]);
    if (listener < 0) {
        fprintf(stderr, "no listener fd from the child\n");
        kill(pid, SIGKILL);
        return 1;
    }
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
    /* An older kernel refuses the flag: the floor is then the plain wake-up, as the sentry's. */
    (void)ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    pthread_t thread;
    if (pthread_create(&thread, NULL, serve, NULL) != 0)
        die("pthread_create");
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    /* exit() ends the serving thread, still blocked in NOTIF_RECV. */
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
