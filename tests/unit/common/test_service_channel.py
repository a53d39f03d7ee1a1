"""ServiceChannel over a real Unix socket whose peer dies and comes back: a peer that goes away
again during the catch-up after a reconnection is reported as unavailable (not a crash of the
caller), and the catch-up runs again once the peer is back for good."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import fdpass, wire
from common.client import ServiceChannel
from common.errors import ServiceUnavailable


@contextlib.contextmanager
def peer(path: Path, answers: bool) -> Iterator[None]:
    """A service at path: it answers every request (answers) or hangs up on every connection
    as soon as it is made (a service dying again)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve_one(conn: socket.socket) -> None:
        with conn:
            while answers and (frame := fdpass.recv_frame(conn)[0]):
                request = wire.request_from_envelope(wire.load_envelope(frame))
                fdpass.send_frame(conn, wire.encode_reply(wire.Reply(id=request.id, ok=True, result={})))

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                conn.settimeout(None)
                conns.append(conn)
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for conn in conns:  # it dies: its connections hang up
            with contextlib.suppress(OSError):  # one it closed already
                conn.shutdown(socket.SHUT_RDWR)
        listener.close()
        path.unlink()


def test_a_peer_gone_again_during_the_catch_up_is_unavailable_and_caught_up_on_later(tmp_path: Path) -> None:
    path = tmp_path / "svc.fds"
    channel = ServiceChannel(path, timeout=10)
    caught_up = 0

    def catch_up() -> None:
        # As the sentry's catch-up with the platform does: a peer that is down is logged.
        nonlocal caught_up
        caught_up += 1
        with contextlib.suppress(ServiceUnavailable):
            channel.call("Svc.Tasks")

    channel.on_reconnect = catch_up
    with peer(path, answers=True):
        channel.call("Svc.Ping")
    with pytest.raises(ServiceUnavailable):
        channel.call("Svc.Ping")  # the peer died
    with peer(path, answers=False), pytest.raises(ServiceUnavailable):
        channel.call("Svc.Ping")  # it came back, and died again during the catch-up
    assert caught_up == 1
    with peer(path, answers=True):
        channel.call("Svc.Ping")
    assert caught_up == 2  # what it missed meanwhile is caught up on now
    channel.close()
