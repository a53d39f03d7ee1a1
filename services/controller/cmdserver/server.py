"""CommandServer: a warm process that runs `controller` commands in forked workers.

One thread, one poll loop: it accepts connections, reads each request whole without blocking,
admits the caller (admission.py), forks a worker (worker.py) and then relays: the client's
signals to the worker, the worker's end (exit status or killing signal) to the client. A client
that goes away takes its worker with it (SIGKILL), as a `controller` process killed outright
takes its command. The server owns every connection and received file until the fork; after it,
the worker owns its copies and the server closes its own.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import signal
import socket
import sys
import time

from common.fdpass import peer_credentials
from services.controller.cmdserver.admission import ProcessView, admitted, process_view
from services.controller.cmdserver.protocol import (
    EVENT_SIZE,
    EXITED,
    KILLED,
    MAX_FDS,
    MAX_REQUEST,
    NOT_ADMITTED,
    REFUSED,
    SIGNAL,
    STALE,
    decode_event,
    decode_request,
    encode_event,
    request_length,
)
from services.controller.cmdserver.worker import run_worker

#: Seconds without a command after which the server exits (the next command starts another).
IDLE_EXIT = 60.0
#: Seconds a client has to send its whole request before it is dropped.
REQUEST_TIMEOUT = 5.0
#: Longest wait of the loop, so that idleness and slow requests are noticed.
TICK = 1.0
_ANCILLARY = socket.CMSG_SPACE((MAX_FDS + 1) * array.array("i").itemsize)


class Session:
    """One client: its request while it arrives, then its worker."""

    def __init__(self, conn: socket.socket) -> None:
        #: The connection (the server's until the session ends).
        self.conn = conn
        #: When it was accepted (monotonic seconds).
        self.accepted = time.monotonic()
        #: The request's bytes so far.
        self.data = bytearray()
        #: Files received with the request (the server's until it forks, or closes them).
        self.files: list[int] = []
        #: The worker's pid once forked.
        self.worker: int | None = None
        #: A pidfd of the worker (the server's), readable when it exits.
        self.pidfd: int | None = None


class CommandServer:
    """Serves the commands of one installation (key) on a listening socket it then owns."""

    def __init__(self, listener: socket.socket, key: str, watched: list[str]) -> None:
        self.listener: socket.socket | None = listener
        self.key = key
        self.own: ProcessView = process_view("/proc/self")
        #: The source files whose change makes the server stale, with their mtimes at start.
        self.code = _mtimes(watched)
        self.watched = watched
        self.poller = select.poll()
        self.poller.register(listener, select.POLLIN)
        #: Sessions by connection fd, and by worker pidfd.
        self.by_conn: dict[int, Session] = {}
        self.by_pidfd: dict[int, Session] = {}
        self.idle_since = time.monotonic()

    def serve(self) -> None:
        """Until idle for IDLE_EXIT, or stale and every worker done."""
        while self.listener is not None or self.by_conn:
            now = time.monotonic()
            if not self.by_conn and now - self.idle_since > IDLE_EXIT:
                break
            for fd, _ in self.poller.poll(TICK * 1000):
                if self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif fd in self.by_pidfd:
                    self._worker_ended(self.by_pidfd[fd])
                elif fd in self.by_conn:
                    self._readable(self.by_conn[fd])
            for session in [s for s in self.by_conn.values() if s.worker is None]:
                if time.monotonic() - session.accepted > REQUEST_TIMEOUT:
                    self._end(session)
        self._retire()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # the client gave up already (ECONNABORTED), or fds ran out: try later
            conn.setblocking(False)
            session = Session(conn)
            self.by_conn[conn.fileno()] = session
            self.poller.register(conn, select.POLLIN)

    def _readable(self, session: Session) -> None:
        if session.worker is None:
            self._read_request(session)
        else:
            self._read_events(session)

    def _read_request(self, session: Session) -> None:
        try:
            data, ancdata, _, _ = session.conn.recvmsg(1 << 16, _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError:
            self._end(session)
            return
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
                session.files.extend(fds)
        session.data += data
        length = request_length(bytes(session.data[:4]))
        if not data or len(session.data) > MAX_REQUEST or (length is not None and length > MAX_REQUEST):
            self._end(session)
        elif length is not None and len(session.data) >= length:
            self._start(session)

    def _start(self, session: Session) -> None:
        """A whole request: refuse it, or fork its worker."""
        try:
            request = decode_request(bytes(session.data))
        except ValueError:
            self._end(session)
            return
        if len(session.files) != len(request.fds) + 1:
            self._end(session)
            return
        if _mtimes(self.watched) != self.code:
            self._refuse(session, STALE)
            self._retire()  # a new server for the new code can take the name now
            return
        if request.key != self.key or not admitted(session.conn, self.own):
            self._refuse(session, NOT_ADMITTED)
            return
        client, _, _ = peer_credentials(session.conn)
        *files, cwd = session.files
        pid = os.fork()
        if pid == 0:
            self._detach_all()
            run_worker(request, files, cwd, os.getppid(), client)
        _close_all(session.files)
        session.files = []
        session.worker = pid
        session.pidfd = os.pidfd_open(pid)
        self.by_pidfd[session.pidfd] = session
        self.poller.register(session.pidfd, select.POLLIN)

    def _read_events(self, session: Session) -> None:
        """The client's forwarded signals; its hangup kills the worker."""
        assert session.worker is not None
        try:
            data = session.conn.recv(EVENT_SIZE * 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            os.kill(session.worker, signal.SIGKILL)  # not reaped yet: still our child
            self.poller.unregister(session.conn)
            return
        # Events are 5 bytes and sent whole: a torn one is a client that is not ours.
        for at in range(0, len(data) - len(data) % EVENT_SIZE, EVENT_SIZE):
            kind, value = decode_event(data[at : at + EVENT_SIZE])
            if kind == SIGNAL and 0 < value < signal.NSIG:
                os.kill(session.worker, value)

    def _worker_ended(self, session: Session) -> None:
        assert session.worker is not None
        _, status = os.waitpid(session.worker, 0)
        if os.WIFSIGNALED(status):
            event = encode_event(KILLED, os.WTERMSIG(status))
        else:
            event = encode_event(EXITED, os.waitstatus_to_exitcode(status))
        with contextlib.suppress(OSError):  # the client went first
            session.conn.send(event)
        self._end(session)

    def _refuse(self, session: Session, reason: int) -> None:
        with contextlib.suppress(OSError):
            session.conn.send(encode_event(REFUSED, reason))
        self._end(session)

    def _end(self, session: Session) -> None:
        """Forget a session and close what it held (its worker must be reaped already)."""
        fd = session.conn.fileno()
        if self.by_conn.pop(fd, None) is not None:
            with contextlib.suppress(KeyError):  # unregistered at the client's hangup
                self.poller.unregister(fd)
        session.conn.close()
        if session.pidfd is not None:
            self.by_pidfd.pop(session.pidfd, None)
            self.poller.unregister(session.pidfd)
            os.close(session.pidfd)
        _close_all(session.files)
        session.files = []
        if not self.by_conn:
            self.idle_since = time.monotonic()

    def _retire(self) -> None:
        """Stop taking commands (the name is free for another server at once)."""
        if self.listener is not None:
            self.poller.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def _detach_all(self) -> None:
        """In a new worker: let go of the server's socket objects without closing their fds
        (the worker closes every fd it does not keep; a socket object closing a number later
        would close one of the client's files)."""
        if self.listener is not None:
            self.listener.detach()
        for session in self.by_conn.values():
            session.conn.detach()


def _mtimes(paths: list[str]) -> list[int]:
    """The modification time of each path; -1 for one that is gone."""
    out = []
    for path in paths:
        try:
            out.append(os.stat(path).st_mtime_ns)
        except OSError:
            out.append(-1)
    return out


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def watched_files(root: str) -> list[str]:
    """What the server would run stale code from: the files of every module it imported from
    root, and the directories it imported packages from (an install adds and removes there)."""
    files = {m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    ours = sorted(f for f in files if f is not None and f.startswith(root + os.sep))
    dirs = sorted({os.path.dirname(os.path.dirname(f)) for f in files if f is not None and "site-packages" in f})
    return ours + dirs
