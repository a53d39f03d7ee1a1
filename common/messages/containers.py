"""Schemas of the controller's Containers domain: the public API the CLI calls."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateArgs:
    """Arguments to Containers.Create."""

    #: Container id (runc's rules).
    id: str
    #: Bundle directory (absolute).
    bundle: str
    #: The caller was given a --console-socket for the terminal's pty master.
    console_socket: bool = False
    #: The caller stays in the foreground and relays a terminal itself (`run` without -d).
    foreground: bool = False
    #: Log every trapped syscall of the container in the sentry's log (runsc --strace).
    strace: bool = False
    #: Chosen by the caller for this create: a request sent again with it finds the container
    #: the first one made instead of being refused as a duplicate ("" for none).
    token: str = ""
    #: stdio and preserved fds for the init, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class IdArgs:
    """Arguments naming one container."""

    #: Container id.
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KillArgs:
    """Arguments to Containers.Kill."""

    #: Container id.
    id: str
    #: Signal number.
    signo: int
    #: Signal every process of the container.
    all: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteArgs:
    """Arguments to Containers.Delete."""

    #: Container id.
    id: str
    #: Kill a running container first; succeed for an unknown id.
    force: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ListArgs:
    """Arguments to Containers.List (none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRecord:
    """When a start request reached the sentry and when it was done (gVisor's ContainerStartedEvent)."""

    #: Time the request was received, RFC 3339 UTC.
    request_received: str
    #: Time the program was running, RFC 3339 UTC.
    request_completed: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerState:
    """The OCI state of a container, plus its exit status."""

    #: OCI version of the bundle's config.
    oci_version: str
    #: Container id.
    id: str
    #: creating, created, running, paused or stopped.
    status: str
    #: Host pid of the init (0 when stopped).
    pid: int
    #: Bundle directory.
    bundle: str
    #: Root filesystem directory.
    rootfs: str
    #: Creation time, RFC 3339.
    created: str
    #: Annotations from the config.
    annotations: dict[str, str]
    #: User that created the container.
    owner: str
    #: Exit code once stopped (128 + signal when killed).
    exit_status: int | None = None
    #: When the start request reached the sentry and completed, once started.
    started: StartRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateResult:
    """Result of Containers.Create."""

    #: The new container's state.
    state: ContainerState
    #: The pty master when the process has a terminal, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStates:
    """Result of Containers.List."""

    #: One entry per container, oldest first.
    containers: list[ContainerState]
