"""open, openat, openat2, creat: a file opened for write, create or truncate is opened by the gofer
and installed into the task (Supervisor.install); everything else is continued.

Read-only open and openat never reach here (the filter lets them run natively); openat2 always
does, since its flags sit in memory: a read-only one is continued, which is safe because the
program's kernel view of the gofer's mounts is read-only, whatever the memory says by then.
"""

from __future__ import annotations

import errno
import os
import struct

from common.messages.gofer import OpenArgs
from services.sentry.supervisor import Call, Handler, Supervisor
from services.sentry.vfs import AT_FDCWD

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
#: struct open_how: u64 flags, u64 mode, u64 resolve.
_OPEN_HOW = struct.Struct("=QQQ")


def _open(sv: Supervisor, call: Call, dirfd: int, addr: int, flags: int, mode: int, resolve: int = 0) -> None:
    flags &= 0xFFFFFFFF
    # O_PATH ignores the access mode and O_CREAT/O_TRUNC: such an open never writes, and the
    # kernel refuses to install an O_PATH file through ADDFD anyway.
    if not flags & _WRITE_FLAGS or flags & os.O_PATH:
        sv.cont(call)
        return
    follow = not flags & os.O_NOFOLLOW and flags & (os.O_CREAT | os.O_EXCL) != os.O_CREAT | os.O_EXCL
    path = sv.container_path(call.pid, dirfd, sv.path_arg(call, addr), follow, resolve)
    if not call.w.mounts.served_by_gofer(path):
        sv.cont(call)
        return
    creds, umask = sv.creds(call.pid)
    request = OpenArgs(
        cid=call.w.cid, path=path, flags=flags, mode=mode & 0o7777 & ~umask, creds=creds, resolve=resolve
    )
    cloexec = bool(flags & os.O_CLOEXEC)

    def opened(_result: dict[str, object], fds: list[int]) -> None:
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            sv.fail(call, errno.EIO)  # the gofer broke its contract
            return
        sv.install(call, fds[0], cloexec)

    sv.gofer_call(call, "Gofer.Open", request, opened)


def _sys_open(sv: Supervisor, call: Call) -> None:
    a = call.args
    _open(sv, call, AT_FDCWD, a[0], a[1], a[2])


def _sys_openat(sv: Supervisor, call: Call) -> None:
    a = call.args
    _open(sv, call, a[0], a[1], a[2], a[3])


def _sys_creat(sv: Supervisor, call: Call) -> None:
    a = call.args
    _open(sv, call, AT_FDCWD, a[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, a[1])


def _sys_openat2(sv: Supervisor, call: Call) -> None:
    a = call.args
    if a[3] < _OPEN_HOW.size:
        sv.fail(call, errno.EINVAL)  # as the kernel answers a short struct
        return
    flags, mode, resolve = _OPEN_HOW.unpack(sv.mem.read(call.pid, a[2], _OPEN_HOW.size))
    _open(sv, call, a[0], a[1], flags, mode, resolve)


HANDLERS: dict[str, Handler] = {
    "open": _sys_open,
    "openat": _sys_openat,
    "creat": _sys_creat,
    "openat2": _sys_openat2,
}
