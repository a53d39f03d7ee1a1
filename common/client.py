"""FdClient: a client of a service's fd channel, and the reply handling every client shares.

It imports no ZMQ, so a CLI command that needs only the fd channel starts fast. RpcClient
(common.zmqclient) is the ZMQ client. Both raise RemoteError when the service answered with an
error and ServiceUnavailable when it did not answer at all; neither lets a zmq or socket
exception out.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from common import fdpass, wire
from common.errors import MessageError, ServiceNotResponding, ServiceUnavailable, ZerovisorError, error_from_wire

R = TypeVar("R")

_ids = itertools.count(1)


def next_id() -> str:
    return f"{os.getpid()}-{next(_ids)}"


def unwrap(frame: bytes, method: str) -> wire.Reply:
    try:
        return wire.reply_from_envelope(wire.load_envelope(frame))
    except ZerovisorError as e:
        raise MessageError(f"{method}: malformed reply: {e}") from None


def decode_result(method: str, reply: wire.Reply, result_type: type[R] | None) -> Any:
    if not reply.ok:
        raise error_from_wire(reply.error)
    if result_type is None:
        return reply.result
    return wire.from_wire(result_type, reply.result, where=f"{method} result")


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
        self,
        method: str,
        args: Any = None,
        result_type: type[R] | None = None,
        fds: list[int] | None = None,
        wait_forever: bool = False,
        timeout: float | None = None,
    ) -> tuple[Any, list[int]]:
        """Send one request with fds (still owned by the caller) and wait for the reply: up to
        timeout seconds (default: the client's), or with wait_forever however long it takes
        (a method that answers late, like Proc.WaitPid).

        Returns the decoded result and the reply's fds, which the caller owns and must close.
        ServiceNotResponding when no reply came in time, ServiceUnavailable when the
        connection failed.
        """
        body = wire.to_wire(args) if args is not None else {}
        rid = next_id()
        default = self.sock.gettimeout()
        try:
            if timeout is not None:
                self.sock.settimeout(timeout)
            fdpass.send_frame(self.sock, wire.encode_request(rid, method, body), fds)
            if wait_forever:
                self.sock.settimeout(None)
            frame, out_fds = fdpass.recv_frame(self.sock)
        except TimeoutError:
            waited = self.sock.gettimeout()
            raise ServiceNotResponding(f"{method} on {self.path}: no answer in {waited:g} s") from None
        except OSError as e:
            raise ServiceUnavailable(f"{method} on {self.path}: {e}") from None
        finally:
            self.sock.settimeout(default)
        if not frame:
            fdpass.close_all(out_fds)
            raise ServiceUnavailable(f"{method} on {self.path}: connection closed")
        try:
            reply = unwrap(frame, method)
            if reply.id not in (rid, None):
                raise MessageError(f"{method}: reply id {reply.id!r} does not match {rid!r}")
            return decode_result(method, reply, result_type), out_fds
        except BaseException:
            fdpass.close_all(out_fds)
            raise


class ServiceChannel:
    """A lasting connection from one service to another's fd channel.

    It connects on first use. Before each call it checks that the peer has not hung up (a dead
    or restarted service leaves a connection that reads EOF), and after a call fails for want of
    the peer it drops the connection: either way the next call connects afresh. A connection
    made after an earlier one was lost runs on_reconnect first, so that the caller can bring
    the restarted peer up to date (the sentry re-attaches the gofer's mounts that way).
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        #: Run after a reconnection, before the call that made it (set by the owner).
        self.on_reconnect: Callable[[], None] | None = None
        self._client: FdClient | None = None
        self._lost = False
        self._reconnecting = False

    def call(
        self,
        method: str,
        args: Any = None,
        result_type: type[R] | None = None,
        fds: list[int] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call method; the caller keeps ownership of fds. Files in the reply, which this
        caller does not expect, are closed rather than leaked."""
        result, out = self.call_with_fds(method, args, result_type, fds, timeout)
        fdpass.close_all(out)
        return result

    def call_with_fds(
        self,
        method: str,
        args: Any = None,
        result_type: type[R] | None = None,
        fds: list[int] | None = None,
        timeout: float | None = None,
    ) -> tuple[Any, list[int]]:
        """Call method (waiting up to timeout, default the channel's); the caller keeps
        ownership of fds and owns the reply's files."""
        client = self.connect()
        try:
            return client.call(method, args, result_type, fds, timeout=timeout)
        except ServiceUnavailable:
            self._drop()
            raise

    def connect(self) -> FdClient:
        """The live connection, made afresh (and on_reconnect run) if there is none."""
        if self._client is not None and _hung_up(self._client.sock):
            self._drop()
        if self._client is None:
            self._client = FdClient(self.path, timeout=self.timeout)
            catch_up = self._lost and self.on_reconnect is not None and not self._reconnecting
            self._lost = False  # before the catch-up: a loss during it must be caught up on too
            if catch_up and self.on_reconnect is not None:
                self._reconnecting = True
                try:
                    self.on_reconnect()
                finally:
                    self._reconnecting = False
        if self._client is None:
            # The catch-up's own calls found the peer gone again, and dropped the connection.
            raise ServiceUnavailable(f"{self.path}: the peer went away again while being caught up")
        return self._client

    def reconnects(self) -> bool:
        """Connect if the connection is gone (running on_reconnect); whether that happened."""
        before = self._client
        return self.connect() is not before

    def _drop(self) -> None:
        self.close()
        self.mark_lost()

    def mark_lost(self) -> None:
        """Run on_reconnect before the next call (the peer was unreachable, and may have state
        to catch up on when it is back)."""
        self._lost = True

    def close(self) -> None:
        """Drop the connection, if any."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed its end: with no call in flight nothing else makes it readable."""
    return fdpass.readable(sock)
