"""Thin ctypes wrappers for the Linux calls Python 3.11's os module lacks.

This module owns the raw system-call numbers (x86_64) and the constants the container init
needs: mount, umount2, pivot_root, sethostname, capget/capset and close_range. prctl is in
common.processctl, and the libc handle and its errno check in common.libc. Each wrapper raises
OSError with the call's errno, as the os module does, and takes no ownership of any fd it is
given. Namespaces and clone live in clone.py, seccomp in filters.py.
"""

from __future__ import annotations

import ctypes
import os

from common.libc import check, libc

# x86_64 system-call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_CLONE = 56
SYS_PIVOT_ROOT = 155
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_SECCOMP = 317
SYS_CLOSE_RANGE = 436

# mount(2) flags (include/uapi/linux/mount.h).
#: ioctls of a pty master (asm-generic/ioctls.h): unlock the replica, read its number.
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000
#: The atime mode bits: a remount in a user namespace must keep the locked ones.
MS_ATIME_MASK = MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME
#: Flags the kernel locks on a mount made in a less privileged user namespace.
MS_LOCKABLE = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME

MNT_DETACH = 0x2


#: _LINUX_CAPABILITY_VERSION_3: two 32-bit data words per set.
CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def _path(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2); data is the filesystem's comma-separated option string."""
    check(libc.mount(_path(source), os.fsencode(target), _path(fstype), ctypes.c_ulong(flags), _path(data)))


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    check(libc.umount2(os.fsencode(target), flags))


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2), which glibc does not wrap."""
    check(libc.syscall(SYS_PIVOT_ROOT, os.fsencode(new_root), os.fsencode(put_old)))


def sethostname(name: str) -> None:
    """sethostname(2) in the caller's UTS namespace."""
    raw = name.encode()
    check(libc.sethostname(raw, ctypes.c_size_t(len(raw))))


def setns(fd: int, nstype: int) -> None:
    """setns(2): join the namespaces of fd (a namespace file, or a pidfd with several CLONE_NEW*
    bits, joined at once in the kernel's order: the user namespace first)."""
    check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)))


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    """close_range(2) without flags: close every fd from first to last, both included."""
    check(libc.syscall(SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(0)))


def capget(pid: int = 0) -> tuple[int, int, int]:
    """The (effective, permitted, inheritable) capability masks of pid (0: the caller)."""
    header = _CapHeader(CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    check(libc.syscall(SYS_CAPGET, ctypes.byref(header), ctypes.byref(data)))
    effective = data[0].effective | data[1].effective << 32
    permitted = data[0].permitted | data[1].permitted << 32
    inheritable = data[0].inheritable | data[1].inheritable << 32
    return effective, permitted, inheritable


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the caller's effective, permitted and inheritable capability masks."""
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    check(libc.syscall(SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)))


#: Capability names -> numbers (include/uapi/linux/capability.h), CAP_CHOWN..CAP_CHECKPOINT_RESTORE.
CAPABILITIES: dict[str, int] = {
    name: number
    for number, name in enumerate(
        (
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_LINUX_IMMUTABLE",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN",
            "CAP_NET_RAW",
            "CAP_IPC_LOCK",
            "CAP_IPC_OWNER",
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE",
            "CAP_SYS_PACCT",
            "CAP_SYS_ADMIN",
            "CAP_SYS_BOOT",
            "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE",
            "CAP_SYS_TIME",
            "CAP_SYS_TTY_CONFIG",
            "CAP_MKNOD",
            "CAP_LEASE",
            "CAP_AUDIT_WRITE",
            "CAP_AUDIT_CONTROL",
            "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE",
            "CAP_MAC_ADMIN",
            "CAP_SYSLOG",
            "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND",
            "CAP_AUDIT_READ",
            "CAP_PERFMON",
            "CAP_BPF",
            "CAP_CHECKPOINT_RESTORE",
        )
    )
}
#: Highest capability number this table knows.
CAP_LAST = max(CAPABILITIES.values())
