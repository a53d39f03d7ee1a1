"""The ForkServer domain (gVisor's "stub source"): create, release, signal and account container tasks.

The fork server is its own process (forkserver_main.py) so that it, and every task it created,
outlives a platform that is killed or restarted; this module is what it answers, from the
TaskTable of what it holds (forkserver_tasks.py). A container's init hands its seccomp listener
to Release, which returns a dup, and so does each process Exec starts in a running container
(exec_stub.py): the table keeps each original while any task uses its filter, and Listeners
hands out dups again. After Release or Exec the table also reads the child's sync socket until
EOF (the exec), logging a late failure. Every exit the fork server reaps stays in its ExitLog
until the container is destroyed, or for an exec'd process until Reap says its status was
waited for; Tasks reports all of it to a platform or sentry that restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
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
    ReapArgs,
    ReleaseResult,
    SignalArgs,
    SignalProcessArgs,
    SpecResult,
    StatsResult,
    TasksArgs,
    TasksResult,
)
from services.platform import exec_stub, hooks
from services.platform import stub as stubs
from services.platform.cgroups import Cgroup
from services.platform.execplan import plan_for
from services.platform.forkserver_tasks import Task, TaskTable
from services.platform.stub_child import hook_state

log = logging.getLogger(__name__)


class ForkServer:
    """The ForkServer domain: create, release, signal and account container inits."""

    domain = "ForkServer"

    def __init__(self, run_dir: Path, poller: select.poll | None = None) -> None:
        #: Every container held, with its tasks, kept fds and exits.
        self.table = TaskTable(run_dir, poller)
        # Two run directories may hold containers with the same id; their cgroups must differ.
        self.instance = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:12]

    def launch(self, args: LaunchArgs) -> LaunchResult:
        """Create the init of a container; it waits, set up, for release()."""
        earlier = self._launched(args)
        if earlier is not None:
            return earlier
        if args.cid in self.table.cgroups:
            raise ConflictError(f"container {args.cid!r} already has a task")
        cgroup = Cgroup.create(args.spec.cgroups_path or f"{self.instance}/{args.cid}", args.spec.resources)
        try:
            # Every container traps: filters.TRAPPED_SYSCALLS go to the sentry through the
            # listener that Release hands out.
            with cgroup.membership_files() as joins:
                stub = stubs.launch(
                    args.spec,
                    args.cid,
                    args.fds,
                    before_setup=self.table.reserve(args.cid),
                    trap=True,
                    cgroup_fds=joins,
                )
        except BaseException:
            cgroup.destroy()
            raise
        self.table.cgroups[args.cid] = cgroup
        self.table.specs[args.cid] = args.spec
        self.table.init_pids[args.cid] = stub.pid
        if args.strace:
            self.table.straced.add(args.cid)
        self.table.tokens[args.cid] = args.token
        console, stub.console = stub.console, None
        kept = os.dup(console) if console is not None else None
        self.table.live[args.cid] = Task(args.cid, stub.pid, stub, cgroup, kept)
        # The Dispatcher sends the master on and closes our copy.
        return LaunchResult(pid=stub.pid, fds=[console] if console is not None else [])

    def _launched(self, args: LaunchArgs) -> LaunchResult | None:
        """What an earlier Launch with this token created, while its init waits for release,
        or None: the platform that asked died before it passed the answer on, and the sentry
        asks again (the Dispatcher sends the master's dup on and closes it)."""
        task = self.table.live.get(args.cid)
        if not args.token or task is None or task.stub is None or self.table.tokens.get(args.cid) != args.token:
            return None
        return LaunchResult(pid=task.pid, fds=[os.dup(task.console)] if task.console is not None else [])

    def release(self, args: StartContainerArgs) -> ReleaseResult:
        """Let a launched init exec the program args describe, then run the poststart hooks.

        A trapping init's listener comes back as a dup; the fork server keeps the original.
        An init released already is answered as the first time, with nothing run again: the
        platform that asked died before it passed the answer on, and the sentry asks again
        (its own state keeps a second start of a running container from ever getting here).
        """
        task = self.table.task(args.container_id)
        if task.stub is None:
            return self._released(args.container_id, task.pid)
        plan = plan_for(args)
        stub, task.stub = task.stub, None
        task.drop_console()
        listener = stubs.release(stub, plan, args.fds)
        if listener is not None:
            self.table.keep_listener(args.container_id, listener)
            self.table.watch(stub)
        spec = self.table.specs[args.container_id]
        state = hook_state(spec, args.container_id, "running", task.pid)
        hooks.run_hooks_warn("poststart", spec.hooks.poststart, state, log)
        # The Dispatcher sends the dup on and closes it.
        return ReleaseResult(pid=task.pid, fds=[os.dup(listener)] if listener is not None else [])

    def _released(self, cid: str, pid: int) -> ReleaseResult:
        """The answer to a Release of cid's init, released already: with a dup of its listener
        while the fork server keeps it (the Dispatcher sends the dup on and closes it)."""
        execs = set(self.table.exec_listeners.values())
        kept = next((fd for fd, owner in self.table.listener_fds.items() if owner == cid and fd not in execs), None)
        return ReleaseResult(pid=pid, fds=[os.dup(kept)] if kept is not None else [])

    def exec(self, args: ExecArgs) -> ExecStarted:
        """Start a process in a running container (runc's setns process); it waits in its
        trapped exec for whoever holds the listener that comes back (a dup: the fork server
        keeps its own)."""
        cid = args.container_id
        task = self.table.task(cid)
        if task.stub is not None:
            raise ConflictError(f"cannot exec in container {cid!r}: it was not started")
        earlier = self._exec_of(cid, args.token)
        if earlier is not None:
            return earlier
        with self.table.cgroup(cid).membership_files() as joins:
            spawned = exec_stub.spawn(self.table.specs[cid], task.pid, args, self.table.reserve(cid), joins)
        self.table.execs[spawned.stub.pid] = ExecTask(
            cid=cid, host_pid=spawned.stub.pid, ns_pid=spawned.ns_pid, token=args.token
        )
        self.table.keep_listener(cid, spawned.listener)
        self.table.exec_listeners[spawned.stub.pid] = spawned.listener
        self.table.watch(spawned.stub)
        fds = [os.dup(spawned.listener)]
        if spawned.console is not None:
            if args.token:
                self.table.consoles.keep(spawned.stub.pid, spawned.console)
            fds.append(spawned.console)
        # The Dispatcher sends the files on and closes them.
        return ExecStarted(pid=spawned.ns_pid, host_pid=spawned.stub.pid, fds=fds)

    def _exec_of(self, cid: str, token: str) -> ExecStarted | None:
        """What an earlier Exec with this token started, or None: with a dup of its listener
        while its filter is in use and then, while it is kept, a dup of its pty master."""
        if not token:
            return None
        found = next((e for e in self.table.execs.values() if e.cid == cid and e.token == token), None)
        if found is None:
            return None
        kept = self.table.exec_listeners.get(found.host_pid)
        if kept is None:
            return ExecStarted(pid=found.ns_pid, host_pid=found.host_pid)
        fds = [os.dup(kept)]
        master = self.table.consoles.dup(found.host_pid)
        if master is not None:
            fds.append(master)
        # The Dispatcher sends the files on and closes them.
        return ExecStarted(pid=found.ns_pid, host_pid=found.host_pid, fds=fds)

    def release_console(self, args: ProcessRef) -> None:
        """The CLI of an exec'd process holds its pty master: close ours, so that the process
        sees its terminal hang up when that CLI goes (a no-op once it is closed)."""
        execd = self.table.execs.get(args.host_pid)
        if execd is None or execd.cid != args.cid:
            raise NotFound(f"container {args.cid!r} has no exec'd process {args.host_pid}")
        self.table.consoles.release(args.host_pid)

    def reap(self, args: ReapArgs) -> None:
        """Forget the exec'd processes of args.cid among args.host_pids that have exited (their
        status was waited for); others, and those of a destroyed container, are no error."""
        self.table.reap(args.cid, args.host_pids)

    def listeners(self, args: ListenersArgs) -> ListenersResult:
        """A dup of every listener still in use (of the containers in args.cids, if given);
        a container has one per task tree (its init's, each exec'd process's)."""
        kept = [(fd, cid) for fd, cid in self.table.listener_fds.items() if not args.cids or cid in args.cids]
        fds: list[int] = []
        try:
            for fd, _ in kept:
                fds.append(os.dup(fd))
        except BaseException:
            fdpass.close_all(fds)
            raise
        return ListenersResult(cids=[cid for _, cid in kept], fds=fds)

    def tasks(self, args: TasksArgs) -> TasksResult:
        """Every container held and every exit kept: what a restarted platform or sentry rebuilds from."""
        containers = []
        for cid, cgroup in self.table.cgroups.items():
            task = self.table.live.get(cid)
            containers.append(
                ContainerTasks(
                    cid=cid,
                    strace=cid in self.table.straced,
                    token=self.table.tokens.get(cid, ""),
                    init_pid=self.table.init_pids[cid],
                    released=task is None or task.stub is None,
                    frozen=cgroup.frozen(),
                    execs=[e for e in self.table.execs.values() if e.cid == cid],
                )
            )
        return TasksResult(containers=containers, exits=self.table.exit_log.all())

    def spec(self, args: ContainerRef) -> SpecResult:
        """The spec container args.cid was launched with (not in Tasks: each may be megabytes)."""
        spec = self.table.specs.get(args.cid)
        if spec is None:
            raise NotFound(f"container {args.cid!r} is not held")
        return SpecResult(spec=spec)

    def signal(self, args: SignalArgs) -> None:
        """Signal the init, or every process of the container with its cgroup frozen meanwhile."""
        cgroup = self.table.cgroup(args.cid)
        if not args.all:
            os.kill(self.table.task(args.cid).pid, args.signo)
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
        members = set(self.table.cgroup(args.cid).pids())
        if args.host_pid not in members:
            raise NotFound(f"container {args.cid!r} has no process {args.host_pid}")
        group = _terminal_group(args.host_pid) if args.foreground else None
        if group is not None and group in members:
            os.killpg(group, args.signo)
        else:
            os.kill(args.host_pid, args.signo)

    def freeze(self, args: ContainerRef) -> None:
        """Freeze every process of the container."""
        self.table.cgroup(args.cid).freeze()

    def thaw(self, args: ContainerRef) -> None:
        """Thaw every process of the container."""
        self.table.cgroup(args.cid).thaw()

    def pids(self, args: ContainerRef) -> PidsResult:
        """Host pids of the container's processes."""
        return PidsResult(pids=self.table.cgroup(args.cid).pids())

    def stats(self, args: ContainerRef) -> StatsResult:
        """The container's cgroup counters."""
        s = self.table.cgroup(args.cid).stats()
        return StatsResult(
            cpu_usage_ns=s.cpu_usage_ns,
            memory_usage=s.memory_usage,
            memory_limit=s.memory_limit,
            pids_current=s.pids_current,
            pids_limit=s.pids_limit,
        )

    def destroy(self, args: ContainerRef) -> None:
        """Kill whatever is left of the container, remove its cgroup, run its poststop hooks."""
        spec = self.table.remove(args.cid)
        if spec is not None:
            state = hook_state(spec, args.cid, "stopped", 0)
            hooks.run_hooks_warn("poststop", spec.hooks.poststop, state, log)


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
