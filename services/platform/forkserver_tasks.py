"""TaskTable: what the fork server holds for each container, until Destroy removes it.

For every container with a cgroup it keeps the cgroup, the spec (for the poststart and poststop
hooks), the create request's token, the host pid of the init and, while it is not reaped, the
init's Task; every exec'd process (ExecTask), by host pid, until its status was waited for
(reap); and the exits reaped (ExitLog).
It also owns the fds the fork server keeps for its tasks. A container's seccomp listener, the
init's and each exec'd process's, is kept while any task uses its filter (every descendant
shares it, and if the last holder closed it their trapped calls would fail with ENOSYS for
good), and closed at its hangup or at Destroy. The sync socket of a released init, or of an
exec'd process, is read until EOF (the exec) so that a late failure is logged. Both are
watched on serve's poll set. The ForkServer domain (forkserver.py) answers the RPCs from this
table; the fork server's loop (forkserver_main.py) records the exits it reaps here.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import NotFound
from common.messages.platform import ExecTask
from common.messages.spec import ContainerSpec
from services.platform import stub as stubs
from services.platform.cgroups import Cgroup
from services.platform.consoles import HeldConsoles
from services.platform.exits import ExitLog


@dataclass(slots=True)
class Task:
    """A container init this fork server created and has not yet reaped."""

    #: Container id.
    cid: str
    #: Host pid.
    pid: int
    #: The stub waiting for release, until it is released.
    stub: stubs.Stub | None
    #: The container's cgroup.
    cgroup: Cgroup
    #: A dup of the init's pty master until release, for a Launch sent again (owned: closed by
    #: drop_console).
    console: int | None = None

    def drop_console(self) -> None:
        """Close the kept pty master, if any (at release and at destroy)."""
        if self.console is not None:
            os.close(self.console)
            self.console = None


class TaskTable:
    """The containers, tasks, kept fds and exits of one fork server (one run directory)."""

    def __init__(self, run_dir: Path, poller: select.poll | None = None) -> None:
        #: Where the sync sockets of released inits are watched (serve's poll set).
        self.poller = poller
        self.exit_log = ExitLog(run_dir / "exits")
        #: Inits not yet reaped, by container.
        self.live: dict[str, Task] = {}
        self.cgroups: dict[str, Cgroup] = {}
        #: The spec of every container with a cgroup, for its poststart and poststop hooks.
        self.specs: dict[str, ContainerSpec] = {}
        #: Containers whose trapped syscalls the sentry logs (LaunchArgs.strace).
        self.straced: set[str] = set()
        #: The create request's token of every container with a cgroup (LaunchArgs.token).
        self.tokens: dict[str, str] = {}
        #: Host pid of the init of every container with a cgroup, alive or reaped.
        self.init_pids: dict[str, int] = {}
        #: Seccomp listener fd -> its container: the init's and every exec'd process's, kept
        #: while a task uses the filter (not only while its first task lives: descendants
        #: share it).
        self.listener_fds: dict[int, str] = {}
        #: Every exec'd process, by host pid, until its exit status was waited for (reap) or its
        #: container is destroyed (a request sent again finds by its token the process it started).
        self.execs: dict[int, ExecTask] = {}
        #: Host pid of an exec'd process -> its listener in listener_fds, while kept.
        self.exec_listeners: dict[int, int] = {}
        #: Sync sockets of released trapping inits, by fd, read until EOF for late failures.
        self.late: dict[int, stubs.Stub] = {}
        #: The pty master of each exec'd process whose CLI may not have it yet (consoles.py).
        self.consoles = HeldConsoles()

    def reserve(self, cid: str) -> Callable[[int], None]:
        """What a new task of cid needs before it does anything, beside its cgroup (which it
        joins by itself): room for its exit record (a full disk refuses it here, with ENOSPC,
        rather than lose its exit)."""
        return lambda pid: self.exit_log.reserve(pid, cid)

    def keep_listener(self, cid: str, fd: int) -> None:
        """Keep cid's listener fd (owned from here: closed by drop_listener) until its hangup."""
        self.listener_fds[fd] = cid
        if self.poller is not None:
            # No POLLIN: a pending notification is the sentry's business; only the hangup
            # (no task left under the filter), which poll always reports, is ours.
            self.poller.register(fd, 0)

    def drop_listener(self, fd: int) -> None:
        """A listener's filter has no task left (or its container goes): close our copy."""
        if self.listener_fds.pop(fd, None) is not None:
            for pid in [pid for pid, kept in self.exec_listeners.items() if kept == fd]:
                del self.exec_listeners[pid]
            if self.poller is not None:
                self.poller.unregister(fd)
            os.close(fd)

    def read_late(self, fd: int) -> None:
        """The sync socket fd of a released init is readable: log what it says, drop it at EOF."""
        stub = self.late.get(fd)
        if stub is not None and not stubs.read_late(stub):
            self._unwatch(fd)

    def watch(self, stub: stubs.Stub) -> None:
        """Read stub's sync socket until EOF (owned from here: closed at EOF or at remove)."""
        # Non-blocking: a stale poll event must never hang the fork server on a read.
        stub.sync.setblocking(False)
        self.late[stub.sync.fileno()] = stub
        if self.poller is not None:
            self.poller.register(stub.sync.fileno(), select.POLLIN)

    def _unwatch(self, fd: int) -> None:
        stub = self.late.pop(fd)
        if self.poller is not None:
            self.poller.unregister(fd)
        stub.sync.close()

    def reap(self, cid: str, host_pids: list[int]) -> None:
        """Forget the exec'd processes of cid among host_pids that have exited: their status was
        waited for. Their listeners stay until their hangup (a descendant may still use one)."""
        for pid in self.exit_log.reap(cid, host_pids):
            self.execs.pop(pid, None)
            self.consoles.release(pid)

    def remove(self, cid: str) -> ContainerSpec | None:
        """Kill whatever is left of the container and remove its cgroup; its spec, if known."""
        spec = self.specs.pop(cid, None)
        self.straced.discard(cid)
        self.tokens.pop(cid, None)
        init_pid = self.init_pids.pop(cid, None)
        exec_pids = [pid for pid, e in self.execs.items() if e.cid == cid]
        self.exit_log.forget(cid, [*exec_pids, *([init_pid] if init_pid else [])])
        for pid in exec_pids:
            del self.execs[pid]
            self.consoles.release(pid)
        cgroup = self.cgroups.pop(cid, None)
        task = self.live.pop(cid, None)
        if task is not None:
            task.drop_console()
            if task.stub is not None:
                task.stub.sync.close()
        for fd in [fd for fd, stub in self.late.items() if stub.container_id == cid]:
            self._unwatch(fd)
        try:
            if cgroup is not None:
                cgroup.destroy()
        finally:
            # Once the cgroup is gone so are the tasks: no trapped call is left to answer.
            for fd in [fd for fd, owner in self.listener_fds.items() if owner == cid]:
                self.drop_listener(fd)
        return spec

    def task(self, cid: str) -> Task:
        """The init of cid, while it is not reaped; NotFound otherwise."""
        task = self.live.get(cid)
        if task is None:
            raise NotFound(f"container {cid!r} has no running init")
        return task

    def cgroup(self, cid: str) -> Cgroup:
        """The cgroup of cid, until it is destroyed; NotFound otherwise."""
        cgroup = self.cgroups.get(cid)
        if cgroup is None:
            raise NotFound(f"container {cid!r} has no cgroup")
        return cgroup
