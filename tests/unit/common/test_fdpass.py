"""SCM_RIGHTS over a SOCK_SEQPACKET socketpair (common.fdpass)."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from common import fdpass
from common.errors import MessageError, MessageTooLarge, PermissionDenied
from common.wire import MAX_MESSAGE_BYTES
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


def test_more_fds_than_a_frame_holds_travel_in_fragments(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    before = len(open_fds())
    try:
        fdpass.send_frame(a, b"x", [w] * (2 * fdpass.MAX_FDS + 5))
        frame, fds = fdpass.recv_frame(b)
        assert frame == b"x" and len(fds) == 2 * fdpass.MAX_FDS + 5
        os.write(fds[-1], b"!")  # each is a working copy of the write end
        assert os.read(r, 1) == b"!"
        fdpass.close_all(fds)
        assert _nothing_queued(b) and len(open_fds()) == before
    finally:
        os.close(r)
        os.close(w)


def test_send_frame_refuses_a_message_over_the_limit(pair: Pair) -> None:
    a, b = pair
    with pytest.raises(MessageTooLarge, match=str(MAX_MESSAGE_BYTES)):
        fdpass.send_frame(a, b"x" * (MAX_MESSAGE_BYTES + 1))
    assert _nothing_queued(b)


def _send_in_thread(send: Callable[[], None]) -> threading.Thread:
    """Run send beside the test: a message bigger than the socket buffer is sent only as fast
    as the other end reads it."""
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("receiver_blocks", [True, False])
def test_a_message_bigger_than_a_frame_travels_whole(pair: Pair, receiver_blocks: bool) -> None:
    a, b = pair
    b.setblocking(receiver_blocks)
    message = os.urandom(5 * fdpass.MAX_FRAME + 123)
    r, w = nonblocking_pipe()
    try:
        sender = _send_in_thread(lambda: fdpass.send_frame(a, message, [w]))
        if not receiver_blocks:
            select.select([b], [], [], 5)
        frame, fds = fdpass.recv_frame(b)
        sender.join(5)
        assert frame == message and len(fds) == 1
        fdpass.close_all(fds)
        assert _nothing_queued(b)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("message", [b"\x00", b"\x01tail", b"\x00" * 10])
def test_a_small_message_that_begins_with_a_mark_byte_travels_unchanged(pair: Pair, message: bytes) -> None:
    a, b = pair
    fdpass.send_frame(a, message)
    assert fdpass.recv_frame(b) == (message, [])
    assert _nothing_queued(b)


def test_a_message_over_the_limit_is_refused_after_it_was_read_to_its_end(pair: Pair) -> None:
    # A peer that ignores the limit: its fragments are read and dropped, the next message is whole.
    a, b = pair
    r, w = nonblocking_pipe()
    before = len(open_fds())
    chunk = b"\x00" + b"x" * (fdpass.MAX_FRAME - 1)

    def send() -> None:
        socket.send_fds(a, [chunk], [w])
        for _ in range(MAX_MESSAGE_BYTES // (fdpass.MAX_FRAME - 1)):
            a.sendall(chunk)
        socket.send_fds(a, [b"\x01end"], [w])
        fdpass.send_frame(a, b"next")

    sender = _send_in_thread(send)
    try:
        with pytest.raises(MessageTooLarge, match=f"more than {MAX_MESSAGE_BYTES} bytes"):
            fdpass.recv_frame(b)
        assert fdpass.recv_frame(b) == (b"next", [])
        sender.join(5)
        assert len(open_fds()) == before
    finally:
        os.close(r)
        os.close(w)


def test_a_peer_that_hangs_up_in_the_middle_of_a_message_has_hung_up(pair: Pair) -> None:
    a, b = pair
    r, w = nonblocking_pipe()
    socket.send_fds(a, [b"\x00part"], [w])
    a.close()
    before = len(open_fds())
    assert fdpass.recv_frame(b) == (b"", [])
    assert len(open_fds()) == before
    os.close(w)
    assert at_eof(r)
    os.close(r)


def test_a_message_in_fragments_that_stops_without_its_last_is_refused(pair: Pair) -> None:
    a, b = pair
    a.sendall(b"\x00part")
    a.sendall(b"plain")
    with pytest.raises(MessageError, match="without its last"):
        fdpass.recv_frame(b)


def test_a_non_blocking_receiver_waits_no_longer_than_the_fragment_timeout(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    b.setblocking(False)
    monkeypatch.setattr(fdpass, "FRAGMENT_TIMEOUT", 0.05)
    a.sendall(b"\x00part")
    with pytest.raises(TimeoutError):
        fdpass.recv_frame(b)


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
    assert str(info.value) == f"fd-channel message refused: more than {fdpass.MAX_FDS} fds in a frame"


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
