"""The CLI's terminal handling with real ptys, pipes and AF_UNIX sockets under tmp_path."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import InvalidArgument, NotFound, ServiceUnavailable
from services.controller.console import CONSOLE_NAME, TerminalRelay, send_console


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _read_until(fd: int, needle: bytes, timeout: float = 5.0) -> bytes:
    """Read ``fd`` until ``needle`` shows up; fail rather than hang if it never does."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {got!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"EOF before {needle!r}; got {got!r}"
            got += chunk
    return got


def _winsize(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return rows, cols


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --- send_console ---------------------------------------------------------------------------


def test_send_console_passes_a_working_master_and_its_name(tmp_path: Path) -> None:
    before = _fd_count()
    path = str(tmp_path / "c.sock")
    master, replica = os.openpty()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        # The backlog completes the connection, so no thread is needed to accept concurrently.
        send_console(path, master)
        conn, _ = listener.accept()
        with conn:
            name, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    assert name == CONSOLE_NAME.encode() == b"/dev/ptmx"
    assert len(fds) == 1
    received = fds[0]
    try:
        # The caller kept its own copy: both the original and the received fd are live.
        os.fstat(master)
        os.write(received, b"typed\n")
        assert b"typed" in _read_until(replica, b"typed")
    finally:
        _close(received, master, replica)
    assert _fd_count() == before


def test_send_console_missing_socket_is_not_found(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody.sock")
    master, replica = os.openpty()
    try:
        with pytest.raises(NotFound, match="nobody.sock"):
            send_console(path, master)
    finally:
        _close(master, replica)


def test_send_console_regular_file_is_invalid_argument(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_text("")
    master, replica = os.openpty()
    try:
        with pytest.raises(InvalidArgument, match="is not a socket"):
            send_console(str(path), master)
    finally:
        _close(master, replica)


def test_send_console_stale_socket_is_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(path)  # bound, never listening, then closed: the file stays, nobody answers
    master, replica = os.openpty()
    try:
        with pytest.raises(ServiceUnavailable, match="stale.sock"):
            send_console(path, master)
    finally:
        _close(master, replica)


# --- TerminalRelay ----------------------------------------------------------------------------


class Rig:
    """A container pty (master handed to the relay, replica kept as the container) plus stdio pipes."""

    def __init__(self) -> None:
        master, self.replica = os.openpty()
        self.stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        self.master = master
        self.relay = TerminalRelay(master, stdin_fd=self.stdin_r, stdout_fd=self.stdout_w)

    def close(self) -> None:
        self.relay.close()
        _close(self.replica, self.stdin_r, self.stdin_w, self.stdout_r, self.stdout_w)


@pytest.fixture
def rig() -> Iterator[Rig]:
    before = _fd_count()
    r = Rig()
    yield r
    r.close()
    assert _fd_count() == before


def test_relay_copies_both_ways_and_ends_when_the_container_closes(rig: Rig) -> None:
    rig.relay.start()
    os.write(rig.replica, b"from container\n")
    assert b"from container" in _read_until(rig.stdout_r, b"from container")
    os.write(rig.stdin_w, b"from user\n")
    assert _read_until(rig.replica, b"\n") == b"from user\n"
    assert not rig.relay.wait(0.05)
    os.close(rig.replica)
    assert rig.relay.wait(5)


def test_relay_keeps_output_flowing_after_stdin_eof(rig: Rig) -> None:
    rig.relay.start()
    os.close(rig.stdin_w)
    time.sleep(0.05)  # let the relay see the EOF first
    os.write(rig.replica, b"still here\n")
    assert b"still here" in _read_until(rig.stdout_r, b"still here")
    os.close(rig.replica)
    assert rig.relay.wait(5)


def test_relay_drains_all_output_before_wait_returns(rig: Rig) -> None:
    rig.relay.start()
    payload = b"x" * 32768  # more than a pty buffer, less than the stdout pipe holds
    os.write(rig.replica, payload)
    os.close(rig.replica)
    assert rig.relay.wait(5)
    os.close(rig.stdout_w)
    out = b""
    while chunk := os.read(rig.stdout_r, 65536):
        out += chunk
    assert out == payload


def test_relay_close_is_idempotent_and_closes_the_master(rig: Rig) -> None:
    rig.relay.start()
    rig.relay.close()
    assert rig.relay.wait(1)
    rig.relay.close()
    with pytest.raises(OSError):
        os.fstat(rig.master)


def test_relay_close_without_start_closes_the_master() -> None:
    before = _fd_count()
    master, replica = os.openpty()
    TerminalRelay(master).close()
    os.close(replica)
    assert _fd_count() == before


def test_relay_copies_window_size_and_raw_mode_from_a_tty_stdin() -> None:
    before = _fd_count()
    term_master, term = os.openpty()  # the user's terminal, stdin being its replica side
    master, replica = os.openpty()
    stdout_r, stdout_w = os.pipe()
    _set_winsize(term, 33, 101)
    cooked = termios.tcgetattr(term)
    relay = TerminalRelay(master, stdin_fd=term, stdout_fd=stdout_w)
    try:
        relay.start()
        assert _winsize(replica) == (33, 101)
        assert not termios.tcgetattr(term)[3] & termios.ICANON
        _set_winsize(term, 40, 120)
        relay.resize()
        assert _winsize(replica) == (40, 120)
        # Raw stdin: a keystroke reaches the container at once (the container's own tty is made
        # raw too, so its line discipline does not hold the byte back either).
        tty.setraw(replica)
        os.write(term_master, b"k")
        assert _read_until(replica, b"k") == b"k"
    finally:
        relay.close()
        assert termios.tcgetattr(term) == cooked
        _close(term_master, term, replica, stdout_r, stdout_w)
    assert _fd_count() == before
