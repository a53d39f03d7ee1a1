"""The container init's file descriptors: the sync channel's messages, the fd layout, the
donated files and the terminal (helpers of stub.py and stub_child.py).

Everything here but send_message and recv_message runs only in the cloned init.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import termios
from typing import Any

from common import fdpass
from common.errors import ZerovisorError
from services.platform import linux
from services.platform.mounts import SetupError, doing


def send_message(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one sync message, with fds (still the caller's) as SCM_RIGHTS."""
    fdpass.send_frame(sock, json.dumps(message).encode(), fds)


def recv_message(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """Receive one sync message and the fds that came with it (the caller's, close-on-exec).

    The message is None at EOF (the peer closed, died or exec'd).
    """
    try:
        data, fds = fdpass.recv_frame(sock)
    except ConnectionResetError:
        # A peer that dies with our message unread resets instead of closing.
        return None, []
    except ZerovisorError as e:  # truncated: fdpass closed what arrived
        raise ValueError(str(e)) from None
    if not data:
        fdpass.close_all(fds)
        return None, []
    try:
        message = json.loads(data)
        if not isinstance(message, dict):
            raise ValueError(f"sync message is not a map: {data[:80]!r}")
    except ValueError:
        fdpass.close_all(fds)
        raise
    return message, fds


def expect_step(sock: socket.socket, what: str) -> dict[str, Any]:
    """Wait for the parent's step what (a child's side); a parent that is gone ends the child
    (nobody is left to tell). Files that come with it are closed."""
    message, fds = recv_message(sock)
    fdpass.close_all(fds)
    if message is None:
        os._exit(1)
    if message.get("sync") != what:
        raise SetupError(f"waiting for {what!r}: got {message!r:.80}")
    return message


def send_terminal(sock: socket.socket) -> None:
    """Allocate the process's terminal (open_terminal) and send its master to the parent."""
    master = open_terminal()
    try:
        send_message(sock, {"sync": "console"}, [master])
    finally:
        os.close(master)


def arrange_fds(sock: socket.socket, stdio: list[int]) -> socket.socket:
    """stdio[i] becomes fd i, the sync socket fd len(stdio); every other fd is closed."""
    count = len(stdio)
    sync_fd = sock.detach()
    # Move everything above the targets first, so that no dup2 overwrites a source.
    base = max([*stdio, sync_fd, count]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in stdio]
    high_sync = fcntl.fcntl(sync_fd, fcntl.F_DUPFD_CLOEXEC, base)
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=True)
    os.dup2(high_sync, count, inheritable=False)
    linux.close_range(count + 1)
    return socket.socket(fileno=count)


def place_donated(sock: socket.socket, donated: list[int], targets: list[int]) -> socket.socket:
    """Make donated[i] the guest fd targets[i]; the sync socket moves above them all."""
    floor = max([*targets, *donated, sock.fileno()]) + 1
    sync = socket.socket(fileno=fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, floor))
    sock.close()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in donated]
    for fd in donated:
        os.close(fd)
    for fd, target in zip(high, targets, strict=True):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    return sync


def open_terminal() -> int:
    """A pty of the container's devpts: the replica becomes stdio and controlling terminal.

    Returns the master, which the caller sends to the parent and closes.
    """
    with doing("allocating the container's terminal"):
        master = _above_stdio(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
        try:
            fcntl.ioctl(master, linux.TIOCSPTLCK, struct.pack("i", 0))
            (number,) = struct.unpack("I", fcntl.ioctl(master, linux.TIOCGPTN, b"\0\0\0\0"))
            replica = _above_stdio(os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_CLOEXEC))
        except BaseException:
            os.close(master)
            raise
    try:
        with doing("making the terminal the controlling terminal"):
            for fd in (0, 1, 2):
                os.dup2(replica, fd, inheritable=True)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    finally:
        os.close(replica)
    return master


def _above_stdio(fd: int) -> int:
    """fd moved above 0-2 (which may be free, for an exec'd process given no stdio): the
    replica is about to be copied there, and must not land on the master."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)
