"""Schemas of the Platform domain (sentry -> platform) and of the fork server's protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.messages.spec import ContainerSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchArgs:
    """Arguments to Platform.Launch and ForkServer.Launch: create a container's init, stopped before exec."""

    #: Container id.
    cid: str
    #: The validated container spec.
    spec: ContainerSpec
    #: The sentry logs every trapped syscall of the container (kept for a restarted sentry).
    strace: bool = False
    #: The create request's token (kept for a restarted sentry, which a repeated request asks).
    token: str = ""
    #: stdio (0, 1, 2) and preserved fds (3, 4, ...), sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchResult:
    """Result of Launch."""

    #: Host pid of the container's init.
    pid: int
    #: The pty master when the process has a terminal, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseResult:
    """Result of Release (which takes the sentry's StartContainerArgs).

    For a trapping init it returns once the init has loaded its filter, before its exec,
    which waits for the listener's holder to answer it; a later exec failure is only logged
    and shows as exit status 127. Otherwise it returns once the init has exec'd.
    """

    #: Host pid of the container's init.
    pid: int
    #: The init's seccomp listener when it traps (the receiver's), else empty; sent as
    #: SCM_RIGHTS. The platform keeps its own copy until the container is destroyed.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenersArgs:
    """Arguments to Listeners: the seccomp listeners of live containers (for a restarted sentry)."""

    #: Only these containers; empty means every container that has one.
    cids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenersResult:
    """Result of Listeners: fds[i] is the listener of container cids[i]."""

    #: Container ids, in the order of fds.
    cids: list[str]
    #: One listener per container (the receiver's), sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRef:
    """Arguments naming one container (Freeze, Thaw, Destroy, Stats, Spec).

    Release takes the sentry's StartContainerArgs (common.messages.lifecycle) as they are.
    """

    #: Container id.
    cid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalArgs:
    """Arguments to Platform.Signal."""

    #: Container id.
    cid: str
    #: Signal number.
    signo: int
    #: Every process of the container (frozen while signalled), not only its init.
    all: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalProcessArgs:
    """Arguments to Platform.SignalProcess: a signal to one process of a container."""

    #: Container id.
    cid: str
    #: The process's host pid; it must belong to the container.
    host_pid: int
    #: Signal number.
    signo: int
    #: Signal the foreground process group of the process's terminal instead, if it has one
    #: in the container.
    foreground: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRef:
    """Arguments naming one exec'd process by host pid (Platform.ReleaseConsole)."""

    #: Container id.
    cid: str
    #: The process's host pid.
    host_pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapArgs:
    """Arguments to Reap: exec'd processes whose exit status was handed out, to forget."""

    #: Container id.
    cid: str
    #: Host pids of its exec'd processes that exited and were waited for.
    host_pids: list[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecResult:
    """Result of Spec: the spec a container was launched with."""

    #: Its spec.
    spec: ContainerSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PidsResult:
    """Host pids of a container's processes."""

    #: Sorted host pids.
    pids: list[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsResult:
    """A container's cgroup counters."""

    #: CPU time used, nanoseconds.
    cpu_usage_ns: int
    #: Memory in use, bytes.
    memory_usage: int
    #: Memory limit, bytes, if any.
    memory_limit: int | None
    #: Processes in the container.
    pids_current: int
    #: Process limit, if any.
    pids_limit: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskExit:
    """An exit the fork server reaped: the event published on the platform's event socket."""

    #: Container id.
    cid: str
    #: Host pid that exited.
    pid: int
    #: True when pid is the container's init.
    init: bool
    #: Exit code as a shell reports it: the status, or 128 + the signal that killed it.
    exit_code: int
    #: Its pid in the container's pid namespace (an exec'd process; 0 for the init).
    ns_pid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TasksArgs:
    """Arguments to Tasks (none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecTask:
    """A process exec'd into a container, as the fork server knows it."""

    #: Its container.
    cid: str
    #: Its host pid.
    host_pid: int
    #: Its pid in the container's pid namespace.
    ns_pid: int
    #: The token of the request that started it (ExecArgs.token).
    token: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerTasks:
    """One container the fork server holds, as a restarted sentry rebuilds it (with its spec,
    which Spec answers one container at a time: specs may be up to a whole message each)."""

    #: Container id.
    cid: str
    #: Whether the sentry logs its trapped syscalls.
    strace: bool
    #: The token of the create request that launched it (LaunchArgs.token).
    token: str
    #: Host pid of its init (alive, or in exits once reaped).
    init_pid: int
    #: The init was released to exec its program (the container was started).
    released: bool
    #: Its cgroup is frozen (the container is paused).
    frozen: bool
    #: Every process exec'd into it and not yet reaped (those that exited have their exit in
    #: TasksResult.exits).
    execs: list[ExecTask] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class TasksResult:
    """Result of Tasks: everything the fork server holds, for a platform or sentry that restarted."""

    #: Every container with a cgroup, launched and not yet destroyed.
    containers: list[ContainerTasks]
    #: Every exit reaped and not yet forgotten (its container not destroyed, and for an exec'd
    #: process, its status not yet waited for: Reap).
    exits: list[TaskExit]
