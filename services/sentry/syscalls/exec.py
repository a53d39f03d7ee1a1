"""execve, execveat: the program must resolve inside the container; then the kernel runs it.

The gofer checks that the path names an executable file within the container's mounts (an
escape through symlinks or ".." cannot pass RESOLVE_IN_ROOT); the call is then continued, which
the kernel enforces the same way in the program's own mount namespace. The task's memory
changes with the exec, so its cached /proc/PID/mem is dropped (its status fd stays).
"""

from __future__ import annotations

import os

from common.messages.gofer import PathOpArgs
from services.sentry.supervisor import Call, Handler, Supervisor
from services.sentry.vfs import AT_FDCWD

AT_EMPTY_PATH = 0x1000


def _exec(sv: Supervisor, call: Call, dirfd: int, addr: int, flags: int) -> None:
    if flags & AT_EMPTY_PATH:
        sv.mem.forget_memory(call.pid)
        sv.cont(call)  # fexecve: the fd was opened, and so checked, already
        return
    path = sv.container_path(call.pid, dirfd, sv.path_arg(call, addr), follow=True)
    sv.mem.forget_memory(call.pid)  # whatever comes next reads the new program's memory
    if not call.w.mounts.served_by_gofer(path):
        sv.cont(call)
        return
    creds, _ = sv.creds(call.pid)
    request = PathOpArgs(cid=call.w.cid, path=path, creds=creds, mode=os.X_OK)
    sv.gofer_call(call, "Gofer.Access", request, lambda _result, _fds: sv.cont(call))


HANDLERS: dict[str, Handler] = {
    "execve": lambda sv, c: _exec(sv, c, AT_FDCWD, c.args[0], 0),
    "execveat": lambda sv, c: _exec(sv, c, c.args[0], c.args[1], c.args[4]),
}
