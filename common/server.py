"""ServiceLoop: the one main-loop shape every zerovisor service runs.

The loop watches the service's ROUTER socket, its fd channel (listening socket and accepted
connections), a signal wakeup fd, and any fd a service adds with ``add_reader`` (the sentry's
seccomp listeners, the platform's fork-server socket). Requests are answered one at a time by a
Dispatcher. SIGTERM and SIGINT end the loop after the current request; the sockets are closed
and their files removed.

The sentry answers trapped syscalls from this loop, so its shape is the hot path's: the loop
sleeps in poll(2) on the "hot" fds (seccomp listeners) and on one epoll fd that holds all the
others. Polled directly, a listener's wake-up comes on the trapping task's CPU as the listener
asks (an epoll in between loses that; KERNEL-FACTS), and each wait polls two fds, not every fd
the service has (the per-fd poll work was the sentry's largest cost after the context switch);
a zmq.Poller would cost microseconds more. A ZMQ socket joins the epoll set through its ZMQ_FD,
which only signals that its state may have changed: so each is drained until it has nothing
left, and its ZMQ_EVENTS is checked again whenever the loop is idle for a tick, in case a change
went unsignalled.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import cast

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
#: While events come, how often at most tick callbacks run (not after every event: the
#: sentry's loop runs once per trapped syscall).
BUSY_TICK = 0.05

Reader = Callable[[int], None]
#: A reader that also gets the poll events: select.POLLIN, and POLLHUP or POLLERR for a hangup.
EventReader = Callable[[int, int], None]
#: What a watched fd's callback is called with: (fd, events).
_Handler = Callable[[int, int], None]


class ServiceLoop:
    """Serve a Dispatcher on a run directory's ZMQ endpoint and fd channel until signalled."""

    def __init__(self, service: str, run_dir: RunDir, dispatcher: Dispatcher) -> None:
        self.service = service
        self.run_dir = run_dir
        self.dispatcher = dispatcher
        self.stopping = False
        #: Every fd watched -> its callback.
        self._handlers: dict[int, _Handler] = {}
        #: The fds in the poll set itself, beside the epoll fd.
        self._hot: set[int] = set()
        self._ticks: list[Callable[[], None]] = []
        self._conns: dict[int, socket.socket] = {}
        #: ZMQ sockets and their callbacks, which must drain them.
        self._sockets: list[tuple[zmq.Socket[bytes], Callable[[], None]]] = []
        self._cleanups: list[Callable[[], None]] = []
        # Both owned here: closed when serve() ends.
        self._epoll = select.epoll()
        self._poller = select.poll()
        # The epoll set is one hot fd: ready, it hands on what it found ready.
        self._watch(self._epoll.fileno(), lambda _fd, _events: self._dispatch(self._epoll.poll(0)), hot=True)

    def add_reader(self, fd: int, callback: Reader) -> None:
        """Call callback(fd) whenever fd is readable. The caller keeps owning fd."""
        self._watch(fd, lambda fd, _events: callback(fd))

    def add_event_reader(self, fd: int, callback: EventReader, hot: bool = False) -> None:
        """Call callback(fd, events) whenever fd is readable or hung up. The caller keeps owning fd.

        A hot fd is polled directly, not through the epoll set (see the module's docstring).
        """
        self._watch(fd, callback, hot)

    def add_socket(self, sock: zmq.Socket[bytes], callback: Callable[[], None]) -> None:
        """Call callback() whenever the ZMQ socket sock may have messages; it must receive until
        none is left. The caller keeps owning sock."""
        self._sockets.append((sock, callback))
        self._watch(cast(int, sock.getsockopt(zmq.FD)), lambda _fd, _events: self._drain_socket(sock, callback))

    def _watch(self, fd: int, handler: _Handler, hot: bool = False) -> None:
        self._handlers[fd] = handler
        if hot:
            self._hot.add(fd)
            self._poller.register(fd, select.POLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        """Stop watching fd (before the caller closes it)."""
        if self._handlers.pop(fd, None) is None:
            return
        if fd in self._hot:
            self._hot.discard(fd)
            self._poller.unregister(fd)
        else:
            self._epoll.unregister(fd)

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run callback when the loop ends, last added first (after the sockets are closed)."""
        self._cleanups.append(callback)

    def stop(self) -> None:
        """End the loop after the current event."""
        self.stopping = True

    def add_tick(self, callback: Callable[[], None]) -> None:
        """Run callback about once a second when idle, and every BUSY_TICK seconds while events
        come (each callback keeps its own, longer, interval if it has one)."""
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
            self.add_socket(router, lambda: self._drain_router(router))
            self.add_reader(listener.fileno(), lambda _fd: self._accept(listener))
            self.add_reader(wake_r, fdpass.drain)
            sdnotify.notify(f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}")
            log.info("%s serving on %s (pid %d)", self.service, self.run_dir.path, os.getpid())
            self._loop()
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
            self._epoll.close()
            self.run_dir.zmq_path(self.service).unlink(missing_ok=True)
            self.run_dir.socket_path(self.service).unlink(missing_ok=True)
            for cleanup in reversed(self._cleanups):
                try:
                    cleanup()
                except Exception:
                    log.exception("cleanup %r failed", cleanup)
            log.info("%s stopped", self.service)

    def _loop(self) -> None:
        poll, monotonic, next_tick = self._poller.poll, time.monotonic, 0.0
        while not self.stopping:
            ready = poll(TICK_MS)
            self._dispatch(ready)
            if not ready:
                # Idle for a tick: a ZMQ socket whose change went unsignalled is served now.
                for sock, callback in self._sockets:
                    self._drain_socket(sock, callback)
            if not ready or monotonic() >= next_tick:
                next_tick = monotonic() + BUSY_TICK
                for tick in self._ticks:
                    tick()

    def _dispatch(self, ready: list[tuple[int, int]]) -> None:
        """Call the callbacks of the fds found ready, until one stops the loop."""
        for fd, events in ready:
            handler = self._handlers.get(fd)
            if handler is not None:  # an earlier callback of this batch may have removed it
                handler(fd, events)
            if self.stopping:
                return

    @staticmethod
    def _drain_socket(sock: zmq.Socket[bytes], callback: Callable[[], None]) -> None:
        """Run callback until sock has nothing to receive: its ZMQ_FD signals again only for a
        change that comes after its ZMQ_EVENTS was read."""
        while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            callback()

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
