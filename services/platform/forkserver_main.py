"""The fork server's process: its socket, its one platform connection, its loop, its reaping.

It is single-threaded and imports no ZMQ (whose I/O threads would make clone() unsafe), so it
speaks the wire envelope over SOCK_SEQPACKET (``$RUN/forkserver.sock``) through the same
Dispatcher every service uses. Beside replies it sends unsolicited exit events
(``{"v": 1, "event": "exit", "body": TaskExit}``) to the connected platform; each exit is in the
ExitLog first, so one that happens while no platform is connected is reported by Tasks later.

It outlives the platform that started it (its own session; under systemd ``KillMode=process``):
a platform that dies or restarts only drops the connection, and the next one connects to the
same fork server and finds every task where it was. It ends on SIGTERM (``controller down``),
killing its containers, or, holding no container at all, when its platform hangs up or none
connects for a while.

Run as ``python -m services.platform.forkserver_main --run-dir DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import time
from pathlib import Path

import cbor2

from common import fdpass, wire
from common import log as logconf
from common.errors import ConflictError, ZerovisorError
from common.messages.platform import TaskExit
from common.rpc import Dispatcher, Registry
from common.rundir import FORKSERVER, InstanceLock, RunDir
from services.platform.forkserver import ForkServer
from services.platform.forkserver_tasks import TaskTable

log = logging.getLogger(__name__)

#: How long a new fork server waits for the lock of one that is on its way out.
LOCK_TIMEOUT = 10.0
#: How long a fork server with no platform and no container waits for one before it exits
#: (its platform died before it connected).
IDLE_TIMEOUT = 10.0


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit status, or 128 + the killing signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def reap(table: TaskTable) -> list[TaskExit]:
    """Collect every child that exited; keep each container's exit durably before reporting it."""
    exits = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        task = next((t for t in table.live.values() if t.pid == pid), None)
        execd = table.execs.get(pid)
        if task is not None:
            cid, ns_pid = task.cid, 0
            if task.stub is not None:
                task.stub.sync.close()
            del table.live[cid]
        elif execd is not None:
            cid, ns_pid = execd.cid, execd.ns_pid
            table.consoles.release(pid)  # nobody is left to read it
        else:
            continue  # a child we no longer know
        if cid not in table.cgroups:
            continue  # its container is destroyed: nobody will ask
        event = TaskExit(cid=cid, pid=pid, init=task is not None, exit_code=exit_code(status), ns_pid=ns_pid)
        table.exit_log.record(event)
        exits.append(event)
    return exits


def shutdown(table: TaskTable) -> None:
    """Kill every container of this fork server and remove its cgroups.

    The inits would die with us anyway (parent-death signal), but a frozen one would linger
    until thawed, and the cgroups would stay behind.
    """
    for cid in list(table.cgroups):
        try:
            table.remove(cid)
        except OSError as e:
            log.warning("removing the cgroup of %r: %s", cid, e)


def encode_event(event: str, body: object) -> bytes:
    """An unsolicited event frame on the platform connection."""
    return cbor2.dumps({"v": wire.WIRE_VERSION, "event": event, "body": wire.to_wire(body)})


class PlatformLink:
    """The one platform connected at a time. Owns its socket until it is dropped."""

    def __init__(self, poller: select.poll) -> None:
        self._poller = poller
        self.conn: socket.socket | None = None

    def fileno(self) -> int:
        return self.conn.fileno() if self.conn is not None else -1

    def accept(self, listener: socket.socket) -> None:
        """Take a new platform; one still connected is gone (its successor holds the lock)."""
        # A platform that stops reading must not freeze the loop: it is dropped instead.
        conn = fdpass.accept_peer(listener, timeout=5.0)
        if conn is None:
            return
        self.drop()
        self.conn = conn
        self._poller.register(conn.fileno(), select.POLLIN)
        log.info("platform connected")

    def send(self, frame: bytes, fds: list[int] | None = None) -> None:
        """Send to the platform; one that is gone is dropped (what it missed is in the ExitLog)."""
        if self.conn is None:
            return
        try:
            fdpass.send_frame(self.conn, frame, fds)
        except (OSError, ZerovisorError) as e:
            log.warning("platform connection: %s; dropped", e)
            self.drop()

    def drop(self) -> None:
        if self.conn is not None:
            self._poller.unregister(self.conn.fileno())
            self.conn.close()
            self.conn = None


def serve(listener: socket.socket, run_dir: Path) -> None:
    """Answer platforms on listener and reap tasks until SIGTERM, or until a platform hangs up
    and no container is left, or none connects for IDLE_TIMEOUT while none is held."""
    poller = select.poll()
    server = ForkServer(run_dir, poller)
    table = server.table
    registry = Registry()
    registry.register(server)
    dispatcher = Dispatcher(registry)
    link = PlatformLink(poller)
    terminated = False

    def on_term(_signo: int, _frame: object) -> None:
        nonlocal terminated
        terminated = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C at the terminal of `controller up` is not for us
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    idle_since = time.monotonic()
    while not terminated:
        if link.conn is not None or table.cgroups:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_TIMEOUT:
            log.info("no platform and no container for %.0fs; fork server exits", IDLE_TIMEOUT)
            return
        for fd, _ in poller.poll(1000):
            if fd == wake_r:
                fdpass.drain(wake_r)
            elif fd in table.late:
                table.read_late(fd)
            elif fd in table.listener_fds:
                table.drop_listener(fd)
            elif fd == listener.fileno():
                link.accept(listener)
            elif fd == link.fileno() and link.conn is not None:
                hung_up = not _answer(link, link.conn, dispatcher)
                if hung_up and not table.cgroups:
                    log.info("platform hung up and no container is left; fork server exits")
                    return
        for event in reap(table):
            link.send(encode_event("exit", event))
        table.consoles.expire(time.monotonic())
    log.info("SIGTERM: fork server kills its containers and exits")
    link.drop()
    shutdown(table)


def _answer(link: PlatformLink, conn: socket.socket, dispatcher: Dispatcher) -> bool:
    """Answer one request of the platform; False when it hung up (and was dropped)."""
    try:
        frame, fds = fdpass.recv_frame(conn)
    except (OSError, ZerovisorError) as e:
        log.warning("platform connection: %s", e)
        frame, fds = b"", []
    if not frame and not fds:
        log.info("platform hung up")
        link.drop()
        return False
    reply, out_fds = dispatcher.handle(frame, fds)
    try:
        link.send(reply, out_fds)
    finally:
        fdpass.close_all(out_fds)
    return True


def take_lock(run_dir: RunDir) -> InstanceLock:
    """The fork server's instance lock, waiting a while for a predecessor that is exiting."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            return InstanceLock(run_dir, FORKSERVER)
        except ConflictError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    """Entry point of the fork-server process."""
    parser = argparse.ArgumentParser(prog="forkserver")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--debug", action="store_true")
    opts = parser.parse_args()
    logconf.configure("forkserver", None, "text", opts.debug)
    run_dir = RunDir.at(opts.run_dir)
    lock = take_lock(run_dir)
    path = run_dir.forkserver_socket
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        path.unlink(missing_ok=True)  # we hold the lock: a socket file here is a dead instance's
        listener.bind(str(path))
        listener.listen(4)
        listener.setblocking(False)
        serve(listener, run_dir.path)
    finally:
        # Unlinked before the lock goes, so a platform never connects to a fork server on its way out.
        path.unlink(missing_ok=True)
        listener.close()
        lock.release()


if __name__ == "__main__":
    main()
