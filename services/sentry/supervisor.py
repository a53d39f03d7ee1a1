"""The Supervisor: every trapped syscall of every container, answered in the sentry's own loop.

It owns the seccomp listeners of the containers' tasks (one per filter: the init's filter is
inherited by all its descendants), polls them beside the sentry's ZMQ socket, reads each
notification, and hands it to the handler of its syscall family (services/sentry/syscalls/).
A handler answers at once (a value, an errno, CONTINUE) or starts a gofer call and answers when
the reply arrives; meanwhile the loop serves every other listener.

This is the hot path: nothing here logs above debug unless strace is on for the container,
and nothing crosses ZMQ.
"""

from __future__ import annotations

import errno
import logging
import os
import select
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.messages.gofer import Creds
from services.sentry.directfs import DirectFs
from services.sentry.gofer_client import AsyncGoferChannel
from services.sentry.seccomp import Listener, as_int
from services.sentry.strace import describe_call
from services.sentry.taskinfo import task_creds, task_cwd, task_fd_path
from services.sentry.taskmem import BadAddress, TaskGone, TaskMemory
from services.sentry.vfs import AT_FDCWD, SCOPING_FLAGS, MountTable, join, resolve_in_task, resolve_scoped

log = logging.getLogger(__name__)
strace_log = logging.getLogger("strace")
#: Longest path a syscall takes, NUL included (PATH_MAX).
_PATH_MAX = 4096

#: A syscall handler: answers call now, or starts a gofer call that answers it later.
Handler = Callable[["Supervisor", "Call"], None]


@dataclass(slots=True, eq=False)
class Watched:
    """A container as its trapped syscalls see it, shared by all its listeners (its init's and
    each exec'd process's: a filter is per process tree)."""

    #: Container id.
    cid: str
    #: Which paths the gofer serves.
    mounts: MountTable
    #: Hostname uname reports (sethostname changes it).
    hostname: str
    #: Kernel release uname reports.
    release: str
    #: Memory limit sysinfo reports, bytes (None: the host's).
    memory_limit: int | None
    #: Log every trapped syscall (runsc --strace).
    strace: bool = False
    #: Trapped syscalls by family (the container's own dict: it outlives the listener).
    counts: dict[str, int] = field(default_factory=dict)
    #: Where a hostname the container sets is kept for a restarted sentry (RunDir.hostname_path).
    hostname_file: Path | None = None


class Call:
    """One trapped syscall in flight: what its answer needs."""

    __slots__ = ("args", "id", "listener", "nr", "pid", "trace", "w")

    def __init__(self, listener: Listener, w: Watched, nid: int, pid: int, nr: int, args: tuple[int, ...]) -> None:
        #: The listener it came from, which answers it.
        self.listener = listener
        #: The container it belongs to.
        self.w = w
        #: Notification id.
        self.id = nid
        #: Host tid of the caller.
        self.pid = pid
        #: Syscall number.
        self.nr = nr
        #: The six argument registers.
        self.args = args
        #: The decoded call for strace, read before the answer lets the task reuse its memory.
        self.trace = ""


class Supervisor:
    """Serves the listeners of every container."""

    def __init__(
        self,
        gofer: AsyncGoferChannel,
        add_reader: Callable[[int, Callable[[int, int], None], bool], None],
        remove_reader: Callable[[int], None],
        direct: DirectFs | None = None,
    ) -> None:
        from services.sentry.syscalls import handler_table

        self.gofer = gofer
        #: The file calls of the containers whose mounts it holds are answered here (directfs);
        #: owned (close() closes it).
        self.direct = direct
        self.mem = TaskMemory()
        self._add_reader = add_reader
        self._remove_reader = remove_reader
        #: Listener fd -> the listener (owned) and its container.
        self.watched: dict[int, tuple[Listener, Watched]] = {}
        #: syscall number -> (family, handler).
        self.handlers: dict[int, tuple[str, Handler]] = handler_table()

    def watch(self, listener: Listener, watched: Watched) -> None:
        """Serve listener, a filter of watched's tasks, from now on (the supervisor owns it)."""
        fd = listener.fileno()
        try:
            # The task waits while we answer: woken on its CPU we skip a cross-CPU wake-up,
            # which costs this machine more than the answer itself (KERNEL-FACTS).
            listener.set_sync_wakeup()
        except OSError as e:
            log.debug("listener of %s: no synchronous wake-up (%s)", watched.cid, e)
        self.watched[fd] = (listener, watched)
        self._add_reader(fd, self._on_ready, True)  # hot: polled directly (common/server.py)

    def unwatch_container(self, cid: str) -> None:
        """Stop serving and close every listener of container cid."""
        for fd, (_, w) in list(self.watched.items()):
            if w.cid == cid:
                self._drop(fd)

    def close(self) -> None:
        """Close every listener, the task memory cache and the directfs mounts."""
        for fd in list(self.watched):
            self._drop(fd)
        self.mem.close()
        if self.direct is not None:
            self.direct.close()

    def _drop(self, fd: int) -> None:
        entry = self.watched.pop(fd, None)
        if entry is not None:
            self._remove_reader(fd)
            entry[0].close()

    def _on_ready(self, fd: int, events: int) -> None:
        watched = self.watched.get(fd)
        if watched is None:
            return
        listener, w = watched
        if not events & select.POLLIN:
            # A bare hangup (NOTIF_RECV would block): every task under this filter is gone; the
            # container's exit comes from the platform.
            self._drop(fd)
            return
        try:
            t = listener.recv_fields()
        except OSError as e:
            log.debug("listener of %s: %s", w.cid, e)
            return
        if t is None:
            return  # the task died or was interrupted before we read it
        call = Call(listener, w, t[0], t[1], t[3], t[6:])
        entry = self.handlers.get(call.nr)
        if entry is None:
            # The filter traps nothing we cannot answer; a stray number gets ENOSYS, not a hang.
            call.trace = f"syscall {call.nr}"
            self.fail(call, errno.ENOSYS)
            return
        family, handler = entry
        w.counts[family] = w.counts.get(family, 0) + 1
        if w.strace:
            call.trace = describe_call(self.mem, call.pid, call.nr, call.args)
        self.run(handler, call)

    def _answer(self, call: Call, answer: Callable[[], None]) -> None:
        """Run a late answer (after a gofer reply); its failure fails the syscall, never the loop."""
        try:
            try:
                answer()
            except OSError as e:
                self.fail(call, e.errno or errno.EIO)
        except OSError as e:  # the listener itself is gone: nobody is left to answer
            log.debug("answering %s: %s", call.w.cid, e)

    def run(self, handler: Handler, call: Call) -> None:
        """Run handler for call, answering the errors every handler shares."""
        try:
            handler(self, call)
        except TaskGone:
            self.mem.forget(call.pid)
        except BadAddress:
            self.fail(call, errno.EFAULT)
        except OSError as e:
            self.fail(call, e.errno or errno.EIO)

    # ---- answers ---------------------------------------------------------------------------

    def reply(self, call: Call, value: int) -> None:
        """Complete the syscall with value."""
        call.listener.respond(call.id, value, 0)
        if call.w.strace:
            self._trace(call, f"= {value}")

    def fail(self, call: Call, err: int) -> None:
        """Fail the syscall with errno err."""
        call.listener.respond(call.id, 0, err)
        if call.w.strace:
            self._trace(call, f"= -1 {errno.errorcode.get(err, err)} ({os.strerror(err)})")

    def cont(self, call: Call) -> None:
        """Let the kernel run the syscall (only where it enforces the same decision)."""
        call.listener.respond_continue(call.id)
        if call.w.strace:
            self._trace(call, "(continued)")

    def install(self, call: Call, fd: int, cloexec: bool) -> None:
        """Complete the syscall by installing fd (ours; closed here) in the task."""
        try:
            target = call.listener.install_fd(call.id, fd, os.O_CLOEXEC if cloexec else 0)
        finally:
            os.close(fd)
        if call.w.strace:
            self._trace(call, f"= {target}")

    def _trace(self, call: Call, result: str) -> None:
        strace_log.info("[%s] %d %s %s", call.w.cid, call.pid, call.trace, result)

    # ---- what handlers share ---------------------------------------------------------------

    def check_alive(self, call: Call) -> None:
        """Raise TaskGone unless call's task still waits for this answer (NOTIF_ID_VALID).

        After reading a task's memory and before acting on it: the pid may have died and been
        reused meanwhile, and what was read would then be another process's.
        """
        if not call.listener.id_valid(call.id):
            raise TaskGone(call.pid)

    def write_answer(self, call: Call, addr: int, data: bytes) -> None:
        """Write a call's output into its task's memory, never into a process that took over a
        dead task's pid (a fresh mem fd is checked with check_alive first; see taskmem)."""
        self.mem.write(call.pid, addr, data, lambda: self.check_alive(call))

    def path_arg(self, call: Call, addr: int) -> str:
        """A path argument from the task's memory (EFAULT, ENAMETOOLONG, ENOENT for an empty one)."""
        if addr == 0:
            raise BadAddress(addr)
        raw = self.mem.read_string(call.pid, addr, _PATH_MAX)
        self.check_alive(call)
        if not raw:
            raise FileNotFoundError(errno.ENOENT, "empty path")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            # The wire carries text; a path no container tool makes is refused, not mangled.
            raise OSError(errno.EILSEQ, "path is not UTF-8") from None

    def container_path(self, pid: int, dirfd: int, path: str, follow: bool = False, resolve: int = 0) -> str:
        """path as the task names it (relative to its cwd or dirfd), as the container path its
        kernel would reach (see vfs.resolve_in_task); follow resolves a final symlink too, and
        openat2's RESOLVE_* flags in resolve are enforced as the task's kernel would."""
        if resolve & SCOPING_FLAGS:
            return resolve_scoped(pid, as_int(dirfd), path, follow, resolve)
        if not path.startswith("/"):
            dirfd = as_int(dirfd)
            path = join(task_cwd(pid) if dirfd == AT_FDCWD else task_fd_path(pid, dirfd), path)
        return resolve_in_task(pid, path, follow)

    def creds(self, pid: int) -> tuple[Creds, int]:
        """The task's file-system credentials (host ids) and its umask."""
        uid, gid, groups, umask = task_creds(self.mem, pid)
        return Creds(uid=uid, gid=gid, groups=groups), umask

    def gofer_call(
        self,
        call: Call,
        method: str,
        request: Any,
        on_result: Callable[[dict[str, Any], list[int]], None] | None = None,
    ) -> None:
        """Ask the gofer; the syscall completes with 0 (or on_result's answer) or the gofer's errno."""

        def done(result: dict[str, Any] | None, fds: list[int], err: int) -> None:
            if err or on_result is None:
                for fd in fds:
                    os.close(fd)
                self._answer(call, lambda: self.fail(call, err) if err else self.reply(call, 0))
            else:
                # on_result owns fds from here, whatever it raises.
                self._answer(call, lambda: on_result(result or {}, fds))

        direct = self.direct
        if direct is not None and direct.serves(call.w.cid):
            done(*direct.call(method, request))
            return
        self.gofer.call(method, request, done)
