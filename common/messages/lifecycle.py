"""Schemas of the sentry's Lifecycle domain (controller -> sentry), after gVisor's control/lifecycle.go."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.messages.spec import ContainerSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateContainerArgs:
    """Arguments to Lifecycle.CreateContainer."""

    #: Container id.
    cid: str
    #: The validated container spec.
    spec: ContainerSpec
    #: stdio and preserved fds for the init, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


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
