"""systemd's readiness protocol (sd_notify), without libsystemd.

Services call ``notify("READY=1")`` once they serve. Under systemd (``Type=notify``) that
completes the start job; `controller up` sets NOTIFY_SOCKET to a socket of its own and waits
for the same message, so both paths run the same code.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send state to $NOTIFY_SOCKET; False when there is none. Never raises on a dead listener."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), addr)
        except OSError:
            return False
    return True
