"""The System domain: the calls every service answers about itself."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import common
from common.messages.system import PingArgs, PingResult, StatusArgs, StatusResult
from common.rpc import Dispatcher
from common.rundir import RunDir

log = logging.getLogger(__name__)


def count_start(run_dir: RunDir, service: str) -> int:
    """Count one more start of service in run_dir; return the starts so far, this one included.

    The caller must hold the service's InstanceLock: the lock, not the file, serialises the
    read-modify-write. The new count replaces the file whole (os.replace), so a crash leaves
    the old count or the new one, never half of either.
    """
    path = run_dir.starts_path(service)
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = "0"
    try:
        before = int(text)
    except ValueError:
        # A count is not worth refusing to start for: begin again.
        log.warning("%s holds %r, not a count; counting from zero", path, text[:32])
        before = 0
    tmp = path.with_name(f"{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{before + 1}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return before + 1


class System:
    """System.Ping and System.Status for one service process."""

    domain = "System"

    def __init__(self, service: str, run_dir: str, dispatcher: Dispatcher, restarts: int = 0) -> None:
        self._service = service
        self._run_dir = run_dir
        self._dispatcher = dispatcher
        self._started_wall = time.time()
        self._started = time.monotonic()
        #: What the service adds to its status (set by its set-up).
        self.details: Callable[[], dict[str, Any]] = dict
        #: Starts of this service in its run directory before this one (see count_start).
        self.restarts: int = restarts
        #: What this instance took over from the one before it, by kind (set by the set-up).
        self.recovered: dict[str, int] = {}

    def ping(self, args: PingArgs) -> PingResult:
        """Answer if the main loop is alive; count (and let the dispatcher close) any fds sent."""
        return PingResult(service=self._service, pid=os.getpid(), fds_received=len(args.fds))

    def status(self, args: StatusArgs) -> StatusResult:
        """Report pid, version, uptime, restarts, what was recovered and request counters."""
        return StatusResult(
            service=self._service,
            pid=os.getpid(),
            version=common.__version__,
            uptime=time.monotonic() - self._started,
            started_at=self._started_wall,
            requests=self._dispatcher.requests,
            errors=self._dispatcher.errors,
            run_dir=self._run_dir,
            details=self.details(),
            restarts=self.restarts,
            # A snapshot, not the live dict that set-up code keeps adding to.
            recovered=dict(self.recovered),
        )
