"""AsyncGoferChannel: the sentry's non-blocking calls to the gofer's fd channel.

A trapped file syscall must never stall the others: the sentry sends the gofer request, goes
back to its loop (other listeners, its ZMQ socket) and finishes the syscall when the reply
arrives. This module owns the one SOCK_SEQPACKET connection to the gofer, the table of calls in
flight, and their deadlines. A gofer that is down or restarting does not fail a call at once:
a call not yet sent, or one whose repetition does the same (see ``retryable``), is sent again
once the gofer is back (its mounts re-attached first, by on_connect); a call that may have
taken effect, and any call not answered by its deadline, completes with EIO. None waits longer.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import fdpass, wire
from common.client import unwrap
from common.errors import ErrCode, ZerovisorError, error_from_wire

log = logging.getLogger(__name__)

#: Seconds a file call may take before the program gets EIO.
CALL_TIMEOUT = 10.0

#: on_done(result map or None, fds the callee now owns, errno or 0).
Done = Callable[[dict[str, Any] | None, list[int], int], None]

#: Calls whose repetition after a lost reply leaves the same result as one (an Open that may
#: create, without O_EXCL, is one too: see retryable).
_REPEATABLE = frozenset(
    {
        "Gofer.Access",
        "Gofer.Chmod",
        "Gofer.Chown",
        "Gofer.Truncate",
        "Gofer.Utimens",
        "Gofer.SetXattr",
    }
)


def retryable(method: str, args: Any) -> bool:
    """Whether method may be sent again when its first sending's fate is unknown."""
    if method == "Gofer.Open":
        return not getattr(args, "flags", 0) & os.O_EXCL
    return method in _REPEATABLE


@dataclass(slots=True)
class PendingCall:
    """A call sent or waiting to be sent."""

    #: When it fails with EIO.
    deadline: float
    #: Its completion.
    on_done: Done
    #: The request frame.
    frame: bytes
    #: It may be sent again after the connection was lost with it in flight.
    retry: bool
    #: It was sent on the current connection.
    sent: bool = False


class AsyncGoferChannel:
    """Calls to the gofer whose replies are handled by the sentry's loop."""

    def __init__(
        self, path: str, add_reader: Callable[[int, Callable[[int], None]], None], remove_reader: Callable[[int], None]
    ) -> None:
        self.path = path
        self._add_reader = add_reader
        self._remove_reader = remove_reader
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        #: id -> the call, in send order.
        self._pending: dict[int, PendingCall] = {}
        #: Runs after each new connection, before any call is sent on it (the sentry re-attaches
        #: the mounts of a restarted gofer there).
        self.on_connect: Callable[[], object] = lambda: None
        #: Runs when the gofer answers that it has no such container: it restarted and lost
        #: its mounts, so the sentry attaches them again (and the call is sent again).
        self.on_detached: Callable[[], object] = lambda: None

    def call(self, method: str, args: Any, on_done: Done) -> None:
        """Send one request; on_done runs from the loop with the outcome (never from here)."""
        rid = next(self._ids)
        frame = wire.encode_request(rid, method, wire.to_wire(args))
        self._pending[rid] = PendingCall(time.monotonic() + CALL_TIMEOUT, on_done, frame, retryable(method, args))
        self._flush()

    def tick(self) -> None:
        """Fail the calls whose deadline passed with EIO; send the others if the gofer is back."""
        if not self._pending:
            return
        now = time.monotonic()
        for rid in [rid for rid, p in self._pending.items() if p.deadline <= now]:
            self._pending.pop(rid).on_done(None, [], errno.EIO)
        if any(not p.sent for p in self._pending.values()):
            self._flush()

    def close(self) -> None:
        """Fail every call in flight and drop the connection."""
        self._lost()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.on_done(None, [], errno.EIO)

    def _flush(self) -> None:
        """Send every call not yet sent; with the gofer down they wait for the next tick."""
        try:
            sock = self._connect()
        except (OSError, ZerovisorError) as e:
            log.debug("gofer: %s", e)
            return
        for p in self._pending.values():
            if p.sent:
                continue
            try:
                fdpass.send_frame(sock, p.frame)
            except (OSError, ZerovisorError) as e:
                log.debug("gofer: %s", e)
                self._lost()
                return
            p.sent = True

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.path)
                self.on_connect()
            except BaseException:
                sock.close()
                raise
            sock.setblocking(False)
            self._sock = sock
            self._add_reader(sock.fileno(), self._on_readable)
        return self._sock

    def _on_readable(self, _fd: int) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                frame, fds = fdpass.recv_frame(sock)
            except BlockingIOError:
                return
            except (OSError, ZerovisorError) as e:
                log.debug("gofer connection: %s", e)
                self._lost()
                return
            if not frame and not fds:
                self._lost()  # the gofer went away
                return
            self._complete(frame, fds)

    def _complete(self, frame: bytes, fds: list[int]) -> None:
        try:
            reply = unwrap(frame, "gofer reply")
        except ZerovisorError as e:
            log.debug("%s", e)
            fdpass.close_all(fds)
            return
        rid = reply.id
        entry = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if entry is None or not isinstance(rid, int):
            fdpass.close_all(fds)  # a reply to a call that already timed out
            return
        on_done = entry.on_done
        if reply.ok:
            on_done(reply.result or {}, fds, 0)
            return
        fdpass.close_all(fds)
        err = error_from_wire(reply.error)
        if err.remote_code == ErrCode.NOT_FOUND and err.errno is None:
            # "Not attached": the gofer did nothing. Sent again on the next tick, mounts back.
            self.on_detached()
            entry.sent = False
            self._pending[rid] = entry
            return
        on_done(None, [], err.errno or errno.EIO)

    def _lost(self) -> None:
        """The connection is gone: calls that may have taken effect fail with EIO; the others
        are sent again on the next connection."""
        if self._sock is not None:
            self._remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for rid, p in list(self._pending.items()):
            if p.sent and not p.retry:
                del self._pending[rid]
                p.on_done(None, [], errno.EIO)
            else:
                p.sent = False


def close_quietly(fd: int) -> None:
    """Close an fd the callee owned and no longer needs."""
    try:
        os.close(fd)
    except OSError as e:
        log.debug("closing %d: %s", fd, e)
