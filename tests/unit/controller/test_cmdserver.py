"""The command server's wire and its refusals: malformed requests, stale code, bad callers.

A real server runs as its own process (with a name of this test's own) where it must fork; the
stale-code refusal, which forks nothing, is checked on a CommandServer in this process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.wire import MAX_MESSAGE_BYTES
from services.controller.cmdserver.protocol import (
    EVENT_SIZE,
    MAX_REQUEST,
    REFUSED,
    STALE,
    SWITCH,
    Request,
    decode_event,
    decode_request,
    encode_request,
    install_key,
    request_length,
    socket_name,
)
from services.controller.cmdserver.server import CommandServer
from tests.conftest import REPO


def _request(**changes: object) -> Request:
    fields: dict[str, object] = {
        "key": install_key(),
        "umask": 0o22,
        "argv": ["controller", "--version"],
        "env": [b"A=1", b"B=x=y"],
        "fds": [0, 1, 2],
        "ignored": [13],
        "blocked": [],
    }
    fields.update(changes)
    return Request(**fields)  # type: ignore[arg-type]


def test_a_request_survives_the_wire() -> None:
    request = _request(argv=["controller", "exec", "c", "sh", "-c", "echo 'a b'", "é"], fds=[0, 1, 2, 7])
    data = encode_request(request)
    assert request_length(data[:4]) == len(data)
    back = decode_request(data)
    assert [getattr(back, f) for f in Request.__slots__] == [getattr(request, f) for f in Request.__slots__]


def test_a_request_fits_the_message_that_hands_it_to_a_spare() -> None:
    assert MAX_REQUEST + 64 <= MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    "data",
    [
        b"\0\0\0\4\0\0\0\1",  # a field longer than the request
        b"\0\0\0\x05\0\0\0\1" + b"9",  # one field only, and a version that is not ours
        encode_request(_request()).replace(b"\0\0\0\x011", b"\0\0\0\x017", 1),  # version 7
    ],
)
def test_malformed_requests_are_refused_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_request(data)


@pytest.fixture
def private_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """A command server of this test's own, serving."""
    monkeypatch.setenv(SWITCH, f"unit-{uuid.uuid4().hex[:12]}")
    server = subprocess.Popen(
        [sys.executable, "-m", "services.controller.cmdserver", install_key().encode().hex()],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while socket_name(install_key(), os.getuid())[1:] not in Path("/proc/net/unix").read_bytes():
        assert server.poll() is None and time.monotonic() < deadline, "the server did not bind"
        time.sleep(0.05)
    yield server
    server.kill()
    server.wait()


def _served(argv: list[str]) -> str:
    """What run_via_server says in a fresh client: its status, or None if it ran nothing."""
    program = f"from services.controller.cmdserver.client import run_via_server; print(run_via_server({argv!r}))"
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True)
    return done.stdout.decode().splitlines()[-1]


def test_the_server_drops_garbage_and_goes_on_serving(private_server: subprocess.Popen[bytes]) -> None:
    name = socket_name(install_key(), os.getuid())
    for garbage in [b"\0\0\0\4\0\0\0\1", b"\xff\xff\xff\xff" + b"x" * 100, encode_request(_request())]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(name)
            sock.sendall(garbage)  # no files with it: the last is well formed, but not whole
            sock.settimeout(20)
            assert sock.recv(EVENT_SIZE) == b"", "dropped without an answer"
    assert private_server.poll() is None
    assert _served(["controller", "--version"]) == "0"


def test_a_client_that_sends_nothing_is_dropped_in_time(private_server: subprocess.Popen[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_name(install_key(), os.getuid()))
        sock.settimeout(30)
        assert sock.recv(EVENT_SIZE) == b""
    assert _served(["controller", "--version"]) == "0"


def test_a_server_whose_code_changed_refuses_and_retires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SWITCH, f"unit-{uuid.uuid4().hex[:12]}")
    source = tmp_path / "module.py"
    source.write_text("x = 1\n")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    listener.bind(socket_name(install_key(), os.getuid()))
    listener.listen(8)
    server = CommandServer(listener, install_key(), [str(source)])
    serving = threading.Thread(target=server.serve)
    serving.start()
    os.utime(source, ns=(0, 1))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_name(install_key(), os.getuid()))
        cwd = os.open(".", os.O_PATH)
        try:
            socket.send_fds(sock, [encode_request(_request(fds=[]))], [cwd])
        finally:
            os.close(cwd)
        sock.settimeout(20)
        assert decode_event(sock.recv(EVENT_SIZE)) == (REFUSED, STALE)
    serving.join(timeout=20)
    assert not serving.is_alive(), "a stale server with nothing running exits"
    assert server.listener is None
