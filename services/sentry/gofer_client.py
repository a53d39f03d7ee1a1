"""AsyncGoferChannel: the sentry's non-blocking calls to the gofer's fd channel.

A trapped file syscall must never stall the others: the sentry sends the gofer request, goes
back to its loop (other listeners, its ZMQ socket) and finishes the syscall when the reply
arrives. This module owns the one SOCK_SEQPACKET connection to the gofer, the table of calls in
flight, and their deadlines: a call the gofer does not answer in time, or that a dead gofer
will never answer, completes with EIO, and the next call reconnects.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from common import fdpass, wire
from common.client import unwrap
from common.errors import ZerovisorError, error_from_wire

log = logging.getLogger(__name__)

#: Seconds a file call may take before the program gets EIO.
CALL_TIMEOUT = 10.0

#: on_done(result map or None, fds the callee now owns, errno or 0).
Done = Callable[[dict[str, Any] | None, list[int], int], None]


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
        #: id -> (deadline, on_done), in send order.
        self._pending: dict[int, tuple[float, Done]] = {}

    def call(self, method: str, args: Any, on_done: Done) -> None:
        """Send one request; on_done runs from the loop with the outcome (never from here)."""
        rid = next(self._ids)
        try:
            sock = self._connect()
            fdpass.send_frame(sock, wire.encode_request(rid, method, wire.to_wire(args)))
        except (OSError, ZerovisorError) as e:
            log.debug("gofer %s: %s", method, e)
            self._fail_all()
            # Completed on the next tick, so that callers always see one code path.
            self._pending[rid] = (0.0, on_done)
            return
        self._pending[rid] = (time.monotonic() + CALL_TIMEOUT, on_done)

    def tick(self) -> None:
        """Fail the calls whose deadline passed with EIO."""
        if not self._pending:
            return
        now = time.monotonic()
        late = [rid for rid, (deadline, _) in self._pending.items() if deadline <= now]
        for rid in late:
            _, on_done = self._pending.pop(rid)
            on_done(None, [], errno.EIO)

    def close(self) -> None:
        """Fail every call in flight and drop the connection."""
        self._fail_all()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.path)
            except OSError:
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
                self._fail_all()
                return
            if not frame and not fds:
                self._fail_all()  # the gofer went away: every call in flight gets EIO
                return
            self._complete(frame, fds)

    def _complete(self, frame: bytes, fds: list[int]) -> None:
        try:
            reply = unwrap(frame, "gofer reply")
        except ZerovisorError as e:
            log.debug("%s", e)
            fdpass.close_all(fds)
            return
        entry = self._pending.pop(reply.id, None) if isinstance(reply.id, int) else None
        if entry is None:
            fdpass.close_all(fds)  # a reply to a call that already timed out
            return
        on_done = entry[1]
        if reply.ok:
            on_done(reply.result or {}, fds, 0)
            return
        fdpass.close_all(fds)
        err = error_from_wire(reply.error)
        on_done(None, [], err.errno or errno.EIO)

    def _fail_all(self) -> None:
        if self._sock is not None:
            self._remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        pending, self._pending = self._pending, {}
        for _, on_done in pending.values():
            on_done(None, [], errno.EIO)


def close_quietly(fd: int) -> None:
    """Close an fd the callee owned and no longer needs."""
    try:
        os.close(fd)
    except OSError as e:
        log.debug("closing %d: %s", fd, e)
