"""The raw system calls the gofer needs and Python 3.11 lacks, through ctypes (x86_64 numbers).

Each wrapper raises OSError with the kernel's errno, as the os module does. Paths are str and
are encoded with os.fsencode. Nothing here checks policy: see resolve.py and ops.py.
"""

from __future__ import annotations

import ctypes
import os

from common.messages.gofer import TIME_OMIT

# Re-exported (see __all__): the gofer's modules take every raw call from here.
from common.openat2 import (
    RESOLVE_BENEATH,
    RESOLVE_CACHED,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    openat2,
)

__all__ = [
    "AT_EACCESS",
    "AT_EMPTY_PATH",
    "AT_FDCWD",
    "AT_SYMLINK_NOFOLLOW",
    "MAX_ID",
    "MOUNT_ATTR_NODEV",
    "MOUNT_ATTR_NOSUID",
    "MOUNT_ATTR_RDONLY",
    "NGROUPS_MAX",
    "OPEN_TREE_CLOEXEC",
    "OPEN_TREE_CLONE",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "RESOLVE_BENEATH",
    "RESOLVE_CACHED",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "faccess_empty",
    "fchown_empty",
    "fsgid",
    "fsuid",
    "mount_setattr",
    "open_tree_clone",
    "openat2",
    "renameat2",
    "setfsgid",
    "setfsuid",
    "setgroups_thread",
    "utimens_empty",
]

_UTIME_OMIT = (1 << 30) - 2

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_SYS_SETGROUPS = 116
_SYS_SETFSUID = 122
_SYS_SETFSGID = 123
_SYS_UTIMENSAT = 280
_SYS_FCHOWNAT = 260
_SYS_RENAMEAT2 = 316
_SYS_OPEN_TREE = 428
_SYS_FACCESSAT2 = 439
_SYS_MOUNT_SETATTR = 442

# openat2(2) resolve flags.

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EACCESS = 0x200
AT_EMPTY_PATH = 0x1000

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

#: Largest valid uid or gid ((uid_t)-1 means "no change" to the kernel).
MAX_ID = 0xFFFFFFFE
#: Most supplementary groups the kernel accepts.
NGROUPS_MAX = 65536
#: fsuid/fsgid value the kernel refuses, which makes setfsuid report the current one.
_QUERY = ctypes.c_uint(0xFFFFFFFF)

_int = ctypes.c_int
_uint = ctypes.c_uint


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


_ATTR_SIZE = ctypes.c_size_t(ctypes.sizeof(_MountAttr))


def _check(ret: int, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path) if path is not None else OSError(err, os.strerror(err))
    return ret


def open_tree_clone(path: str) -> int:
    """A detached clone of the mount at path (not its submounts), as an O_PATH fd the caller owns."""
    return _check(
        _syscall(_SYS_OPEN_TREE, _int(AT_FDCWD), os.fsencode(path), _uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)), path
    )


def mount_setattr(fd: int, attr_set: int) -> None:
    """Set MOUNT_ATTR_* on the mount fd refers to (AT_EMPTY_PATH), not recursively."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    _check(_syscall(_SYS_MOUNT_SETATTR, _int(fd), b"", _uint(AT_EMPTY_PATH), ctypes.byref(attr), _ATTR_SIZE))


def renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int) -> None:
    """renameat2(2)."""
    _check(
        _syscall(_SYS_RENAMEAT2, _int(olddirfd), os.fsencode(old), _int(newdirfd), os.fsencode(new), _uint(flags)), old
    )


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", uid, gid, AT_EMPTY_PATH): chown the inode fd refers to (O_PATH fds too)."""
    _check(_syscall(_SYS_FCHOWNAT, _int(fd), b"", _int(uid), _int(gid), _int(AT_EMPTY_PATH)))


def utimens_empty(fd: int, times_ns: tuple[int, int] | None) -> None:
    """utimensat(fd, "", times, AT_EMPTY_PATH); None sets both times to now."""
    times = None
    if times_ns is not None:
        times = (_Timespec * 2)(*(_timespec(t) for t in times_ns))
    _check(_syscall(_SYS_UTIMENSAT, _int(fd), b"", times, _int(AT_EMPTY_PATH)))


def _timespec(ns: int) -> _Timespec:
    if ns == TIME_OMIT:
        return _Timespec(0, _UTIME_OMIT)
    sec, nsec = divmod(ns, 1_000_000_000)
    return _Timespec(sec, nsec)


def faccess_empty(fd: int, mode: int) -> None:
    """faccessat2(fd, "", mode, AT_EACCESS | AT_EMPTY_PATH): check mode with the fs credentials."""
    _check(_syscall(_SYS_FACCESSAT2, _int(fd), b"", _int(mode), _int(AT_EACCESS | AT_EMPTY_PATH)))


def setfsuid(uid: int) -> int:
    """setfsuid(2) for the calling thread; returns the previous fsuid (it cannot report failure)."""
    return int(_syscall(_SYS_SETFSUID, _uint(uid)))


def setfsgid(gid: int) -> int:
    """setfsgid(2) for the calling thread; returns the previous fsgid (it cannot report failure)."""
    return int(_syscall(_SYS_SETFSGID, _uint(gid)))


def fsuid() -> int:
    """The calling thread's fsuid (setfsuid of an invalid id changes nothing and reports it)."""
    return int(_syscall(_SYS_SETFSUID, _QUERY))


def fsgid() -> int:
    """The calling thread's fsgid."""
    return int(_syscall(_SYS_SETFSGID, _QUERY))


def setgroups_thread(groups: list[int]) -> None:
    """The raw setgroups(2) syscall: the calling thread only (glibc's setgroups changes every thread)."""
    arr = (ctypes.c_uint * len(groups))(*groups)
    _check(_syscall(_SYS_SETGROUPS, ctypes.c_size_t(len(groups)), arr))
