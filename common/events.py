"""Events: a ZMQ PUB socket per publishing service, topics ``<kind>.<id>.<event>``.

Frames are ``[topic, cbor({"v": 1, "event": ..., "body": {...}})]``. A subscriber that joins
late misses what was published before; every consumer therefore pairs a subscription with a
state query (subscribe first, then ask), as `controller wait` does.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import cbor2
import zmq

from common import wire
from common.errors import MessageError


class Publisher:
    """A bound PUB socket. Owns it until close()."""

    def __init__(self, endpoint: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PUB)
        self.sock.linger = 1000
        self.sock.sndhwm = 100_000
        self.sock.bind(endpoint)

    def publish(self, topic: str, event: str, body: Any) -> None:
        """Publish body (a dataclass or a map) under topic; never blocks (a slow subscriber drops)."""
        frame = cbor2.dumps({"v": wire.WIRE_VERSION, "event": event, "time": time.time(), "body": wire.to_wire(body)})
        with contextlib.suppress(zmq.Again):
            self.sock.send_multipart([topic.encode(), frame], zmq.NOBLOCK)

    def close(self) -> None:
        """Close the socket, flushing for up to its linger time."""
        self.sock.close()


class Subscriber:
    """A SUB socket connected to one publisher, subscribed to topic prefixes. Owns it until close()."""

    def __init__(self, endpoint: str, prefixes: list[str]) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.RECONNECT_IVL, 20)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 250)
        for prefix in prefixes:
            self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.sock.connect(endpoint)

    def recv(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """The next (topic, envelope), or None when nothing came within timeout seconds."""
        if timeout is not None and not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        topic, frame = self.sock.recv_multipart()
        env = wire.load_envelope(frame)
        if env.get("v") != wire.WIRE_VERSION or not isinstance(env.get("body"), dict):
            raise MessageError(f"malformed event under {topic!r}")
        return topic.decode(errors="replace"), env

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event already waiting, without blocking."""
        out = []
        while (item := self.recv(0)) is not None:
            out.append(item)
        return out

    def close(self) -> None:
        """Close the socket."""
        self.sock.close(linger=0)
