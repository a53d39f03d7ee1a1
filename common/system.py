"""The System domain: the calls every service answers about itself."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import common
from common.messages.system import PingArgs, PingResult, StatusArgs, StatusResult
from common.rpc import Dispatcher


class System:
    """System.Ping and System.Status for one service process."""

    domain = "System"

    def __init__(self, service: str, run_dir: str, dispatcher: Dispatcher) -> None:
        self._service = service
        self._run_dir = run_dir
        self._dispatcher = dispatcher
        self._started_wall = time.time()
        self._started = time.monotonic()
        #: What the service adds to its status (set by its set-up).
        self.details: Callable[[], dict[str, Any]] = dict

    def ping(self, args: PingArgs) -> PingResult:
        """Answer if the main loop is alive; count (and let the dispatcher close) any fds sent."""
        return PingResult(service=self._service, pid=os.getpid(), fds_received=len(args.fds))

    def status(self, args: StatusArgs) -> StatusResult:
        """Report pid, version, uptime and request counters."""
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
        )
