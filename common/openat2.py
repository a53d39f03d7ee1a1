"""openat2(2) for Python 3.11, through ctypes (x86_64): the one way to resolve a path confined to
a root directory, shared by the gofer (which acts there) and the sentry (which names paths as a
task's kernel would resolve them).
"""

from __future__ import annotations

import ctypes
import os

from common.libc import errno_error, libc

SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

_syscall = libc.syscall


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))


def openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """One openat2 attempt (no retry on EAGAIN). Raises OSError with the kernel's errno; the
    caller owns the fd."""
    how = _OpenHow(flags, mode, resolve)
    ret = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path), ctypes.byref(how), _HOW_SIZE)
    if ret < 0:
        raise errno_error(path)
    return int(ret)
