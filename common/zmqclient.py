"""RpcClient: a ZMQ DEALER client of one service's ROUTER endpoint.

It resends idempotent calls (common.methods.IDEMPOTENT) on a fresh socket until the deadline,
so a client survives a service that is killed and restarted under it.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, overload

import zmq

from common import wire
from common.client import decode_result, next_id, unwrap
from common.errors import ServiceUnavailable
from common.methods import IDEMPOTENT

R = TypeVar("R")

#: How long one attempt of an idempotent call waits before it is sent again.
ATTEMPT_TIMEOUT = 1.0


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
                return decode_result(method, reply, result_type)
            self._reconnect()
            if not retry:
                raise ServiceUnavailable(f"{method}: no reply from {self.endpoint} within {wait:.1f}s")

    def _attempt(self, method: str, body: dict[str, Any], wait: float) -> wire.Reply | None:
        rid = next_id()
        sock = self._socket()
        end = time.monotonic() + wait
        try:
            sock.send(wire.encode_request(rid, method, body), zmq.NOBLOCK)
            while (left := end - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                    continue
                reply = unwrap(sock.recv(), method)
                # No id: the request was refused unread (too large, undecodable). Each timed-out
                # attempt gets a fresh socket, so such a reply can only be to this request.
                if reply.id == rid or reply.id is None:
                    return reply
        except zmq.ZMQError:
            return None
        return None
