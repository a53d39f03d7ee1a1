"""clone(2) for Python: fork into new namespaces in one step.

This module owns the CLONE_NEW* constants, the OCI namespace-name table and clone_process,
which is os.fork with extra clone flags. Python 3.11 has no os.unshare, and unsharing after
a fork could not put the child into a new pid namespace as its init anyway.
"""

from __future__ import annotations

import ctypes
import os
import signal

from services.platform.linux import SYS_CLONE

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: Every namespace bit clone(2) accepts (CLONE_NEWTIME only works with clone3 and unshare).
CLONE_NAMESPACES = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)

#: OCI `linux.namespaces[].type` -> clone flag.
NAMESPACE_FLAGS: dict[str, int] = {
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
}

# PyDLL keeps the GIL across the call, as os.fork does around fork(): the child must start
# with the interpreter in the state PyOS_AfterFork_Child expects.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


def namespace_flags(names: list[str]) -> int:
    """The clone flags for OCI namespace names; ValueError names an unknown one."""
    flags = 0
    for name in names:
        try:
            flags |= NAMESPACE_FLAGS[name]
        except KeyError:
            raise ValueError(f"unknown namespace type {name!r}") from None
    return flags


def clone_process(flags: int) -> int:
    """Fork with extra CLONE_* flags; return 0 in the child and the child's host pid in the parent.

    With a NULL stack, x86_64 clone behaves like fork (copy-on-write), so the child continues
    from here like os.fork's child. SIGCHLD is added, so the parent reaps the child with
    os.waitpid as usual. The interpreter's fork hooks run as for os.fork
    (os.register_at_fork, lock re-initialisation).

    Only for single-threaded callers: as with os.fork, the other threads do not exist in the
    child and any lock they held stays locked there forever.

    Raises OSError with the errno of clone(2) (e.g. EINVAL for bad flags, EPERM).
    """
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _pylibc.syscall(
        ctypes.c_long(SYS_CLONE),
        ctypes.c_ulong(flags | signal.SIGCHLD),
        ctypes.c_void_p(0),
        ctypes.c_void_p(0),
        ctypes.c_void_p(0),
        ctypes.c_ulong(0),
    )
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid == -1:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return int(pid)
