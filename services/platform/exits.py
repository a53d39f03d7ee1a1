"""ExitLog: the exits the fork server reaped, kept until their container is destroyed.

An exit is written durably to ``$RUN/exits/<pid>.json`` before anyone hears of it, and stays
there (and in memory) until Destroy of its container: like a zombie until its parent reaps it.
So an exit that happened while the platform or the sentry was down is still there for the one
that comes back (``ForkServer.Tasks``), and a fork server that was itself restarted reads the
records of its predecessor.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common import wire
from common.errors import ZerovisorError
from common.messages.platform import TaskExit

log = logging.getLogger(__name__)


class ExitLog:
    """Exit records by host pid, in memory and under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, exist_ok=True)
        self._exits: dict[int, TaskExit] = {}
        for path in directory.iterdir():
            if path.suffix == ".json":
                self._load(path)
            elif path.suffix == ".tmp":
                path.unlink(missing_ok=True)  # a write that never reached os.replace

    def _load(self, path: Path) -> None:
        try:
            event = wire.from_wire(TaskExit, json.loads(path.read_text()))
        except (OSError, ValueError, ZerovisorError) as e:
            log.warning("ignoring unreadable exit record %s: %s", path, e)
            return
        self._exits[event.pid] = event

    def record(self, event: TaskExit) -> None:
        """Write event durably (file, then directory) and keep it."""
        path = self.directory / f"{event.pid}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(wire.to_wire(event), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._exits[event.pid] = event

    def all(self) -> list[TaskExit]:
        """Every exit still kept, oldest pid first."""
        return [self._exits[pid] for pid in sorted(self._exits)]

    def forget(self, cid: str) -> None:
        """Drop the exits of container cid (it is destroyed: nobody will ask again)."""
        for pid in [pid for pid, e in self._exits.items() if e.cid == cid]:
            del self._exits[pid]
            (self.directory / f"{pid}.json").unlink(missing_ok=True)
