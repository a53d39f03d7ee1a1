/* Every system call a container is denied, made with syscall(2) and arguments that would
 * succeed, or fail differently, if the filter let them through. Prints "name errno" per call
 * (0 when it succeeded; "name skip" when this libc has no number for it). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct call { const char *name; long nr; long a[6]; };

#define S(x) ((long)(x))
#ifdef SYS_quotactl_fd
#define QFD SYS_quotactl_fd
#else
#define QFD -1
#endif
#ifdef SYS_mount_setattr
#define MSA SYS_mount_setattr
#else
#define MSA -1
#endif

static void run(const char *name, long nr, const long *a) {
    long r;
    if (nr < 0) { printf("%s skip\n", name); return; }
    errno = 0;
    r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (r == 0 && (nr == SYS_clone)) _exit(0); /* a clone that got through: the child leaves */
    if (r > 0 && nr == SYS_clone) waitpid(r, NULL, 0);
    printf("%s %d\n", name, r == -1 ? errno : 0);
}

int main(void) {
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_TASK_CLOCK;
    pe.exclude_kernel = 1;
    pe.exclude_hv = 1;
    long pid = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct call calls[] = {
        {"mount", SYS_mount, {S("none"), S("/nonexistent"), S("tmpfs"), 0, 0}},
        {"umount2", SYS_umount2, {S("/nonexistent"), 0}},
        {"fsopen", SYS_fsopen, {S("tmpfs"), 0}},
        {"fsconfig", SYS_fsconfig, {-1, 0, 0, 0, 0}},
        {"fsmount", SYS_fsmount, {-1, 0, 0}},
        {"fspick", SYS_fspick, {-100, S("/"), 0}},
        {"move_mount", SYS_move_mount, {-1, S(""), -1, S(""), 0}},
        {"open_tree", SYS_open_tree, {-100, S("/"), 0}},
        {"mount_setattr", MSA, {-1, S(""), 0, 0, 0}},
        {"pivot_root", SYS_pivot_root, {S("/nonexistent"), S("/nonexistent")}},
        {"ptrace", SYS_ptrace, {2 /* PTRACE_PEEKDATA */, pid, 0, 0}},
        {"process_vm_writev", SYS_process_vm_writev, {pid, 0, 0, 0, 0, 0}},
        {"process_vm_readv", SYS_process_vm_readv, {pid, 0, 0, 0, 0, 0}},
        {"bpf", SYS_bpf, {0x7fffffff, 0, 0}},
        {"kexec_load", SYS_kexec_load, {0, 0, 0, 0}},
        {"kexec_file_load", SYS_kexec_file_load, {-1, -1, 0, 0, 0}},
        {"init_module", SYS_init_module, {0, 0, S("")}},
        {"finit_module", SYS_finit_module, {-1, S(""), 0}},
        {"delete_module", SYS_delete_module, {S("zerovisor_none"), 04000 /* O_NONBLOCK */}},
        {"keyctl", SYS_keyctl, {0 /* GET_KEYRING_ID */, -3 /* session */, 1}},
        {"add_key", SYS_add_key, {S("user"), S("zerovisor"), S("x"), 1, -2 /* process */}},
        {"request_key", SYS_request_key, {S("user"), S("zerovisor-none"), 0, 0}},
        {"perf_event_open", SYS_perf_event_open, {S(&pe), 0, -1, -1, 0}},
        {"userfaultfd", SYS_userfaultfd, {1 /* UFFD_USER_MODE_ONLY */}},
        {"unshare(CLONE_NEWUSER)", SYS_unshare, {CLONE_NEWUSER}},
        {"unshare(CLONE_NEWNS)", SYS_unshare, {CLONE_NEWNS}},
        {"unshare(CLONE_NEWNET)", SYS_unshare, {CLONE_NEWNET}},
        {"unshare(0)", SYS_unshare, {0}},
        {"setns", SYS_setns, {0, 0}},
        {"reboot", SYS_reboot, {0, 0, 0, 0}},
        {"swapon", SYS_swapon, {S("/nonexistent"), 0}},
        {"swapoff", SYS_swapoff, {S("/nonexistent")}},
        {"acct", SYS_acct, {0}},
        {"open_by_handle_at", SYS_open_by_handle_at, {-1, 0, 0}},
        {"name_to_handle_at", SYS_name_to_handle_at, {-100, S("/"), 0, 0, 0}},
        {"lookup_dcookie", SYS_lookup_dcookie, {0, 0, 0}},
        {"quotactl", SYS_quotactl, {0, 0, 0, 0}},
        {"quotactl_fd", QFD, {-1, 0, 0, 0}},
        {"syslog", SYS_syslog, {10 /* SIZE_BUFFER */, 0, 0}},
        {"iopl", SYS_iopl, {0}},
        {"ioperm", SYS_ioperm, {0, 0, 0}},
        {"vhangup", SYS_vhangup, {0}},
        {"fanotify_init", SYS_fanotify_init, {0, 0}},
        {"settimeofday", SYS_settimeofday, {0, 0}},
        {"clock_settime", SYS_clock_settime, {0, 0}},
        {"clock_adjtime", SYS_clock_adjtime, {0, 0}},
        {"adjtimex", SYS_adjtimex, {0}},
        {"create_module", SYS_create_module, {0, 0}},
        {"get_kernel_syms", SYS_get_kernel_syms, {0}},
        {"query_module", SYS_query_module, {0, 0, 0, 0, 0}},
        {"nfsservctl", SYS_nfsservctl, {0, 0, 0}},
        {"uselib", SYS_uselib, {S("/nonexistent")}},
        {"kcmp", SYS_kcmp, {pid, pid, 0 /* KCMP_FILE */, 0, 0}},
        {"pidfd_getfd", SYS_pidfd_getfd, {-1, 0, 0}},
        {"io_uring_setup", SYS_io_uring_setup, {1, 0}},
        {"io_uring_enter", SYS_io_uring_enter, {-1, 0, 0, 0, 0, 0}},
        {"io_uring_register", SYS_io_uring_register, {-1, 0, 0, 0}},
        /* Namespaces by clone: EPERM; clone3 (flags in memory): ENOSYS, so libc falls back. */
        {"clone(CLONE_NEWUSER)", SYS_clone, {CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0}},
        {"clone(CLONE_NEWNET)", SYS_clone, {CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0}},
        {"clone3", SYS_clone3, {0, 0}},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) run(calls[i].name, calls[i].nr, calls[i].a);
    return 0;
}
