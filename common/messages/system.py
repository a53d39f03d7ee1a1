"""Schemas of the System domain, which every service answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class PingArgs:
    """Arguments to System.Ping."""

    #: Host fds sent along on the fd channel; the server closes them after the call.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    """Result of System.Ping."""

    #: Which service answered: controller, sentry, gofer or platform.
    service: str
    #: Host pid of the answering process.
    pid: int
    #: Number of file descriptors that came with the request.
    fds_received: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusArgs:
    """Arguments to System.Status (none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusResult:
    """Result of System.Status: what `controller status` shows for one service."""

    #: Which service answered.
    service: str
    #: Host pid of the service process.
    pid: int
    #: zerovisor version the service runs.
    version: str
    #: Seconds since the service started.
    uptime: float
    #: Wall-clock start time, seconds since the epoch.
    started_at: float
    #: Requests answered since start, on both channels.
    requests: int
    #: Requests answered with an error since start.
    errors: int
    #: The run directory the service serves.
    run_dir: str
    #: What the service itself reports (the sentry: trapped syscalls per container and family).
    details: dict[str, Any] = field(default_factory=dict)
    #: Times the service was started again in this run directory since the first (`up` or the first command).
    restarts: int = 0
    #: What this instance took over from the one before it, by kind (containers, listeners, ...).
    recovered: dict[str, int] = field(default_factory=dict)
