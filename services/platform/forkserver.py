"""The ForkServer domain (gVisor's "stub source"): create, release, signal and account container tasks.

The fork server is its own process (forkserver_main.py) so that it, and every task it created,
outlives a platform that is killed or restarted; this module is what it answers. A container's
init hands its seccomp listener to Release, which returns a dup, and so does each process Exec
starts in a running container (exec_stub.py): the fork server keeps each original while any
task uses its filter (every descendant shares it, and if the last holder closed it their
trapped calls would fail with ENOSYS for good), closing it at its hangup or at Destroy, and
hands out dups again with Listeners. After Release or Exec it also reads the child's sync
socket until EOF (the exec), logging a late failure. Every exit it reaps stays in its ExitLog
until the container is destroyed; Tasks reports all of it to a platform or sentry that
restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import fdpass
from common.errors import ConflictError, NotFound
from common.messages.execs import ExecArgs, ExecStarted
from common.messages.lifecycle import StartContainerArgs
from common.messages.platform import (
    ContainerRef,
    ContainerTasks,
    ExecTask,
    LaunchArgs,
    LaunchResult,
    ListenersArgs,
    ListenersResult,
    PidsResult,
    ProcessRef,
    ReleaseResult,
    SignalArgs,
    SignalProcessArgs,
    StatsResult,
    TasksArgs,
    TasksResult,
)
from common.messages.spec import ContainerSpec
from services.platform import exec_stub, hooks
from services.platform import stub as stubs
from services.platform.cgroups import Cgroup
from services.platform.consoles import HeldConsoles
from services.platform.execplan import plan_for
from services.platform.exits import ExitLog
from services.platform.stub_child import hook_state

log = logging.getLogger(__name__)


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit status, or 128 + the killing signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


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


class ForkServer:
    """The ForkServer domain: create, release, signal and account container inits."""

    domain = "ForkServer"

    def __init__(self, run_dir: Path, poller: select.poll | None = None) -> None:
        #: Where the sync sockets of released inits are watched (serve's poll set).
        self.poller = poller
        self.exit_log = ExitLog(run_dir / "exits")
        #: Inits not yet reaped, by container.
        self.live: dict[str, Task] = {}
        # Two run directories may hold containers with the same id; their cgroups must differ.
        self.instance = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:12]
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
        #: Every exec'd process, by host pid, until its container is destroyed (a request sent
        #: again finds by its token the process it started).
        self.execs: dict[int, ExecTask] = {}
        #: Host pid of an exec'd process -> its listener in listener_fds, while kept.
        self.exec_listeners: dict[int, int] = {}
        #: Sync sockets of released trapping inits, by fd, read until EOF for late failures.
        self.late: dict[int, stubs.Stub] = {}
        #: The pty master of each exec'd process whose CLI may not have it yet (consoles.py).
        self.consoles = HeldConsoles()

    def launch(self, args: LaunchArgs) -> LaunchResult:
        """Create the init of a container; it waits, set up, for release()."""
        earlier = self._launched(args)
        if earlier is not None:
            return earlier
        if args.cid in self.cgroups:
            raise ConflictError(f"container {args.cid!r} already has a task")
        cgroup = Cgroup.create(args.spec.cgroups_path or f"{self.instance}/{args.cid}", args.spec.resources)
        try:
            # Every container traps: filters.TRAPPED_SYSCALLS go to the sentry through the
            # listener that Release hands out.
            with cgroup.membership_files() as joins:
                stub = stubs.launch(
                    args.spec, args.cid, args.fds, before_setup=self._reserve(args.cid), trap=True, cgroup_fds=joins
                )
        except BaseException:
            cgroup.destroy()
            raise
        self.cgroups[args.cid] = cgroup
        self.specs[args.cid] = args.spec
        self.init_pids[args.cid] = stub.pid
        if args.strace:
            self.straced.add(args.cid)
        self.tokens[args.cid] = args.token
        console, stub.console = stub.console, None
        kept = os.dup(console) if console is not None else None
        self.live[args.cid] = Task(args.cid, stub.pid, stub, cgroup, kept)
        # The Dispatcher sends the master on and closes our copy.
        return LaunchResult(pid=stub.pid, fds=[console] if console is not None else [])

    def _launched(self, args: LaunchArgs) -> LaunchResult | None:
        """What an earlier Launch with this token created, while its init waits for release,
        or None: the platform that asked died before it passed the answer on, and the sentry
        asks again (the Dispatcher sends the master's dup on and closes it)."""
        task = self.live.get(args.cid)
        if not args.token or task is None or task.stub is None or self.tokens.get(args.cid) != args.token:
            return None
        return LaunchResult(pid=task.pid, fds=[os.dup(task.console)] if task.console is not None else [])

    def release(self, args: StartContainerArgs) -> ReleaseResult:
        """Let a launched init exec the program args describe, then run the poststart hooks.

        A trapping init's listener comes back as a dup; the fork server keeps the original.
        An init released already is answered as the first time, with nothing run again: the
        platform that asked died before it passed the answer on, and the sentry asks again
        (its own state keeps a second start of a running container from ever getting here).
        """
        task = self._task(args.container_id)
        if task.stub is None:
            return self._released(args.container_id, task.pid)
        plan = plan_for(args)
        stub, task.stub = task.stub, None
        task.drop_console()
        listener = stubs.release(stub, plan, args.fds)
        if listener is not None:
            self._keep_listener(args.container_id, listener)
            self._watch(stub)
        spec = self.specs[args.container_id]
        state = hook_state(spec, args.container_id, "running", task.pid)
        hooks.run_hooks_warn("poststart", spec.hooks.poststart, state, log)
        # The Dispatcher sends the dup on and closes it.
        return ReleaseResult(pid=task.pid, fds=[os.dup(listener)] if listener is not None else [])

    def _released(self, cid: str, pid: int) -> ReleaseResult:
        """The answer to a Release of cid's init, released already: with a dup of its listener
        while the fork server keeps it (the Dispatcher sends the dup on and closes it)."""
        execs = set(self.exec_listeners.values())
        kept = next((fd for fd, owner in self.listener_fds.items() if owner == cid and fd not in execs), None)
        return ReleaseResult(pid=pid, fds=[os.dup(kept)] if kept is not None else [])

    def exec(self, args: ExecArgs) -> ExecStarted:
        """Start a process in a running container (runc's setns process); it waits in its
        trapped exec for whoever holds the listener that comes back (a dup: the fork server
        keeps its own)."""
        cid = args.container_id
        task = self._task(cid)
        if task.stub is not None:
            raise ConflictError(f"cannot exec in container {cid!r}: it was not started")
        earlier = self._exec_of(cid, args.token)
        if earlier is not None:
            return earlier
        with self._cgroup(cid).membership_files() as joins:
            spawned = exec_stub.spawn(self.specs[cid], task.pid, args, self._reserve(cid), joins)
        self.execs[spawned.stub.pid] = ExecTask(
            cid=cid, host_pid=spawned.stub.pid, ns_pid=spawned.ns_pid, token=args.token
        )
        self._keep_listener(cid, spawned.listener)
        self.exec_listeners[spawned.stub.pid] = spawned.listener
        self._watch(spawned.stub)
        fds = [os.dup(spawned.listener)]
        if spawned.console is not None:
            if args.token:
                self.consoles.keep(spawned.stub.pid, spawned.console)
            fds.append(spawned.console)
        # The Dispatcher sends the files on and closes them.
        return ExecStarted(pid=spawned.ns_pid, host_pid=spawned.stub.pid, fds=fds)

    def _exec_of(self, cid: str, token: str) -> ExecStarted | None:
        """What an earlier Exec with this token started, or None: with a dup of its listener
        while its filter is in use and then, while it is kept, a dup of its pty master."""
        if not token:
            return None
        found = next((e for e in self.execs.values() if e.cid == cid and e.token == token), None)
        if found is None:
            return None
        kept = self.exec_listeners.get(found.host_pid)
        if kept is None:
            return ExecStarted(pid=found.ns_pid, host_pid=found.host_pid)
        fds = [os.dup(kept)]
        master = self.consoles.dup(found.host_pid)
        if master is not None:
            fds.append(master)
        # The Dispatcher sends the files on and closes them.
        return ExecStarted(pid=found.ns_pid, host_pid=found.host_pid, fds=fds)

    def release_console(self, args: ProcessRef) -> None:
        """The CLI of an exec'd process holds its pty master: close ours, so that the process
        sees its terminal hang up when that CLI goes (a no-op once it is closed)."""
        execd = self.execs.get(args.host_pid)
        if execd is None or execd.cid != args.cid:
            raise NotFound(f"container {args.cid!r} has no exec'd process {args.host_pid}")
        self.consoles.release(args.host_pid)

    def listeners(self, args: ListenersArgs) -> ListenersResult:
        """A dup of every listener still in use (of the containers in args.cids, if given);
        a container has one per task tree (its init's, each exec'd process's)."""
        kept = [(fd, cid) for fd, cid in self.listener_fds.items() if not args.cids or cid in args.cids]
        fds: list[int] = []
        try:
            for fd, _ in kept:
                fds.append(os.dup(fd))
        except BaseException:
            fdpass.close_all(fds)
            raise
        return ListenersResult(cids=[cid for _, cid in kept], fds=fds)

    def _reserve(self, cid: str) -> Callable[[int], None]:
        """What a new task of cid needs before it does anything, beside its cgroup (which it
        joins by itself): room for its exit record (a full disk refuses it here, with ENOSPC,
        rather than lose its exit)."""
        return lambda pid: self.exit_log.reserve(pid, cid)

    def tasks(self, args: TasksArgs) -> TasksResult:
        """Every container held and every exit kept: what a restarted platform or sentry rebuilds from."""
        containers = []
        for cid, cgroup in self.cgroups.items():
            task = self.live.get(cid)
            containers.append(
                ContainerTasks(
                    cid=cid,
                    spec=self.specs[cid],
                    strace=cid in self.straced,
                    token=self.tokens.get(cid, ""),
                    init_pid=self.init_pids[cid],
                    released=task is None or task.stub is None,
                    frozen=cgroup.frozen(),
                    execs=[e for e in self.execs.values() if e.cid == cid],
                )
            )
        return TasksResult(containers=containers, exits=self.exit_log.all())

    def _keep_listener(self, cid: str, fd: int) -> None:
        self.listener_fds[fd] = cid
        if self.poller is not None:
            # No POLLIN: a pending notification is the sentry's business; only the hangup
            # (no task left under the filter), which poll always reports, is ours.
            self.poller.register(fd, 0)

    def _drop_listener(self, fd: int) -> None:
        """A listener's filter has no task left (or its container goes): close our copy."""
        if self.listener_fds.pop(fd, None) is not None:
            for pid in [pid for pid, kept in self.exec_listeners.items() if kept == fd]:
                del self.exec_listeners[pid]
            if self.poller is not None:
                self.poller.unregister(fd)
            os.close(fd)

    def _read_late(self, fd: int) -> None:
        """The sync socket fd of a released init is readable: log what it says, drop it at EOF."""
        stub = self.late.get(fd)
        if stub is not None and not stubs.read_late(stub):
            self._unwatch(fd)

    def _watch(self, stub: stubs.Stub) -> None:
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

    def signal(self, args: SignalArgs) -> None:
        """Signal the init, or every process of the container with its cgroup frozen meanwhile."""
        cgroup = self._cgroup(args.cid)
        if not args.all:
            os.kill(self._task(args.cid).pid, args.signo)
            return
        # Frozen, no process can fork a child that escapes the signal.
        cgroup.freeze()
        try:
            for pid in cgroup.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, args.signo)
        finally:
            cgroup.thaw()

    def signal_process(self, args: SignalProcessArgs) -> None:
        """Signal one process of the container or, with foreground, the foreground process group
        of its terminal when that group is the container's too."""
        members = set(self._cgroup(args.cid).pids())
        if args.host_pid not in members:
            raise NotFound(f"container {args.cid!r} has no process {args.host_pid}")
        group = _terminal_group(args.host_pid) if args.foreground else None
        if group is not None and group in members:
            os.killpg(group, args.signo)
        else:
            os.kill(args.host_pid, args.signo)

    def freeze(self, args: ContainerRef) -> None:
        """Freeze every process of the container."""
        self._cgroup(args.cid).freeze()

    def thaw(self, args: ContainerRef) -> None:
        """Thaw every process of the container."""
        self._cgroup(args.cid).thaw()

    def pids(self, args: ContainerRef) -> PidsResult:
        """Host pids of the container's processes."""
        return PidsResult(pids=self._cgroup(args.cid).pids())

    def stats(self, args: ContainerRef) -> StatsResult:
        """The container's cgroup counters."""
        s = self._cgroup(args.cid).stats()
        return StatsResult(
            cpu_usage_ns=s.cpu_usage_ns,
            memory_usage=s.memory_usage,
            memory_limit=s.memory_limit,
            pids_current=s.pids_current,
            pids_limit=s.pids_limit,
        )

    def destroy(self, args: ContainerRef) -> None:
        """Kill whatever is left of the container, remove its cgroup, run its poststop hooks."""
        spec = self._remove(args.cid)
        if spec is not None:
            state = hook_state(spec, args.cid, "stopped", 0)
            hooks.run_hooks_warn("poststop", spec.hooks.poststop, state, log)

    def _remove(self, cid: str) -> ContainerSpec | None:
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
                self._drop_listener(fd)
        return spec

    def _task(self, cid: str) -> Task:
        task = self.live.get(cid)
        if task is None:
            raise NotFound(f"container {cid!r} has no running init")
        return task

    def _cgroup(self, cid: str) -> Cgroup:
        cgroup = self.cgroups.get(cid)
        if cgroup is None:
            raise NotFound(f"container {cid!r} has no cgroup")
        return cgroup


def _terminal_group(pid: int) -> int | None:
    """The foreground process group of pid's controlling terminal (tpgid in /proc/PID/stat,
    numbered in our pid namespace), or None without one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the parenthesised command: state, ppid, pgrp, session, tty_nr, tpgid, ...
    tpgid = int(stat.rpartition(")")[2].split()[5])
    return tpgid if tpgid > 0 else None
