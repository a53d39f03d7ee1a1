"""A worker forked ahead of its command, so that a command does not wait for the fork.

Forking the server (tens of MB of imported objects) takes ~2.5 ms here before the child runs a
line: that is most of what a worker adds to a command. So the server keeps one Spare forked
while it waits: the spare drops every fd it inherited but its end of a socket pair and blocks
there; the server hands it the next admitted command (the request's bytes, the client's files,
the status pipe and the client's pid) and it becomes that command's worker (run_worker). The
server forks the next spare once that one is on its way. The hand-over is one message on the
fd channel's framing (common/fdpass.py, over a SEQPACKET pair).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import NoReturn

from common import fdpass
from common.errors import ZerovisorError
from common.fdlayout import place_fds
from common.processctl import PR_SET_PDEATHSIG, prctl
from services.controller.cmdserver.protocol import decode_request
from services.controller.cmdserver.worker import run_worker

_PID_SIZE = 4


class Spare:
    """The server's side of a spare worker: its pid, a pidfd of it and the socket it waits on
    (the server owns both until the spare is handed a command or killed)."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        #: The spare's pid (the server's child).
        self.pid = pid
        #: A pidfd of it, readable if it dies before it is used.
        self.pidfd = pidfd
        #: The server's end of the socket pair the spare waits on.
        self.sock = sock

    @classmethod
    def fork(cls, detach: Callable[[], None]) -> Spare | None:
        """Fork a spare; None if the system refuses (the server forks at request time then).
        detach runs in the spare first: it lets go of the server's socket objects."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        except OSError:
            return None
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            try:
                detach()
                ours.detach()
                _wait_for_command(theirs.detach(), server)
            finally:
                os._exit(1)  # a fork of the server never goes back to its loop
        theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            ours.close()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        return cls(pid, pidfd, ours)

    def hand_over(self, request: bytes, files: list[int], client: int) -> bool:
        """Give the spare its command: request as the client sent it, files (the client's, its
        working directory, then the status pipe's write end; the caller keeps its copies).
        False if the spare is gone: it then runs nothing, and the caller kills it."""
        try:
            fdpass.send_frame(self.sock, client.to_bytes(_PID_SIZE, "big") + request, files)
        except (OSError, ZerovisorError):
            return False  # the spare lacks the whole message: it cannot run the command
        finally:
            self.sock.close()
        return True

    def kill(self) -> None:
        """Kill and reap an unused spare, and close what the server held of it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.close()

    def reaped(self) -> bool:
        """Reap the spare if it has exited (then close what the server held of it); whether it
        had."""
        if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
            return False
        self.close()
        return True

    def close(self) -> None:
        os.close(self.pidfd)
        self.sock.close()


def _wait_for_command(sock_fd: int, server: int) -> NoReturn:
    """In the spare: hold nothing of the server's, wait for a command and become its worker.
    Exits 0 if the server closes the socket pair first (it is going away)."""
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != server:
            os._exit(0)
        [sock_fd] = place_fds([], [], [sock_fd])
        with socket.socket(fileno=sock_fd) as sock:
            data, files = fdpass.recv_frame(sock)
        if not data:
            os._exit(0)
        client = int.from_bytes(data[:_PID_SIZE], "big")
        request = decode_request(data[_PID_SIZE:])
        *client_files, cwd, status_end = files
    except BaseException:  # noqa: BLE001 - the server reaps us and answers the client from our status
        os._exit(1)
    run_worker(request, client_files, cwd, status_end, server, client)
