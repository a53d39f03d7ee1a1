"""The container's seccomp filter: what a sandboxed program may never do.

This module owns the filter policy (FilterPolicy), its compilation to classic BPF with
pyseccomp (build_filter) and the raw seccomp(2) load (load_filter). The filter is built for
the native architecture only; any other architecture (a 32-bit `int 0x80`, x32) kills the
process, because rules only cover the architectures present when they are added.

Three sets: the denied calls fail with EPERM in the kernel; the trapped calls
(TRAPPED_SYSCALLS, SCMP_ACT_NOTIFY) wake the supervisor that holds the filter's listener fd
(the sentry), which answers them; everything else runs natively. open and openat are trapped
only when their flags ask for write, create or truncate: a read-only open stays native.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import tempfile
from dataclasses import dataclass, field

import pyseccomp

from common.libc import libc
from services.platform.clone import CLONE_NAMESPACES
from services.platform.linux import SYS_SECCOMP

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4

#: struct sock_filter is 8 bytes: u16 code, u8 jt, u8 jf, u32 k.
BPF_INSTRUCTION_SIZE = 8

#: What a container never needs (after Docker's default profile and gVisor's host filters).
DENIED_SYSCALLS: tuple[str, ...] = (
    "mount",
    "umount",
    "umount2",
    # The new mount API: mount by other means.
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "ptrace",
    "process_vm_writev",
    "process_vm_readv",
    "bpf",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "userfaultfd",
    "unshare",
    "setns",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
    "fanotify_init",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "uselib",
    # ptrace's access check in other clothes.
    "kcmp",
    "pidfd_getfd",
    # io_uring opens, renames and unlinks without a system call the filter could see.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)

#: Calls whose flags (argument index) decide: trapped only when they ask for write, create or
#: truncate. O_TMPFILE includes O_WRONLY or O_RDWR, so it is trapped too.
FLAG_TRAPPED_SYSCALLS: dict[str, int] = {"open": 1, "openat": 2}

#: Open flag bits that make an open or openat trapped (one rule per bit: rules are ORed).
WRITE_OPEN_FLAGS: tuple[int, ...] = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC)

#: Every call that is (or, for open and openat, may be) answered by the supervisor, by name;
#: the sentry builds its handler table from it. Names this arch lacks are skipped.
TRAPPED_SYSCALLS: tuple[str, ...] = (
    *FLAG_TRAPPED_SYSCALLS,
    # Its flags sit in memory the filter cannot read: always trapped.
    "openat2",
    "creat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "truncate",
    "utime",
    "utimes",
    "futimesat",
    # Also with a NULL path (it then acts on the fd): the sentry decides.
    "utimensat",
    "setxattr",
    "lsetxattr",
    "removexattr",
    "lremovexattr",
    "uname",
    "sethostname",
    "sysinfo",
    "execve",
    "execveat",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterPolicy:
    """What the filter does with which system call; everything else is allowed."""

    #: Names that fail with EPERM. Names libseccomp does not know on this arch are skipped.
    denied: tuple[str, ...] = DENIED_SYSCALLS
    #: Names returned to the supervisor (SCMP_ACT_NOTIFY); those in FLAG_TRAPPED_SYSCALLS only
    #: when they open for write, create or truncate. Unknown names are skipped.
    trapped: tuple[str, ...] = TRAPPED_SYSCALLS
    #: False leaves the trapped set out (everything in it runs natively): for a program that
    #: has no supervisor. With True the filter must be loaded with a listener that someone serves.
    trap: bool = True
    #: clone(2) flag bits that make clone fail with EPERM when any of them is set.
    clone_denied_flags: int = CLONE_NAMESPACES
    #: clone3 fails with this errno: its flags sit in memory the filter cannot read, and
    #: ENOSYS makes libc fall back to clone, where clone_denied_flags apply.
    clone3_errno: int = errno.ENOSYS
    #: Action for a system call of another architecture (pyseccomp.KILL_PROCESS).
    bad_arch_action: int = field(default=pyseccomp.KILL_PROCESS)


#: The policy of a container served by the sentry.
DEFAULT_POLICY = FilterPolicy()
#: The same without the trapped set, for a container nobody supervises.
UNTRAPPED_POLICY = FilterPolicy(trap=False)


def _native(name: str) -> int:
    """The native syscall number of name, or -1 when this arch has no such call."""
    number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
    # libseccomp gives unknown names -1 and calls this arch lacks negative pseudo numbers.
    return number if number >= 0 else -1


@functools.lru_cache(maxsize=8)
def build_filter(policy: FilterPolicy = DEFAULT_POLICY) -> bytes:
    """Compile policy to classic BPF (a sock_filter array) for load_filter; cached per policy."""
    with tempfile.TemporaryFile() as out:
        _compile(policy).export_bpf(out)
        out.seek(0)
        return out.read()


def export_pfc(policy: FilterPolicy = DEFAULT_POLICY) -> str:
    """The filter of policy as libseccomp's readable pseudo-filter code (for tests and debugging)."""
    with tempfile.TemporaryFile() as out:
        _compile(policy).export_pfc(out)
        out.seek(0)
        return out.read().decode()


def _compile(policy: FilterPolicy) -> pyseccomp.SyscallFilter:
    filt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    # seccomp_init includes only the native arch; adding none keeps it so (see KERNEL-FACTS).
    filt.set_attr(pyseccomp.Attr.ACT_BADARCH, policy.bad_arch_action)
    eperm = pyseccomp.ERRNO(errno.EPERM)
    for name in policy.denied:
        if _native(name) >= 0:
            filt.add_rule(eperm, name)
    # One rule per bit: rules on the same call are ORed, so any namespace bit denies.
    bit = 1
    while bit <= policy.clone_denied_flags:
        if policy.clone_denied_flags & bit:
            filt.add_rule(eperm, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, bit, bit))
        bit <<= 1
    if _native("clone3") >= 0:
        filt.add_rule(pyseccomp.ERRNO(policy.clone3_errno), "clone3")
    if policy.trap:
        _add_trapped(filt, policy.trapped)
    return filt


def _add_trapped(filt: pyseccomp.SyscallFilter, names: tuple[str, ...]) -> None:
    for name in names:
        if _native(name) < 0:
            continue
        flags_arg = FLAG_TRAPPED_SYSCALLS.get(name)
        if flags_arg is None:
            filt.add_rule(pyseccomp.NOTIFY, name)
            continue
        for bit in WRITE_OPEN_FLAGS:
            filt.add_rule(pyseccomp.NOTIFY, name, pyseccomp.Arg(flags_arg, pyseccomp.MASKED_EQ, bit, bit))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load_filter(bpf: bytes, flags: int = 0) -> int:
    """Install bpf on the calling thread with seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog).

    Returns the syscall's result: 0, or the new listener fd (the caller must close it) when
    flags has SECCOMP_FILTER_FLAG_NEW_LISTENER. Without no_new_privs the caller needs
    CAP_SYS_ADMIN in its user namespace (else EACCES). Raises OSError on failure.
    """
    if not bpf or len(bpf) % BPF_INSTRUCTION_SIZE:
        raise ValueError(f"a BPF program is a non-empty multiple of 8 bytes, got {len(bpf)}")
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // BPF_INSTRUCTION_SIZE, ctypes.cast(program, ctypes.c_void_p))
    result = int(libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, ctypes.c_uint(flags), ctypes.byref(fprog)))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
    return result
