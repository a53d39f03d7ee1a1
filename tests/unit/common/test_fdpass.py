"""SCM_RIGHTS over a SOCK_SEQPACKET socketpair (common.fdpass)."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest

from common import fdpass
from common.errors import MessageTooLarge, PermissionDenied
from tests.conftest import at_eof, nonblocking_pipe, open_fds

Pair = tuple[socket.socket, socket.socket]


def _nothing_queued(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


@pytest.fixture
def pair() -> Iterator[Pair]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_pipe_write_end_travels(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    fdpass.send_frame(a, b"hello", [w])
    os.close(w)  # the sender keeps ownership of its copy
    frame, fds = fdpass.recv_frame(b)
    assert frame == b"hello"
    assert len(fds) == 1
    (got,) = fds
    os.write(got, b"through the socket")
    os.close(got)
    assert os.read(r, 100) == b"through the socket"
    assert at_eof(r)  # the received fd was the last write end
    os.close(r)


def test_received_fds_are_close_on_exec(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    fdpass.send_frame(a, b"x", [w])
    os.close(w)
    _, fds = fdpass.recv_frame(b)
    try:
        assert [os.get_inheritable(fd) for fd in fds] == [False]
    finally:
        fdpass.close_all(fds)
        os.close(r)


def test_frame_without_fds(pair: Pair) -> None:
    a, b = pair
    fdpass.send_frame(a, b"plain")
    assert fdpass.recv_frame(b) == (b"plain", [])


def test_several_fds_keep_their_order(pair: Pair) -> None:
    a, b = pair
    pipes = [nonblocking_pipe() for _ in range(3)]
    fdpass.send_frame(a, b"x", [w for _, w in pipes])
    _, fds = fdpass.recv_frame(b)
    assert len(fds) == 3
    for i, fd in enumerate(fds):
        os.write(fd, bytes([i]))
    for i, (r, w) in enumerate(pipes):
        assert os.read(r, 1) == bytes([i])
        os.close(r)
        os.close(w)
    fdpass.close_all(fds)


def test_peer_closed_reads_empty(pair: Pair) -> None:
    a, b = pair
    a.close()
    assert fdpass.recv_frame(b) == (b"", [])


def test_send_frame_refuses_too_many_fds(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    try:
        fdpass.send_frame(a, b"x", [w] * fdpass.MAX_FDS)  # the limit itself is fine
        assert len(fdpass.recv_frame(b)[1]) == fdpass.MAX_FDS
        with pytest.raises(MessageTooLarge, match="too many fds"):
            fdpass.send_frame(a, b"x", [w] * (fdpass.MAX_FDS + 1))
        assert _nothing_queued(b)
    finally:
        os.close(r)
        os.close(w)


def test_send_frame_refuses_oversize_frame(pair: Pair) -> None:
    a, b = pair
    with pytest.raises(MessageTooLarge, match=str(fdpass.MAX_FRAME)):
        fdpass.send_frame(a, b"x" * (fdpass.MAX_FRAME + 1))
    assert _nothing_queued(b)


def test_recv_frame_refuses_oversize_frame(pair: Pair) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * fdpass.MAX_FRAME)
    a.sendall(b"x" * (fdpass.MAX_FRAME + 1))
    with pytest.raises(MessageTooLarge):
        fdpass.recv_frame(b)


def test_frame_of_max_size_can_be_sent(pair: Pair) -> None:
    # With the socket's default SO_SNDBUF: the limit must be reachable in practice.
    a, b = pair
    fdpass.send_frame(a, b"x" * fdpass.MAX_FRAME)
    assert len(fdpass.recv_frame(b)[0]) == fdpass.MAX_FRAME


def test_recv_frame_truncated_fds_leave_nothing_open(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    before = len(open_fds())
    originals = [os.dup(w) for _ in range(200)]
    socket.send_fds(a, [b"many"], originals)
    fdpass.close_all(originals)
    with pytest.raises(MessageTooLarge, match="refused: more than"):
        fdpass.recv_frame(b)
    assert len(open_fds()) == before
    os.close(w)
    assert at_eof(r)  # no copy of the write end survived anywhere
    os.close(r)


def test_recv_frame_truncation_message_names_the_right_unit(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    socket.send_fds(a, [b"x"], [w] * (fdpass.MAX_FDS + 1))
    with pytest.raises(MessageTooLarge) as info:
        fdpass.recv_frame(b)
    os.close(r)
    os.close(w)
    assert str(info.value) == f"fd-channel message refused: more than {fdpass.MAX_FDS} fds"


def test_close_all_closes(pair: Pair) -> None:
    r, w = nonblocking_pipe()
    fdpass.close_all([w])
    assert at_eof(r)
    os.close(r)


def test_peer_credentials_are_ours(pair: Pair) -> None:
    a, b = pair
    assert fdpass.peer_credentials(a) == (os.getpid(), os.getuid(), os.getgid())
    assert fdpass.peer_credentials(b) == (os.getpid(), os.getuid(), os.getgid())


def test_check_peer_accepts_us(pair: Pair) -> None:
    assert fdpass.check_peer(pair[1]) == os.getpid()


@pytest.mark.parametrize(("uid", "allowed"), [(0, True), (os.geteuid(), True), (os.geteuid() + 4242, False)])
def test_check_peer_by_uid(pair: Pair, monkeypatch: pytest.MonkeyPatch, uid: int, allowed: bool) -> None:
    monkeypatch.setattr(fdpass, "peer_credentials", lambda _sock: (1234, uid, uid))
    if allowed:
        assert fdpass.check_peer(pair[1]) == 1234
    else:
        with pytest.raises(PermissionDenied, match=f"pid 1234 uid {uid}"):
            fdpass.check_peer(pair[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_check_peer_refuses_a_real_process_of_another_user(pair: Pair) -> None:
    """A child that became uid 65534 makes a socket pair and hands us one end: we refuse it."""
    a, b = pair
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            fdpass.send_frame(a, b"peer", [ours.fileno()])
            ours.close()
            theirs.recv(1)  # keep the peer alive until the parent has checked it and closed its end
        finally:
            os._exit(0)
    _, fds = fdpass.recv_frame(b)
    sock = socket.socket(fileno=fds[0])
    try:
        with pytest.raises(PermissionDenied, match="uid 65534 is not allowed"):
            fdpass.check_peer(sock)
    finally:
        sock.close()
        os.waitpid(pid, 0)
