"""ExitLog: the exits the fork server reaped, kept until nobody will ask for them again.

An exit is written durably to ``$RUN/exits/<pid>.json`` before anyone hears of it, and stays
there (and in memory), like a zombie until its parent reaps it: an init's until Destroy of its
container, an exec'd process's until its status was waited for (``reap``) or Destroy.
The file is reserved when the task is created (``reserve``), so that a full disk refuses a new
container or exec with a clear error instead of losing an exit later: the exit is then written
over the reservation in place, which needs no new space.
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

#: Size of every record file: a reservation is padded to it, and an exit always fits in it.
RECORD_SIZE = 512


class ExitLog:
    """Exit records by host pid, in memory and under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, exist_ok=True)
        self._exits: dict[int, TaskExit] = {}
        for path in directory.glob("*.json"):
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
            if isinstance(raw, dict) and raw.get("reserved"):
                return  # a task that had not exited when the last fork server died
            event = wire.from_wire(TaskExit, raw)
        except (OSError, ValueError, ZerovisorError) as e:
            log.warning("ignoring unreadable exit record %s: %s", path, e)
            return
        self._exits[event.pid] = event

    def _path(self, pid: int) -> Path:
        return self.directory / f"{pid}.json"

    def reserve(self, pid: int, cid: str) -> None:
        """Make room for the exit of task pid now: OSError (ENOSPC) if there is none."""
        path = self._path(pid)
        try:
            self._write(path, {"reserved": True, "cid": cid}, os.O_CREAT | os.O_TRUNC)
        except OSError:
            path.unlink(missing_ok=True)
            raise

    def record(self, event: TaskExit) -> None:
        """Write event durably over its reservation (or a new file) and keep it; kept in memory
        even if the disk refuses it."""
        self._exits[event.pid] = event
        try:
            self._write(self._path(event.pid), wire.to_wire(event), os.O_CREAT)
        except OSError as e:
            log.error("the exit of %d (%s) is not durable: %s", event.pid, event.cid, e)

    def _write(self, path: Path, value: object, flags: int) -> None:
        """value as JSON padded to RECORD_SIZE, written in place and synced with its directory."""
        data = json.dumps(value).encode().ljust(RECORD_SIZE)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags, 0o600)
        try:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def all(self) -> list[TaskExit]:
        """Every exit still kept, oldest pid first."""
        return [self._exits[pid] for pid in sorted(self._exits)]

    def reap(self, cid: str, pids: list[int]) -> list[int]:
        """Drop the exits of the exec'd processes of cid among pids (their status was waited
        for); which were dropped. An init's exit, and a task that has not exited, stay."""
        reaped = []
        for pid in pids:
            event = self._exits.get(pid)
            if event is None or event.cid != cid or event.init:
                continue
            self._drop(pid)
            reaped.append(pid)
        return reaped

    def forget(self, cid: str, pids: list[int]) -> None:
        """Drop the exits and reservations of container cid, whose tasks had pids (it is
        destroyed: nobody will ask again)."""
        for pid in {*pids, *(pid for pid, e in self._exits.items() if e.cid == cid)}:
            self._drop(pid)

    def _drop(self, pid: int) -> None:
        """Forget pid's exit or reservation, in memory and on disk."""
        self._exits.pop(pid, None)
        # Not synced: a record that a crash brings back goes with its container at Destroy.
        self._path(pid).unlink(missing_ok=True)
