"""HeldConsoles: the fork server's copy of an exec'd process's pty master, until its CLI has one.

The master of `exec --tty` travels fork server -> platform -> sentry -> controller -> CLI, each
hop closing its copy once it has sent it on. A service that dies on the way loses the reply, and
with it every copy: the terminal hangs up and the process gets SIGHUP before the CLI, which sends
the same request again, could ever hold it. So the fork server keeps a dup until the CLI says it
has the master (ReleaseConsole). Kept longer, the process would never see its terminal hang up
when the CLI goes, so a dup is also dropped when the process is reaped, and at the latest after
HOLD seconds, by which time the CLI has given up sending the request again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: How long a master is kept for a CLI that never says it has it (longer than the CLI goes on
#: sending a request again: services.controller.commands.base.RETRY_TIMEOUT plus one call).
HOLD = 90.0


@dataclass(slots=True)
class _Held:
    #: Our dup of the master; closed by HeldConsoles.
    fd: int
    #: time.monotonic() after which it is dropped.
    until: float


class HeldConsoles:
    """Dups of pty masters by the host pid of their exec'd process. Owns (and closes) each fd."""

    def __init__(self, hold: float = HOLD) -> None:
        self._hold = hold
        self._held: dict[int, _Held] = {}

    def keep(self, host_pid: int, master: int) -> None:
        """Keep a dup of master (the caller keeps master) for host_pid."""
        self.release(host_pid)
        self._held[host_pid] = _Held(os.dup(master), time.monotonic() + self._hold)

    def dup(self, host_pid: int) -> int | None:
        """A new dup of host_pid's master (the caller's), or None if none is kept."""
        held = self._held.get(host_pid)
        return os.dup(held.fd) if held is not None else None

    def release(self, host_pid: int) -> None:
        """Close host_pid's master, if kept: its CLI has one, or the process is gone."""
        held = self._held.pop(host_pid, None)
        if held is not None:
            os.close(held.fd)

    def expire(self, now: float) -> None:
        """Close every master kept past its time."""
        for pid in [pid for pid, held in self._held.items() if held.until <= now]:
            self.release(pid)

    def __contains__(self, host_pid: object) -> bool:
        return host_pid in self._held

    def __len__(self) -> int:
        return len(self._held)
