"""Clients of a service: RpcClient over ZMQ, FdClient over the fd channel.

Both raise RemoteError when the service answered with an error and ServiceUnavailable when it
did not answer at all; neither lets a zmq or socket exception out. RpcClient resends
idempotent calls (common.methods.IDEMPOTENT) on a fresh socket until the deadline, so a
client survives a service that is killed and restarted under it.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import Any, TypeVar, overload

import zmq

from common import fdpass, wire
from common.errors import MessageError, ServiceUnavailable, ZerovisorError, error_from_wire
from common.methods import IDEMPOTENT

R = TypeVar("R")

#: How long one attempt of an idempotent call waits before it is sent again.
ATTEMPT_TIMEOUT = 1.0

_ids = itertools.count(1)


def _next_id() -> str:
    return f"{os.getpid()}-{next(_ids)}"


def _unwrap(frame: bytes, method: str) -> wire.Reply:
    try:
        return wire.reply_from_envelope(wire.load_envelope(frame))
    except ZerovisorError as e:
        raise MessageError(f"{method}: malformed reply: {e}") from None


def _result(method: str, reply: wire.Reply, result_type: type[R] | None) -> Any:
    if not reply.ok:
        raise error_from_wire(reply.error)
    if result_type is None:
        return reply.result
    return wire.from_wire(result_type, reply.result, where=f"{method} result")


class RpcClient:
    """A DEALER connected to one service's ROUTER. Not thread-safe; owns its socket until close()."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 250)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reconnect(self) -> None:
        # A fresh socket drops whatever the old one still had queued for a dead peer.
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        """Close the socket; the client may be used again (it reconnects)."""
        self._reconnect()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @overload
    def call(
        self,
        method: str,
        args: Any = ...,
        result_type: None = ...,
        *,
        timeout: float | None = ...,
        retry: bool | None = ...,
    ) -> dict[str, Any]: ...
    @overload
    def call(
        self, method: str, args: Any, result_type: type[R], *, timeout: float | None = ..., retry: bool | None = ...
    ) -> R: ...

    def call(
        self,
        method: str,
        args: Any = None,
        result_type: type[R] | None = None,
        *,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Any:
        """Call method with args (a dataclass or a map); decode the result into result_type.

        ``retry`` defaults to whether the method is idempotent. Raises RemoteError for an error
        reply and ServiceUnavailable when no reply came within ``timeout`` seconds.
        """
        body = wire.to_wire(args) if args is not None else {}
        retry = method in IDEMPOTENT if retry is None else retry
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceUnavailable(f"{method}: no reply from {self.endpoint} after {attempts - 1} attempt(s)")
            wait = min(remaining, ATTEMPT_TIMEOUT) if retry else remaining
            reply = self._attempt(method, body, wait)
            if reply is not None:
                return _result(method, reply, result_type)
            self._reconnect()
            if not retry:
                raise ServiceUnavailable(f"{method}: no reply from {self.endpoint} within {wait:.1f}s")

    def _attempt(self, method: str, body: dict[str, Any], wait: float) -> wire.Reply | None:
        rid = _next_id()
        sock = self._socket()
        end = time.monotonic() + wait
        try:
            sock.send(wire.encode_request(rid, method, body), zmq.NOBLOCK)
            while (left := end - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                    continue
                reply = _unwrap(sock.recv(), method)
                # No id: the request was refused unread (too large, undecodable). Each timed-out
                # attempt gets a fresh socket, so such a reply can only be to this request.
                if reply.id == rid or reply.id is None:
                    return reply
        except zmq.ZMQError:
            return None
        return None


class FdClient:
    """A connection to one service's fd channel. Owns its socket until close()."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except OSError as e:
            self.sock.close()
            raise ServiceUnavailable(f"connecting to fd channel {self.path}: {e}") from None

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def __enter__(self) -> FdClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(
        self, method: str, args: Any = None, result_type: type[R] | None = None, fds: list[int] | None = None
    ) -> tuple[Any, list[int]]:
        """Send one request with fds (still owned by the caller) and wait for the reply.

        Returns the decoded result and the reply's fds, which the caller owns and must close.
        """
        body = wire.to_wire(args) if args is not None else {}
        rid = _next_id()
        try:
            fdpass.send_frame(self.sock, wire.encode_request(rid, method, body), fds)
            frame, out_fds = fdpass.recv_frame(self.sock)
        except (TimeoutError, OSError) as e:
            raise ServiceUnavailable(f"{method} on {self.path}: {e}") from None
        if not frame:
            fdpass.close_all(out_fds)
            raise ServiceUnavailable(f"{method} on {self.path}: connection closed")
        try:
            reply = _unwrap(frame, method)
            if reply.id not in (rid, None):
                raise MessageError(f"{method}: reply id {reply.id!r} does not match {rid!r}")
            return _result(method, reply, result_type), out_fds
        except BaseException:
            fdpass.close_all(out_fds)
            raise
