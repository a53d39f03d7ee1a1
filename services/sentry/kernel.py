"""The sentry's kernel state: containers, their status machine, and the way to the platform.

The status machine is gVisor's: created -> running <-> paused, and any of them -> stopped when
the init exits. A transition the machine does not allow raises ConflictError naming the action
and the status, as gVisor's requireStatus does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from common import fdpass, wire
from common.client import ServiceChannel
from common.errors import (
    ConflictError,
    ErrCode,
    InvalidArgument,
    NotFound,
    ServiceUnavailable,
    ZerovisorError,
    has_code,
)
from common.events import Publisher
from common.messages.containers import StartRecord
from common.messages.gofer import DetachArgs, MountFdsArgs, MountFdsResult
from common.messages.lifecycle import ContainerStatus
from common.messages.platform import ReapArgs, TaskExit
from common.messages.proc import ProcessExit
from common.messages.spec import ContainerSpec
from common.rundir import RunDir
from services.sentry.seccomp import Listener
from services.sentry.supervisor import Supervisor, Watched
from services.sentry.vfs import MountTable, attach_args

log = logging.getLogger(__name__)

CREATED, RUNNING, PAUSED, STOPPED = "created", "running", "paused", "stopped"

#: How long a call to the platform may take; creating a container mounts and forks.
PLATFORM_TIMEOUT = 60.0
#: How long attaching or detaching a container's mounts may take.
GOFER_TIMEOUT = 30.0
#: The kernel release uname reports, unless the container's annotation sets another.
DEFAULT_KERNEL_RELEASE = "4.4.0"
#: Annotation naming the kernel release uname reports.
KERNEL_RELEASE_ANNOTATION = "dev.zerovisor.kernel-release"
#: Annotation that turns strace on for a container ("true").
STRACE_ANNOTATION = "dev.zerovisor.strace"
#: How many exec'd processes whose status was handed out a container remembers, for a caller
#: whose answer was lost (its controller died) and who asks again.
REAPED_KEPT = 64


@dataclass(slots=True)
class ExecProcess:
    """A process exec'd into a container, until its exit status is handed out (reaped)."""

    #: Its pid on the host.
    host_pid: int
    #: Its exit code once it has exited.
    exit_code: int | None = None
    #: The token of the request that started it (ExecArgs.token).
    token: str = ""


@dataclass(slots=True)
class Container:
    """One container as the sentry sees it."""

    #: Container id.
    cid: str
    #: The spec it was created from.
    spec: ContainerSpec
    #: created, running, paused or stopped.
    status: str
    #: Host pid of the init.
    pid: int
    #: Exit code once stopped.
    exit_code: int | None = None
    #: When the start request arrived and completed, once started.
    started: StartRecord | None = None
    #: Log every trapped syscall (runsc --strace).
    strace: bool = False
    #: The token of the create request that made it (CreateContainerArgs.token).
    token: str = ""
    #: Trapped syscalls answered, by family; shared with the container's listeners.
    syscalls: dict[str, int] = field(default_factory=dict)
    #: The container as its trapped syscalls see it, once its first listener is served.
    view: Watched | None = None
    #: Exec'd processes by pid in the container, until their status is handed out (reaped).
    execs: dict[int, ExecProcess] = field(default_factory=dict)
    #: The last REAPED_KEPT exec'd processes reaped, by pid, oldest first.
    reaped: dict[int, ExecProcess] = field(default_factory=dict)
    #: Restored paused: its tasks are nudged (restore.py) once it is resumed.
    nudge_on_resume: bool = False

    def require(self, action: str, *allowed: str) -> None:
        """Refuse action unless the container is in one of the allowed statuses."""
        if self.status not in allowed:
            raise ConflictError(f"cannot {action} container {self.cid!r} in state {self.status}")

    def snapshot(self) -> ContainerStatus:
        """The wire view of this container."""
        return ContainerStatus(
            cid=self.cid, status=self.status, pid=self.pid, exit_code=self.exit_code, started=self.started
        )


class Kernel:
    """Every container of this sentry, by id."""

    def __init__(self, run_dir: RunDir, publisher: Publisher) -> None:
        self.run_dir = run_dir
        self.publisher = publisher
        self.platform = ServiceChannel(run_dir.socket_path("platform"), PLATFORM_TIMEOUT)
        #: Attach and Detach; the syscalls' own gofer calls go through the supervisor.
        self.gofer = ServiceChannel(run_dir.socket_path("gofer"), GOFER_TIMEOUT)
        #: Serves the trapped syscalls (set by the server's setup).
        self.supervisor: Supervisor | None = None
        self.containers: dict[str, Container] = {}
        #: containers was rebuilt from the platform (restore.py); until then nothing about a
        #: container can be answered.
        self.restored = False
        #: Rebuilds containers from the platform (restore.py, set by the server's setup).
        self.rebuild: Callable[[], None] = lambda: None
        #: Stops the service's loop (set by the server's setup).
        self.shutdown: Callable[[], None] = lambda: None
        #: Host pids of exec'd processes reaped here that the platform still keeps, by container
        #: (send_reaps tells it, after the status went out).
        self.reaps_to_send: dict[str, list[int]] = {}

    @property
    def table(self) -> dict[str, Container]:
        """The containers by id, once rebuilt from the platform (ServiceUnavailable until then)."""
        if not self.restored:
            self.rebuild()
        return self.containers

    def get(self, cid: str) -> Container:
        """The container named cid."""
        ctr = self.table.get(cid)
        if ctr is None:
            raise NotFound(f"container {cid!r} does not exist")
        return ctr

    def attach_files(self, cid: str, spec: ContainerSpec, held_ok: bool = False) -> bool:
        """Have the gofer open cid's mounts (Gofer.Attach) and, with directfs, take a dup of
        each to serve its file calls here. With held_ok, mounts the gofer holds already stay
        (False is returned); else that is a ConflictError, as are the gofer's other errors."""
        args = attach_args(cid, spec)
        try:
            self.gofer.call("Gofer.Attach", args)
            attached = True
        except ZerovisorError as e:
            if not (held_ok and has_code(e, ErrCode.CONFLICT)):
                raise
            attached = False
        direct = self.supervisor.direct if self.supervisor is not None else None
        if direct is not None:
            try:
                _, fds = self.gofer.call_with_fds("Gofer.MountFds", MountFdsArgs(cid=cid), MountFdsResult)
                direct.adopt(args, fds)
            except ZerovisorError as e:
                # Its file calls go to the gofer instead: slower, not wrong.
                log.warning("directfs for %r: %s", cid, e)
        return attached

    def detach_files(self, cid: str) -> None:
        """Close cid's mounts here and at the gofer (one that restarted has none: nothing to undo)."""
        if self.supervisor is not None and self.supervisor.direct is not None:
            self.supervisor.direct.drop(cid)
        try:
            self.gofer.call("Gofer.Detach", DetachArgs(cid=cid))
        except ZerovisorError as e:
            log.warning("detaching the mounts of %r: %s", cid, e)

    def watch(self, ctr: Container, fds: list[int]) -> None:
        """Serve the one listener in fds (taken) for a task tree of ctr: its init's, or an
        exec'd process's."""
        if len(fds) != 1:
            fdpass.close_all(fds)
            raise InvalidArgument(f"the platform sent {len(fds)} listeners for {ctr.cid!r}, want 1")
        listener = Listener(fds[0])
        if self.supervisor is None:
            listener.close()
            raise ServiceUnavailable("the sentry's supervisor is not running")
        if ctr.view is None:
            spec = ctr.spec
            kept = self.run_dir.hostname_path(ctr.cid)
            ctr.view = Watched(
                cid=ctr.cid,
                mounts=MountTable(spec),
                # A hostname the container set survives a sentry restart.
                hostname=kept.read_text() if kept.exists() else spec.hostname or "",
                hostname_file=kept,
                release=spec.annotations.get(KERNEL_RELEASE_ANNOTATION, DEFAULT_KERNEL_RELEASE),
                memory_limit=spec.resources.memory_limit,
                strace=ctr.strace,
                counts=ctr.syscalls,
            )
        self.supervisor.watch(listener, ctr.view)

    def sweep(self) -> None:
        """Close the memory fds of tasks that have exited (a container was destroyed)."""
        if self.supervisor is not None:
            self.supervisor.mem.sweep()

    def unwatch(self, cid: str) -> None:
        """Stop serving (and close) every listener of container cid."""
        if self.supervisor is not None:
            self.supervisor.unwatch_container(cid)

    def publish(self, ctr: Container, event: str) -> None:
        """Publish container.<cid>.<event> with the container's status."""
        self.publisher.publish(f"container.{ctr.cid}.{event}", event, ctr.snapshot())

    def on_task_exit(self, event: TaskExit, publish: bool = True) -> None:
        """A task exited (a platform event, or an exit record it kept): an init's exit stops its
        container. The same exit may come more than once; it counts once."""
        if self.supervisor is not None:
            self.supervisor.mem.forget(event.pid)
        ctr = self.containers.get(event.cid)
        if ctr is None:
            return
        if not event.init:
            self._exec_exited(ctr, event, publish)
            return
        if ctr.pid != event.pid or ctr.status == STOPPED:
            return
        ctr.status = STOPPED
        ctr.exit_code = event.exit_code
        self.sweep()  # its pid namespace went with its init
        log.info("container %r stopped with exit code %d", ctr.cid, event.exit_code)
        if publish:
            self.publish(ctr, "exit")

    def _exec_exited(self, ctr: Container, event: TaskExit, publish: bool) -> None:
        """An exec'd process exited: keep its status for Proc.ExitStatus, and say so."""
        pid = next((pid for pid, p in ctr.execs.items() if p.host_pid == event.pid), event.ns_pid)
        if not pid:
            return
        if pid not in ctr.execs and (gone := ctr.reaped.get(pid)) is not None and gone.host_pid == event.pid:
            return  # reported again before the platform heard of the reap
        process = ctr.execs.setdefault(pid, ExecProcess(host_pid=event.pid))
        if process.exit_code is not None:
            return
        process.exit_code = event.exit_code
        log.debug("container %r: exec'd process %d exited with %d", ctr.cid, pid, event.exit_code)
        if publish:
            exit_ = ProcessExit(pid=pid, exited=True, exit_code=event.exit_code)
            self.publisher.publish(f"process.{ctr.cid}.exit", "exit", {"cid": ctr.cid, **wire.to_wire(exit_)})

    def reap(self, ctr: Container, pid: int) -> None:
        """The status of ctr's exited process pid was handed out: forget it but for the last
        REAPED_KEPT, and have the platform forget it (send_reaps)."""
        process = ctr.execs.pop(pid)
        ctr.reaped.pop(pid, None)  # a pid used again goes to the end
        ctr.reaped[pid] = process
        if len(ctr.reaped) > REAPED_KEPT:
            del ctr.reaped[next(iter(ctr.reaped))]
        self.reaps_to_send.setdefault(ctr.cid, []).append(process.host_pid)

    def send_reaps(self) -> None:
        """Tell the platform which exec'd processes were reaped, so that it keeps no record of
        them; while it is down they wait for the next call."""
        while self.reaps_to_send:
            cid, host_pids = next(iter(self.reaps_to_send.items()))
            try:
                self.platform.call("Platform.Reap", ReapArgs(cid=cid, host_pids=host_pids))
            except ServiceUnavailable:
                return
            except ZerovisorError as e:
                # Kept at the platform until the container is destroyed: more memory, not wrong.
                log.warning("reaping exec'd processes %s of %r: %s", host_pids, cid, e)
            del self.reaps_to_send[cid]
