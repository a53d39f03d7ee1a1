"""prctl(2) through ctypes, for the processes the services fork: the platform's container inits
and exec'd processes (capabilities, no_new_privs, death signal) and the controller's command
server workers (death signal). Each call raises OSError with the call's errno.
"""

from __future__ import annotations

import ctypes

from common.libc import check, libc

#: prctl(2) options (include/uapi/linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments; returns the call's result."""
    args = (ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    return check(libc.prctl(ctypes.c_int(option), *args))
