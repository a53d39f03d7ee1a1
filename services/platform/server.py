"""Set-up of the platform service: its fork server, and the Platform domain.

The Platform domain relays each call to the fork server (its own process, see
forkserver_main.py) over one SOCK_SEQPACKET connection, and publishes the exits the fork server
reports as ``task.<cid>.exit`` events for the sentry. The fork server outlives the platform: a
platform that starts connects to the one already running, if any, and publishes again every
exit it kept, so that none that happened while no platform listened is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from common import fdpass, wire
from common.errors import MessageError, ServiceUnavailable, error_from_wire
from common.events import Publisher
from common.messages.execs import ExecArgs, ExecStarted
from common.messages.lifecycle import StartContainerArgs
from common.messages.platform import (
    ContainerRef,
    LaunchArgs,
    LaunchResult,
    ListenersArgs,
    ListenersResult,
    PidsResult,
    ProcessRef,
    ReapArgs,
    ReleaseResult,
    SignalArgs,
    SignalProcessArgs,
    SpecResult,
    StatsResult,
    TaskExit,
    TasksArgs,
    TasksResult,
)
from common.rundir import RunDir
from common.service import ServiceContext

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

R = TypeVar("R", bound="DataclassInstance")


#: How long a platform waits for the fork server it started to listen.
FORKSERVER_START_TIMEOUT = 20.0


def connect_forkserver(run_dir: RunDir, debug: bool = False) -> tuple[socket.socket, subprocess.Popen[bytes] | None]:
    """A connection to the run directory's fork server, started first if none runs; and the
    process, when this call started it (the caller reaps it if it dies first)."""
    path = run_dir.forkserver_socket
    sock = _try_connect(path)
    if sock is not None:
        return sock, None
    argv = [sys.executable, "-m", "services.platform.forkserver_main", "--run-dir", str(run_dir.path)]
    if debug:
        argv.append("--debug")
    # Its own session: the tasks it holds outlive the platform, and no terminal signal is theirs.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + FORKSERVER_START_TIMEOUT
    while (sock := _try_connect(path)) is None:
        rc = proc.poll()
        if rc is not None:
            raise ServiceUnavailable(f"the fork server exited with status {rc} before it listened on {path}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise ServiceUnavailable(f"the fork server did not listen on {path} in time")
        time.sleep(0.02)
    return sock, proc


def _try_connect(path: str | os.PathLike[str]) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


class ForkServerConnection:
    """The platform's end of the fork-server connection. Owns the socket (not the fork server,
    which outlives it)."""

    def __init__(self, run_dir: RunDir, publisher: Publisher, debug: bool = False) -> None:
        self.publisher = publisher
        self._ids = 0
        #: Called when the fork server is gone.
        self.on_lost: Callable[[], None] = lambda: None
        self.sock, self.proc = connect_forkserver(run_dir, debug)
        try:
            #: What the fork server held when we connected.
            self.held = self._handshake()
        except ServiceUnavailable:
            # It was on its way out (it had no container and its last platform had hung up):
            # the next one is started afresh.
            self.sock.close()
            self.sock, self.proc = connect_forkserver(run_dir, debug)
            self.held = self._handshake()

    def _handshake(self) -> TasksResult:
        return wire.from_wire(TasksResult, self.call("ForkServer.Tasks", TasksArgs()))

    def call(self, method: str, args: Any, fds: list[int] | None = None) -> dict[str, Any]:
        """One request to the fork server; the raw result map. The caller keeps fds."""
        result, out = self.call_with_fds(method, args, fds)
        fdpass.close_all(out)
        return result

    def call_with_fds(self, method: str, args: Any, fds: list[int] | None = None) -> tuple[dict[str, Any], list[int]]:
        """One request to the fork server; exit events that arrive meanwhile are published.

        The caller keeps ownership of fds and owns the reply's fds. Returns the raw result map.
        """
        self._ids += 1
        rid = self._ids
        fdpass.send_frame(self.sock, wire.encode_request(rid, method, wire.to_wire(args)), fds)
        while True:
            env, out = self._recv()
            if "event" in env:
                fdpass.close_all(out)
                self._publish(env)
                continue
            try:
                reply = wire.reply_from_envelope(env)
                if reply.id != rid:
                    raise MessageError(f"fork server answered {reply.id!r}, expected {rid}")
                if not reply.ok:
                    raise error_from_wire(reply.error)
            except BaseException:
                fdpass.close_all(out)
                raise
            return reply.result or {}, out

    def on_readable(self, _fd: int) -> None:
        """Publish the exit events the fork server sent while nobody was calling."""
        if not fdpass.readable(self.sock):
            # A call made by an earlier handler of the same poll batch read it already; a
            # blocking read now would wait for the fork server's next event, with calls queued.
            return
        try:
            env, fds = self._recv()
        except ServiceUnavailable as e:
            # Without its fork server the platform can do nothing: stop, and be restarted.
            log.error("%s; platform stops", e)
            self.on_lost()
            return
        fdpass.close_all(fds)
        if "event" not in env:
            raise MessageError("fork server sent a reply nobody asked for")
        self._publish(env)

    def _recv(self) -> tuple[dict[str, Any], list[int]]:
        """One frame: its envelope and fds (the caller's)."""
        try:
            frame, fds = fdpass.recv_frame(self.sock)
        except OSError as e:
            raise ServiceUnavailable(f"fork server: {e}") from None
        try:
            if not frame:
                raise ServiceUnavailable("fork server hung up")
            return wire.load_envelope(frame), fds
        except BaseException:
            fdpass.close_all(fds)
            raise

    def _publish(self, env: dict[str, Any]) -> None:
        if env.get("event") == "exit":
            event = wire.from_wire(TaskExit, env.get("body"))
            log.info("task %d of container %r exited with %d", event.pid, event.cid, event.exit_code)
            self.publisher.publish(f"task.{event.cid}.exit", "exit", event)

    def close(self) -> None:
        """Hang up; the fork server goes on with the tasks it holds (or exits, holding none)."""
        self.sock.close()
        if self.proc is not None:
            self.proc.poll()  # reaped if it died first; alive, it is on its own


class Platform:
    """The Platform domain: container tasks, through the fork server."""

    domain = "Platform"

    def __init__(self, forkserver: ForkServerConnection) -> None:
        self._fs = forkserver

    def launch(self, args: LaunchArgs) -> LaunchResult:
        """Create a container's init, set up and waiting to exec; with a terminal, its pty master."""
        return self._with_files("ForkServer.Launch", args, LaunchResult, args.fds, lambda r: len(r.fds) <= 1)

    def release(self, args: StartContainerArgs) -> ReleaseResult:
        """Let the init exec the program args describe; a trapping init's listener comes back
        (the fork server keeps its own copy)."""
        return self._with_files("ForkServer.Release", args, ReleaseResult, args.fds, lambda r: len(r.fds) <= 1)

    def tasks(self, args: TasksArgs) -> TasksResult:
        """Every container the fork server holds and every exit it kept (for a restarted sentry)."""
        return wire.from_wire(TasksResult, self._fs.call("ForkServer.Tasks", args))

    def spec(self, args: ContainerRef) -> SpecResult:
        """The spec a container was launched with (for a restarted sentry)."""
        return wire.from_wire(SpecResult, self._fs.call("ForkServer.Spec", args))

    def listeners(self, args: ListenersArgs) -> ListenersResult:
        """The seccomp listener of every trapping container (for a sentry that restarted)."""
        return self._with_files("ForkServer.Listeners", args, ListenersResult, [], lambda r: len(r.fds) == len(r.cids))

    def exec(self, args: ExecArgs) -> ExecStarted:
        """Start a process in a running container; its listener (and, with a terminal, its pty
        master) comes back, the fork server keeping its own copy of the listener."""
        return self._with_files(
            "ForkServer.Exec", args, ExecStarted, args.fds, lambda r: len(r.fds) <= 1 + args.terminal
        )

    def _with_files(self, method: str, args: Any, result_type: type[R], fds: list[int], fits: Callable[[R], bool]) -> R:
        """A fork-server call whose reply carries files: the result with them (the caller's);
        MessageError, every file closed, when fits says they do not match the result."""
        raw, received = self._fs.call_with_fds(method, args, fds=fds)
        try:
            result = dataclasses.replace(wire.from_wire(result_type, raw), fds=received)
            if not fits(result):
                raise MessageError(f"{method}: the fork server sent {len(received)} files that do not fit {raw!r:.120}")
        except BaseException:
            fdpass.close_all(received)
            raise
        return result

    def release_console(self, args: ProcessRef) -> None:
        """The CLI of an exec'd process holds its pty master: the fork server drops the copy it
        kept for a repeated Exec."""
        self._fs.call("ForkServer.ReleaseConsole", args)

    def reap(self, args: ReapArgs) -> None:
        """Exec'd processes whose status was waited for: the fork server forgets them."""
        self._fs.call("ForkServer.Reap", args)

    def signal_process(self, args: SignalProcessArgs) -> None:
        """Signal one process of a container, or its terminal's foreground process group."""
        self._fs.call("ForkServer.SignalProcess", args)

    def signal(self, args: SignalArgs) -> None:
        """Signal the init or every process of the container."""
        self._fs.call("ForkServer.Signal", args)

    def freeze(self, args: ContainerRef) -> None:
        """Freeze the container's processes."""
        self._fs.call("ForkServer.Freeze", args)

    def thaw(self, args: ContainerRef) -> None:
        """Thaw the container's processes."""
        self._fs.call("ForkServer.Thaw", args)

    def pids(self, args: ContainerRef) -> PidsResult:
        """Host pids of the container's processes."""
        return wire.from_wire(PidsResult, self._fs.call("ForkServer.Pids", args))

    def stats(self, args: ContainerRef) -> StatsResult:
        """The container's cgroup counters."""
        return wire.from_wire(StatsResult, self._fs.call("ForkServer.Stats", args))

    def destroy(self, args: ContainerRef) -> None:
        """Kill what is left of the container and remove its cgroup."""
        self._fs.call("ForkServer.Destroy", args)


def setup(ctx: ServiceContext) -> None:
    """Start the fork server and register the Platform domain."""
    publisher = Publisher(ctx.run_dir.task_events_endpoint)
    forkserver = ForkServerConnection(ctx.run_dir, publisher, ctx.debug)
    if forkserver.proc is None:
        # The sentry takes the exits it missed meanwhile from Tasks itself (restore.py).
        held = forkserver.held
        ctx.system.recovered.update(containers=len(held.containers), exits=len(held.exits))
        log.info("reattached to the fork server: %d containers, %d exits", len(held.containers), len(held.exits))
    forkserver.on_lost = ctx.loop.stop
    ctx.loop.add_reader(forkserver.sock.fileno(), forkserver.on_readable)
    ctx.loop.add_cleanup(forkserver.close)
    ctx.loop.add_cleanup(publisher.close)
    ctx.registry.register(Platform(forkserver))
