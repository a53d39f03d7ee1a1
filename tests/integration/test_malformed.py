"""Bad input gets a clear error reply (or is dropped) and the service keeps serving."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import zmq

from common import fdpass, wire
from common.client import FdClient
from common.errors import ErrCode, RemoteError
from common.messages.system import PingArgs, PingResult
from common.methods import SYSTEM_PING
from common.rundir import SERVICES, RunDir
from tests.conftest import ServiceProcess, settled_fd_count, wait_fd_count

pytestmark = pytest.mark.integration

StartService = Callable[[str], ServiceProcess]


@pytest.fixture
def dealer(run_dir: Path) -> Iterator[Callable[[str], zmq.Socket[bytes]]]:
    """Factory of raw DEALER sockets connected to a service, so tests can send anything."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socks: list[zmq.Socket[bytes]] = []

    def connect(service: str) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(RunDir.at(run_dir).endpoint(service))
        socks.append(sock)
        return sock

    yield connect
    for sock in socks:
        sock.close(linger=0)


def exchange(sock: zmq.Socket[bytes], frame: bytes, timeout_ms: int = 10_000) -> dict[str, Any] | None:
    """Send one raw frame; return the decoded reply, or None when none came."""
    sock.send(frame)
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    reply = cbor2.loads(sock.recv())
    assert isinstance(reply, dict)
    return reply


def request(method: object = SYSTEM_PING, **fields: Any) -> bytes:
    env: dict[str, Any] = {"v": 1, "id": "t-1", "method": method, "args": {}}
    env.update(fields)
    return cbor2.dumps(env)


CASES: list[tuple[str, bytes, ErrCode, str]] = [
    ("truncated", request()[:-3], ErrCode.BAD_MESSAGE, "undecodable frame"),
    ("not cbor", b"\xff\xfe\xfd", ErrCode.BAD_MESSAGE, "undecodable frame"),
    ("not a map", cbor2.dumps([1, "System.Ping", {}]), ErrCode.BAD_MESSAGE, "want a map"),
    ("bad version", request(v=2), ErrCode.BAD_VERSION, "unsupported wire version 2"),
    ("no version", cbor2.dumps({"id": "x", "method": SYSTEM_PING, "args": {}}), ErrCode.BAD_VERSION, "None"),
    ("unknown method", request("System.Explode"), ErrCode.UNKNOWN_METHOD, "unknown method 'System.Explode'"),
    ("no method", request(method=7), ErrCode.BAD_MESSAGE, "'method' string"),
    ("unknown field", request(args={"verbose": True}), ErrCode.INVALID_ARGUMENT, "unknown fields ['verbose']"),
    ("args not a map", request(args=[1, 2]), ErrCode.BAD_MESSAGE, "want a map"),
    ("fds in the body", request(args={"fds": [0, 1, 2]}), ErrCode.INVALID_ARGUMENT, "unknown fields ['fds']"),
    ("extra envelope field", request(extra=1), ErrCode.BAD_MESSAGE, "unknown fields ['extra']"),
    ("wrong id type", request(id=[1]), ErrCode.BAD_MESSAGE, "needs an 'id'"),
]


@pytest.mark.parametrize("service", SERVICES)
def test_malformed_requests_get_clear_errors_and_service_survives(
    service: str, start_service: StartService, dealer: Callable[[str], zmq.Socket[bytes]]
) -> None:
    sp = start_service(service)
    sock = dealer(service)
    for name, frame, code, text in CASES:
        reply = exchange(sock, frame)
        assert reply is not None, name
        assert reply["ok"] is False, name
        assert reply["error"]["code"] == code, (name, reply)
        assert text in reply["error"]["message"], (name, reply)
    assert sp.ping().pid == sp.pid


def test_wrong_field_types_are_refused_by_name(
    start_service: StartService, dealer: Callable[[str], zmq.Socket[bytes]]
) -> None:
    sp = start_service("sentry")
    sock = dealer("sentry")
    # System.Status takes no fields; any field is unknown. Use a well-typed method path instead:
    # a reply carries the field path when the type is wrong.
    reply = exchange(sock, request("System.Status", args={"pid": "one"}))
    assert reply is not None and reply["error"]["code"] == ErrCode.INVALID_ARGUMENT
    assert "unknown fields ['pid']" in reply["error"]["message"]
    assert sp.ping().pid == sp.pid


def test_hundred_megabyte_message_gets_too_large_reply(
    start_service: StartService, dealer: Callable[[str], zmq.Socket[bytes]]
) -> None:
    sp = start_service("controller")
    sock = dealer("controller")
    big = request(args={"blob": b"\0" * (100 << 20)})
    reply = exchange(sock, big, timeout_ms=60_000)
    assert reply is not None
    assert reply["ok"] is False and reply["error"]["code"] == ErrCode.TOO_LARGE
    assert "exceeds the limit" in reply["error"]["message"]
    assert sp.ping().pid == sp.pid


def test_requests_and_errors_are_counted(
    start_service: StartService, dealer: Callable[[str], zmq.Socket[bytes]]
) -> None:
    start_service("gofer")
    sock = dealer("gofer")
    before = exchange(sock, request("System.Status"))
    assert before is not None
    exchange(sock, b"junk")
    exchange(sock, request("Nope.Nope"))
    after = exchange(sock, request("System.Status"))
    assert after is not None
    assert after["result"]["errors"] == before["result"]["errors"] + 2
    assert after["result"]["requests"] == before["result"]["requests"] + 3


@pytest.mark.parametrize("service", ["sentry", "gofer"])
def test_pipe_over_fd_channel_reaches_service_and_is_closed_there(
    service: str, start_service: StartService, run_dir: Path
) -> None:
    sp = start_service(service)
    server_fds = settled_fd_count(sp.pid)
    r, w = os.pipe()
    try:
        with FdClient(RunDir.at(run_dir).socket_path(service), timeout=10) as client:
            result, out = client.call(SYSTEM_PING, PingArgs(), PingResult, fds=[w])
            assert out == []
        assert result.fds_received == 1 and result.pid == sp.pid
        os.write(w, b"x")
        os.close(w)
        w = -1
        # Only EOF proves the service closed its copy of the write end.
        assert os.read(r, 10) == b"x"
        assert os.read(r, 10) == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert wait_fd_count(sp.pid, server_fds) <= server_fds


def test_fds_beyond_a_frame_arrive_in_fragments_and_a_frame_with_too_many_is_refused(
    start_service: StartService, run_dir: Path
) -> None:
    sp = start_service("platform")
    path = RunDir.at(run_dir).socket_path("platform")
    ours = settled_fd_count(os.getpid())
    server_fds = settled_fd_count(sp.pid)

    pipes = [os.pipe() for _ in range(100)]
    fds = [fd for pair in pipes for fd in pair]  # 200: above our 128, below the kernel's 253
    try:
        with FdClient(path, timeout=10) as client:
            # Our sender spreads them over two frames, and every one arrives.
            result, _ = client.call(SYSTEM_PING, PingArgs(), PingResult, fds=fds)
            assert result.fds_received == len(fds)
            # One frame with all of them (a sender that is not ours): refused, none kept.
            socket.send_fds(client.sock, [wire.encode_request("raw", SYSTEM_PING, {})], fds)
            frame, got = fdpass.recv_frame(client.sock)
            assert got == []
            reply = wire.reply_from_envelope(wire.load_envelope(frame))
            assert not reply.ok and reply.error is not None
            assert reply.error["code"] == ErrCode.TOO_LARGE
            # The connection still works after the refusal.
            result, _ = client.call(SYSTEM_PING, PingArgs(), PingResult, fds=fds[:3])
            assert result.fds_received == 3
    finally:
        fdpass.close_all(fds)
    assert wait_fd_count(os.getpid(), ours) <= ours
    assert wait_fd_count(sp.pid, server_fds) <= server_fds


def test_fds_sent_to_a_method_without_files_are_refused_and_closed(start_service: StartService, run_dir: Path) -> None:
    sp = start_service("sentry")
    server_fds = settled_fd_count(sp.pid)
    r, w = os.pipe()
    try:
        with (
            FdClient(RunDir.at(run_dir).socket_path("sentry"), timeout=10) as client,
            pytest.raises(RemoteError, match="takes no files"),
        ):
            client.call("System.Status", None, None, fds=[w])
        os.close(w)
        w = -1
        assert os.read(r, 1) == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert wait_fd_count(sp.pid, server_fds) <= server_fds
