"""The fork server (gVisor's "stub source"): the one process that creates and reaps container tasks.

It is single-threaded and imports no ZMQ (whose I/O threads would make clone() unsafe), so it
speaks the wire envelope over one SOCK_SEQPACKET connection to the platform, through the same
Dispatcher every service uses. Beside replies it sends unsolicited exit events
(``{"v": 1, "event": "exit", "body": TaskExit}``) on that connection. Each exit is first written
durably to ``$RUN/exits/<pid>.json`` so that a platform that was not listening can collect it.

A container's init hands its seccomp listener to Release, which returns a dup, and so does
each process Exec starts in a running container (exec_stub.py): the fork server keeps each
original while any task uses its filter (every descendant shares it, and if the last holder
closed it their trapped calls would fail with ENOSYS for good), closing it at its hangup or at
Destroy, and hands out dups again with Listeners. After Release or Exec it also reads the
child's sync socket until EOF (the exec), logging a late failure.

Run as ``python -m services.platform.forkserver --socket-fd N --run-dir DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import select
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import cbor2

from common import fdpass, wire
from common import log as logconf
from common.errors import ConflictError, NotFound
from common.messages.lifecycle import StartContainerArgs
from common.messages.platform import (
    ContainerRef,
    LaunchArgs,
    LaunchResult,
    ListenersArgs,
    ListenersResult,
    PidsResult,
    ReleaseResult,
    SignalArgs,
    SignalProcessArgs,
    StatsResult,
    TaskExit,
)
from common.messages.proc import ExecArgs, ExecStarted
from common.messages.spec import ContainerSpec
from common.rpc import Dispatcher, Registry
from services.platform import exec_stub, hooks
from services.platform import stub as stubs
from services.platform.cgroups import Cgroup
from services.platform.execplan import plan_for
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


class ForkServer:
    """The ForkServer domain: create, release, signal and account container inits."""

    domain = "ForkServer"

    def __init__(self, run_dir: Path, poller: select.poll | None = None) -> None:
        #: Where the sync sockets of released inits are watched (serve's poll set).
        self.poller = poller
        self.exits_dir = run_dir / "exits"
        self.exits_dir.mkdir(mode=0o700, exist_ok=True)
        self.tasks: dict[str, Task] = {}
        # Two run directories may hold containers with the same id; their cgroups must differ.
        self.instance = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:12]
        self.cgroups: dict[str, Cgroup] = {}
        #: The spec of every container with a cgroup, for its poststart and poststop hooks.
        self.specs: dict[str, ContainerSpec] = {}
        #: Seccomp listener fd -> its container: the init's and every exec'd process's, kept
        #: while a task uses the filter (not only while its first task lives: descendants
        #: share it).
        self.listener_fds: dict[int, str] = {}
        #: Host pid -> container of every exec'd process not yet reaped.
        self.execs: dict[int, str] = {}
        #: Sync sockets of released trapping inits, by fd, read until EOF for late failures.
        self.late: dict[int, stubs.Stub] = {}

    def launch(self, args: LaunchArgs) -> LaunchResult:
        """Create the init of a container; it waits, set up, for release()."""
        if args.cid in self.cgroups:
            raise ConflictError(f"container {args.cid!r} already has a task")
        cgroup = Cgroup.create(args.spec.cgroups_path or f"{self.instance}/{args.cid}", args.spec.resources)
        try:
            # Every container traps: filters.TRAPPED_SYSCALLS go to the sentry through the
            # listener that Release hands out.
            stub = stubs.launch(args.spec, args.cid, args.fds, before_setup=cgroup.add, trap=True)
        except BaseException:
            cgroup.destroy()
            raise
        self.cgroups[args.cid] = cgroup
        self.specs[args.cid] = args.spec
        self.tasks[args.cid] = Task(args.cid, stub.pid, stub, cgroup)
        console, stub.console = stub.console, None
        # The Dispatcher sends the master on and closes our copy.
        return LaunchResult(pid=stub.pid, fds=[console] if console is not None else [])

    def release(self, args: StartContainerArgs) -> ReleaseResult:
        """Let a launched init exec the program args describe, then run the poststart hooks.

        A trapping init's listener comes back as a dup; the fork server keeps the original.
        """
        task = self._task(args.container_id)
        if task.stub is None:
            raise ConflictError(f"container {args.container_id!r} was already started")
        plan = plan_for(args)
        stub, task.stub = task.stub, None
        listener = stubs.release(stub, plan, args.fds)
        if listener is not None:
            self._keep_listener(args.container_id, listener)
            self._watch(stub)
        spec = self.specs[args.container_id]
        state = hook_state(spec, args.container_id, "running", task.pid)
        hooks.run_hooks_warn("poststart", spec.hooks.poststart, state, log)
        # The Dispatcher sends the dup on and closes it.
        return ReleaseResult(pid=task.pid, fds=[os.dup(listener)] if listener is not None else [])

    def exec(self, args: ExecArgs) -> ExecStarted:
        """Start a process in a running container (runc's setns process); it waits in its
        trapped exec for whoever holds the listener that comes back (a dup: the fork server
        keeps its own)."""
        cid = args.container_id
        task = self._task(cid)
        if task.stub is not None:
            raise ConflictError(f"cannot exec in container {cid!r}: it was not started")
        spawned = exec_stub.spawn(self.specs[cid], task.pid, args, before_setup=self._cgroup(cid).add)
        self.execs[spawned.stub.pid] = cid
        self._keep_listener(cid, spawned.listener)
        self._watch(spawned.stub)
        fds = [os.dup(spawned.listener)]
        if spawned.console is not None:
            fds.append(spawned.console)
        # The Dispatcher sends the files on and closes them.
        return ExecStarted(pid=spawned.ns_pid, host_pid=spawned.stub.pid, fds=fds)

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

    def _keep_listener(self, cid: str, fd: int) -> None:
        self.listener_fds[fd] = cid
        if self.poller is not None:
            # No POLLIN: a pending notification is the sentry's business; only the hangup
            # (no task left under the filter), which poll always reports, is ours.
            self.poller.register(fd, 0)

    def _drop_listener(self, fd: int) -> None:
        """A listener's filter has no task left (or its container goes): close our copy."""
        if self.listener_fds.pop(fd, None) is not None:
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
        cgroup = self.cgroups.pop(cid, None)
        task = self.tasks.pop(cid, None)
        if task is not None and task.stub is not None:
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
        task = self.tasks.get(cid)
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


def reap(server: ForkServer) -> list[TaskExit]:
    """Collect every child that exited; record each exit durably before reporting it."""
    exits = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        task = next((t for t in server.tasks.values() if t.pid == pid), None)
        if task is not None:
            cid = task.cid
            if task.stub is not None:
                task.stub.sync.close()
            del server.tasks[cid]
        else:
            cid = server.execs.pop(pid, "")  # an exec'd process, or a child we no longer know
        event = TaskExit(cid=cid, pid=pid, init=task is not None, exit_code=exit_code(status))
        record_exit(server.exits_dir, event)
        exits.append(event)
    return exits


def record_exit(exits_dir: Path, event: TaskExit) -> None:
    """Write event to exits_dir/<pid>.json and make it durable before anyone hears of it."""
    path = exits_dir / f"{event.pid}.json"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(wire.to_wire(event), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(exits_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def shutdown(server: ForkServer) -> None:
    """Kill every container of this fork server and remove its cgroups.

    The inits would die with us anyway (parent-death signal), but a frozen one would linger
    until thawed, and the cgroups would stay behind.
    """
    for cid in list(server.cgroups):
        try:
            server._remove(cid)
        except OSError as e:
            log.warning("removing the cgroup of %r: %s", cid, e)


def encode_event(event: str, body: object) -> bytes:
    """An unsolicited event frame on the fork-server connection."""
    return cbor2.dumps({"v": wire.WIRE_VERSION, "event": event, "body": wire.to_wire(body)})


def serve(conn: socket.socket, run_dir: Path) -> None:
    """Answer the platform on conn and report exits until the platform hangs up."""
    poller = select.poll()
    server = ForkServer(run_dir, poller)
    registry = Registry()
    registry.register(server)
    dispatcher = Dispatcher(registry)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the platform's death, not a signal, ends us
    poller.register(conn.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ in poller.poll(1000):
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            if fd in server.late:
                server._read_late(fd)
                continue
            if fd in server.listener_fds:
                server._drop_listener(fd)
                continue
            if fd != conn.fileno():
                continue  # a late socket dropped while this batch was pending
            frame, fds = fdpass.recv_frame(conn)
            if not frame and not fds:
                log.info("platform hung up; fork server exits")
                shutdown(server)
                return
            reply, out_fds = dispatcher.handle(frame, fds)
            fdpass.send_frame(conn, reply, out_fds)
            fdpass.close_all(out_fds)
        for event in reap(server):
            fdpass.send_frame(conn, encode_event("exit", event))


def main() -> None:
    """Entry point of the fork-server process."""
    parser = argparse.ArgumentParser(prog="forkserver")
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--debug", action="store_true")
    opts = parser.parse_args()
    logconf.configure("forkserver", None, "text", opts.debug)
    conn = socket.socket(fileno=opts.socket_fd)
    try:
        serve(conn, Path(opts.run_dir))
    finally:
        conn.close()


if __name__ == "__main__":
    main()
