"""ServiceLoop: the one main-loop shape every zerovisor service runs.

One zmq.Poller watches the service's ROUTER socket, its fd channel (listening socket and
accepted connections), a signal wakeup fd, and any fd a service adds with ``add_reader``
(the sentry's seccomp listeners, the platform's fork-server socket). Requests are answered
one at a time by a Dispatcher. SIGTERM and SIGINT end the loop after the current request; the
sockets are closed and their files removed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType

import zmq

from common import fdpass, sdnotify
from common.errors import ZerovisorError
from common.rpc import Dispatcher
from common.rundir import RunDir

log = logging.getLogger(__name__)

#: ZMQ drops (disconnects) a peer whose message exceeds this; between wire.MAX_MESSAGE_BYTES
#: and this, the peer gets a TOO_LARGE error reply instead.
ZMQ_HARD_LIMIT = 128 << 20
#: How often the loop wakes with nothing to do, to run tick callbacks.
TICK_MS = 1000

Reader = Callable[[int], None]
#: A reader that also gets the poll events: zmq.POLLIN, and zmq.POLLERR for a hangup.
EventReader = Callable[[int, int], None]


class ServiceLoop:
    """Serve a Dispatcher on a run directory's ZMQ endpoint and fd channel until signalled."""

    def __init__(self, service: str, run_dir: RunDir, dispatcher: Dispatcher) -> None:
        self.service = service
        self.run_dir = run_dir
        self.dispatcher = dispatcher
        self.stopping = False
        self._readers: dict[int, Reader] = {}
        self._event_readers: dict[int, EventReader] = {}
        self._ticks: list[Callable[[], None]] = []
        self._conns: dict[int, socket.socket] = {}
        self._sockets: dict[zmq.Socket[bytes], Callable[[], None]] = {}
        self._cleanups: list[Callable[[], None]] = []
        self._poller = zmq.Poller()

    def add_reader(self, fd: int, callback: Reader) -> None:
        """Call callback(fd) whenever fd is readable. The caller keeps owning fd."""
        self._readers[fd] = callback
        self._poller.register(fd, zmq.POLLIN)

    def add_event_reader(self, fd: int, callback: EventReader) -> None:
        """Call callback(fd, events) whenever fd is readable or hung up. The caller keeps owning fd."""
        self._event_readers[fd] = callback
        self._poller.register(fd, zmq.POLLIN)

    def add_socket(self, sock: zmq.Socket[bytes], callback: Callable[[], None]) -> None:
        """Call callback() whenever the ZMQ socket sock has messages. The caller keeps owning sock."""
        self._sockets[sock] = callback
        self._poller.register(sock, zmq.POLLIN)

    def remove_reader(self, fd: int) -> None:
        """Stop watching fd (before the caller closes it)."""
        if self._readers.pop(fd, None) is not None or self._event_readers.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run callback when the loop ends, last added first (after the sockets are closed)."""
        self._cleanups.append(callback)

    def stop(self) -> None:
        """End the loop after the current event."""
        self.stopping = True

    def add_tick(self, callback: Callable[[], None]) -> None:
        """Run callback about once a second and after every batch of events."""
        self._ticks.append(callback)

    def _on_signal(self, signo: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signo).name)
        self.stopping = True

    def serve(self) -> None:
        """Bind, announce readiness, and serve until SIGTERM/SIGINT."""
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.setsockopt(zmq.MAXMSGSIZE, ZMQ_HARD_LIMIT)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            # We hold the instance lock, so any socket file left here belongs to a dead instance.
            for stale in (self.run_dir.zmq_path(self.service), self.run_dir.socket_path(self.service)):
                stale.unlink(missing_ok=True)
            router.bind(self.run_dir.endpoint(self.service))
            listener.bind(str(self.run_dir.socket_path(self.service)))
            listener.listen(64)
            listener.setblocking(False)
            self._poller.register(router, zmq.POLLIN)
            self.add_reader(listener.fileno(), lambda _fd: self._accept(listener))
            self.add_reader(wake_r, fdpass.drain)
            sdnotify.notify(f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}")
            log.info("%s serving on %s (pid %d)", self.service, self.run_dir.path, os.getpid())
            self._loop(router)
        finally:
            sdnotify.notify("STOPPING=1")
            signal.set_wakeup_fd(old_wakeup)
            for signo, handler in old_handlers.items():
                signal.signal(signo, handler)
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            listener.close()
            router.close(linger=0)
            ctx.term()
            os.close(wake_r)
            os.close(wake_w)
            self.run_dir.zmq_path(self.service).unlink(missing_ok=True)
            self.run_dir.socket_path(self.service).unlink(missing_ok=True)
            for cleanup in reversed(self._cleanups):
                try:
                    cleanup()
                except Exception:
                    log.exception("cleanup %r failed", cleanup)
            log.info("%s stopped", self.service)

    def _loop(self, router: zmq.Socket[bytes]) -> None:
        while not self.stopping:
            for sock, events in self._poller.poll(TICK_MS):
                if sock is router:
                    self._drain_router(router)
                elif isinstance(sock, int) and sock in self._readers:
                    self._readers[sock](sock)
                elif isinstance(sock, int) and sock in self._event_readers:
                    self._event_readers[sock](sock, events)
                elif sock in self._sockets:
                    self._sockets[sock]()
                if self.stopping:
                    break
            for tick in self._ticks:
                tick()

    def _drain_router(self, router: zmq.Socket[bytes]) -> None:
        while True:
            try:
                parts = router.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            # DEALER peers send [frame]; REQ peers add an empty delimiter. Echo whatever routing
            # frames came so that either kind gets its reply.
            reply, fds = self.dispatcher.handle(parts[-1])
            fdpass.close_all(fds)  # ZMQ cannot carry files; results with files go on the fd channel
            router.send_multipart([*parts[:-1], reply])

    def _accept(self, listener: socket.socket) -> None:
        conn = fdpass.accept_peer(listener, timeout=5.0)
        if conn is None:
            return
        self._conns[conn.fileno()] = conn
        self.add_reader(conn.fileno(), self._on_conn)

    def _on_conn(self, fd: int) -> None:
        conn = self._conns[fd]
        try:
            frame, fds = fdpass.recv_frame(conn)
        except ZerovisorError as e:
            # Truncated: the fds that arrived are already closed; tell the peer why.
            self._send(conn, self.dispatcher.refuse(e), [])
            return
        except OSError as e:
            log.debug("fd channel: receive failed: %s", e)
            self._drop(fd)
            return
        if not frame and not fds:
            self._drop(fd)
            return
        answer = self.dispatcher.handle_or_defer(frame, fds, lambda reply, out: self._send_later(conn, reply, out))
        if answer is not None:
            self._send_later(conn, *answer)

    def _send_later(self, conn: socket.socket, reply: bytes, fds: list[int]) -> None:
        """Send a reply (now, or once a deferred result is settled) unless the peer is gone;
        the reply's fds are closed either way."""
        try:
            if self._conns.get(conn.fileno()) is conn:  # a closed socket's fileno() is -1
                self._send(conn, reply, fds)
        finally:
            fdpass.close_all(fds)

    def _send(self, conn: socket.socket, reply: bytes, fds: list[int]) -> None:
        try:
            fdpass.send_frame(conn, reply, fds)
        except (OSError, ZerovisorError) as e:
            log.warning("fd channel: reply not delivered: %s", e)
            self._drop(conn.fileno())

    def _drop(self, fd: int) -> None:
        self.remove_reader(fd)
        conn = self._conns.pop(fd, None)
        if conn is not None:
            conn.close()
