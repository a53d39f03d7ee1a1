"""Schemas of the sentry's Lifecycle domain (controller -> sentry), after gVisor's control/lifecycle.go."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import InvalidArgument
from common.limits import RLIMITS
from common.messages.containers import StartRecord
from common.messages.platform import StatsResult
from common.messages.spec import ContainerSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateContainerArgs:
    """Arguments to Lifecycle.CreateContainer."""

    #: Container id.
    cid: str
    #: The validated container spec.
    spec: ContainerSpec
    #: Log every trapped syscall of the container (runsc --strace).
    strace: bool = False
    #: The create request's token (CreateArgs.token): a repeated request finds its container.
    token: str = ""
    #: stdio and preserved fds for the init, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """One rlimit value (gVisor's limits.Limit)."""

    #: Soft limit.
    cur: int
    #: Hard limit.
    max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartContainerArgs:
    """Arguments to Lifecycle.StartContainer: the init's program (gVisor's StartContainerArgs).

    secret_envv is left out of repr(), so logging the arguments never shows it.
    """

    #: Container to start.
    container_id: str
    #: Program to exec; "" means argv[0].
    filename: str = ""
    #: argv, argv[0] included.
    argv: list[str]
    #: Environment as KEY=VALUE strings.
    envv: list[str] = field(default_factory=list)
    #: More KEY=VALUE strings, placed after envv; never logged.
    secret_envv: list[str] = field(default_factory=list, repr=False)
    #: Working directory inside the container.
    wd: str = "/"
    #: User id inside the container.
    uid: int = 0
    #: Group id inside the container.
    gid: int = 0
    #: rlimits by name ("RLIMIT_NOFILE"); an unknown name is an error.
    limits: dict[str, Limit] = field(default_factory=dict)
    #: Set HOME from the container's /etc/passwd when the environment has none.
    resolve_home: bool = False
    #: Resolve filename: absolute as is, with a slash from wd, else through PATH.
    resolve_binary_path: bool = False
    #: Guest fd numbers of the donated files, one per entry of fds.
    donated_fds: list[int] = field(default_factory=list)
    #: The donated files, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})

    def check(self) -> None:
        """Refuse, with InvalidArgument, what no init can run (as gVisor's StartContainer does)."""
        if not self.argv:
            raise InvalidArgument(f"container {self.container_id!r}: argv is empty")
        unknown = sorted(name for name in self.limits if name not in RLIMITS)
        if unknown:
            raise InvalidArgument(f"unknown limit {unknown[0]!r}")
        if len(self.fds) != len(self.donated_fds):
            raise InvalidArgument(
                "files and donated fds must have the same number of elements"
                f" ({len(self.fds)} != {len(self.donated_fds)})"
            )
        if any(fd < 0 for fd in self.donated_fds) or len(set(self.donated_fds)) != len(self.donated_fds):
            raise InvalidArgument(f"donated fds must be distinct and not negative: {self.donated_fds}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerArgs:
    """Arguments naming one container."""

    #: Container id.
    cid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalContainerArgs:
    """Arguments to Lifecycle.SignalContainer."""

    #: Container id.
    cid: str
    #: Signal number.
    signo: int
    #: Signal every process of the container, not only its init.
    all: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStatus:
    """What the sentry knows of one container."""

    #: Container id.
    cid: str
    #: "created", "running", "paused" or "stopped".
    status: str
    #: Host pid of the init (0 once reaped and unknown).
    pid: int
    #: Exit code once stopped (128 + signal when killed).
    exit_code: int | None = None
    #: The start request's timestamps, once started.
    started: StartRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateContainerResult:
    """Result of Lifecycle.CreateContainer."""

    #: The new container.
    status: ContainerStatus
    #: The pty master when the process has a terminal, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerList:
    """Every container the sentry knows."""

    #: One entry per container.
    containers: list[ContainerStatus]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteContainerArgs:
    """Arguments to Lifecycle.DeleteContainer."""

    #: Container id.
    cid: str
    #: Kill a container that is not stopped instead of refusing.
    force: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ListContainersArgs:
    """Arguments to Lifecycle.ListContainers (none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStats:
    """Result of Lifecycle.Stats: the cgroup's counters and the sentry's own."""

    #: cgroup counters from the platform.
    cgroup: StatsResult
    #: Trapped syscalls answered by the sentry, by family (open, path, system, exec).
    syscalls: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitStatus:
    """Result of Lifecycle.GetExitStatus."""

    #: Exit code (128 + signal when killed).
    exit_code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningResult:
    """Result of Lifecycle.IsContainerRunning."""

    #: True while the container is running (started, not paused, not stopped).
    running: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownArgs:
    """Arguments to Lifecycle.Shutdown (none)."""
