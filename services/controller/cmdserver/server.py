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

from common import fdpass
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
    Request,
    decode_event,
    decode_request,
    encode_event,
    request_length,
)
from services.controller.cmdserver.spare import Spare
from services.controller.cmdserver.worker import run_worker

#: Seconds without a command after which the server exits (the next command starts another).
IDLE_EXIT = 60.0
#: Seconds a client has to send its whole request before it is dropped.
REQUEST_TIMEOUT = 5.0
#: Spares that may die unused in a row before the server stops forking them ahead.
SPARE_DEATHS = 3
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
        #: The read end of the pipe the worker writes its exit status to (the server's) before
        #: its exit, whose teardown (~1.5 ms of a forked interpreter) the client need not wait for.
        self.status_pipe: int | None = None
        #: Whether the client has its answer already.
        self.answered = False


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
        #: Sessions by connection fd, by worker pidfd and by status pipe.
        self.by_conn: dict[int, Session] = {}
        self.by_pidfd: dict[int, Session] = {}
        self.by_status: dict[int, Session] = {}
        self.idle_since = time.monotonic()
        #: The worker forked ahead of the next command, if any.
        self.spare: Spare | None = None
        #: Spares that died unused in a row: past SPARE_DEATHS, commands fork their own.
        self.spare_deaths = 0

    def serve(self) -> None:
        """Until idle for IDLE_EXIT, or stale and every worker done."""
        while self.listener is not None or self.by_conn:
            if self.spare is None and self.listener is not None and self.spare_deaths < SPARE_DEATHS:
                self.spare = Spare.fork(self._detach_all)
                if self.spare is not None:
                    self.poller.register(self.spare.pidfd, select.POLLIN)
            now = time.monotonic()
            if not self.by_conn and now - self.idle_since > IDLE_EXIT:
                break
            for fd, _ in self.poller.poll(TICK * 1000):
                if self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif self.spare is not None and fd == self.spare.pidfd:
                    self._spare_died()
                elif fd in self.by_pidfd:
                    self._worker_ended(self.by_pidfd[fd])
                elif fd in self.by_status:
                    self._status_reported(self.by_status[fd])
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
        session.files.extend(fdpass.received_fds(ancdata))
        session.data += data
        length = request_length(bytes(session.data[:4]))
        if not data or len(session.data) > MAX_REQUEST or (length is not None and length > MAX_REQUEST):
            self._end(session)
        elif length is not None and len(session.data) >= length:
            self._start(session, length)

    def _start(self, session: Session, length: int) -> None:
        """A whole request, the first length bytes: refuse it, or fork its worker."""
        # A forwarded signal may follow the request in the same read: it is for the worker.
        session.data, early = session.data[:length], bytes(session.data[length:])
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
        try:
            client, _, _ = peer_credentials(session.conn)
            allowed = request.key == self.key and admitted(session.conn, self.own)
        except OSError:
            allowed = False
        if not allowed or not self._fork_worker(session, request, client):
            self._refuse(session, NOT_ADMITTED)  # nothing ran: the client runs its command itself
        elif early and session.pidfd is not None:  # a worker runs, watched and not reaped
            self._forward(session, early)

    def _fork_worker(self, session: Session, request: Request, client: int) -> bool:
        """Start the worker of an admitted request, the spare if there is one; False if none
        could be started (nothing ran)."""
        try:
            status_pipe, status_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        pid, pidfd = self._use_spare(session, status_end, client)
        if pid is None:
            try:
                pid = os.fork()
            except OSError:
                fdpass.close_all([status_pipe, status_end])
                return False
            if pid == 0:
                try:
                    *files, cwd = session.files
                    self._detach_all()
                    run_worker(request, files, cwd, status_end, os.getppid(), client)
                finally:
                    os._exit(1)  # a fork of the server never goes back to its loop
        os.close(status_end)
        fdpass.close_all(session.files)
        session.files = []
        session.worker = pid
        session.status_pipe = status_pipe
        self.by_status[status_pipe] = session
        self.poller.register(status_pipe, select.POLLIN)
        if pidfd is None:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                # Out of fds: the command cannot be watched, so it is ended (its client says so).
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self._end(session)
                return True
        session.pidfd = pidfd
        self.by_pidfd[pidfd] = session
        self.poller.register(pidfd, select.POLLIN)
        return True

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
        self._forward(session, data)

    def _forward(self, session: Session, data: bytes) -> None:
        """The signals of the client's events in data, to its worker (not reaped yet)."""
        assert session.worker is not None
        # Events are 5 bytes and sent whole: a torn one is a client that is not ours.
        for at in range(0, len(data) - len(data) % EVENT_SIZE, EVENT_SIZE):
            kind, value = decode_event(data[at : at + EVENT_SIZE])
            if kind == SIGNAL and 0 < value < signal.NSIG:
                os.kill(session.worker, value)

    def _use_spare(self, session: Session, status_end: int, client: int) -> tuple[int | None, int | None]:
        """Hand the session's command to the spare: (its pid, its pidfd, now the session's),
        or (None, None) without a spare that took it."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None, None
        self.poller.unregister(spare.pidfd)
        if not spare.hand_over(bytes(session.data), [*session.files, status_end], client):
            spare.kill()
            return None, None
        self.spare_deaths = 0
        return spare.pid, spare.pidfd

    def _spare_died(self) -> None:
        """The spare exited before any command (a bug, or a kill from outside): reap it."""
        assert self.spare is not None
        pidfd = self.spare.pidfd
        if self.spare.reaped():
            self.poller.unregister(pidfd)
            self.spare = None
            self.spare_deaths += 1

    def _status_reported(self, session: Session) -> None:
        """The worker's status, written just before its exit: the client's answer."""
        assert session.status_pipe is not None
        try:
            data = os.read(session.status_pipe, 4)
        except BlockingIOError:
            return  # not yet (the poll's event was for an fd closed and opened again since)
        self._close_status_pipe(session)
        if len(data) == 4:
            self._answer(session, encode_event(EXITED, int.from_bytes(data, "big", signed=True)))

    def _worker_ended(self, session: Session) -> None:
        assert session.worker is not None
        pid, status = os.waitpid(session.worker, os.WNOHANG)
        if pid == 0:
            return  # not yet (as for _status_reported)
        if os.WIFSIGNALED(status):
            self._answer(session, encode_event(KILLED, os.WTERMSIG(status)))
        else:
            self._answer(session, encode_event(EXITED, os.waitstatus_to_exitcode(status)))
        self._end(session)

    def _answer(self, session: Session, event: bytes) -> None:
        """Send the client its one answer (a second, from the reaping, is dropped)."""
        if session.answered:
            return
        session.answered = True
        with contextlib.suppress(OSError):  # the client went first
            session.conn.send(event)

    def _close_status_pipe(self, session: Session) -> None:
        if session.status_pipe is not None:
            self.by_status.pop(session.status_pipe, None)
            self.poller.unregister(session.status_pipe)
            os.close(session.status_pipe)
            session.status_pipe = None

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
        self._close_status_pipe(session)
        if session.pidfd is not None:
            self.by_pidfd.pop(session.pidfd, None)
            self.poller.unregister(session.pidfd)
            os.close(session.pidfd)
        fdpass.close_all(session.files)
        session.files = []
        if not self.by_conn:
            self.idle_since = time.monotonic()

    def _retire(self) -> None:
        """Stop taking commands (the name is free for another server at once)."""
        if self.listener is not None:
            self.poller.unregister(self.listener)
            self.listener.close()
            self.listener = None
        if self.spare is not None:
            self.poller.unregister(self.spare.pidfd)
            self.spare.kill()
            self.spare = None

    def _detach_all(self) -> None:
        """In a new worker: let go of the server's socket objects without closing their fds
        (the worker closes every fd it does not keep; a socket object closing a number later
        would close one of the client's files)."""
        if self.listener is not None:
            self.listener.detach()
        if self.spare is not None:
            self.spare.sock.detach()
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


def watched_files(root: str) -> list[str]:
    """What the server would run stale code from: the files of every module it imported from
    root, and the directories it imported packages from (an install adds and removes there)."""
    files = {m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    ours = sorted(f for f in files if f is not None and f.startswith(root + os.sep))
    dirs = sorted({os.path.dirname(os.path.dirname(f)) for f in files if f is not None and "site-packages" in f})
    return ours + dirs
