"""The C library through ctypes, for the calls Python 3.11's os module lacks: one handle with
errno capture, and one way to turn a failed call into the OSError the os module would raise.
Shared by the platform's wrappers (services/platform/linux.py), prctl (processctl.py) and
openat2 (openat2.py).
"""

from __future__ import annotations

import ctypes
import os

#: libc with errno capture; CDLL releases the GIL around each call, which these calls allow.
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def errno_error(filename: str | None = None) -> OSError:
    """The OSError for the errno the last failed call left (with filename, if it names one)."""
    err = ctypes.get_errno()
    if filename is None:
        return OSError(err, os.strerror(err))
    return OSError(err, os.strerror(err), filename)


def check(result: int) -> int:
    """result, unless it is a failed call's -1: then the OSError of its errno."""
    if result == -1:
        raise errno_error()
    return result
