"""Set-up of the platform service: the fork server it runs, and the Platform domain.

The Platform domain relays each call to the fork server (a child process, see forkserver.py)
over one SOCK_SEQPACKET connection, and publishes the exits the fork server reports as
``task.<cid>.exit`` events for the sentry.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from common import fdpass, wire
from common.errors import MessageError, ServiceUnavailable, error_from_wire
from common.events import Publisher
from common.messages.lifecycle import StartContainerArgs
from common.messages.platform import (
    ContainerRef,
    LaunchArgs,
    LaunchResult,
    ListenersArgs,
    ListenersResult,
    PidsResult,
    ReleaseResult,
    SignalArgs,
    SignalProcessArgs,
    StatsResult,
    TaskExit,
)
from common.messages.proc import ExecArgs, ExecStarted
from common.service import ServiceContext

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

R = TypeVar("R", bound="DataclassInstance")


class ForkServerConnection:
    """The platform's end of the fork-server connection. Owns the socket and the child process."""

    def __init__(self, run_dir: str, publisher: Publisher, debug: bool = False) -> None:
        self.publisher = publisher
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            sys.executable,
            "-m",
            "services.platform.forkserver",
            "--socket-fd",
            str(theirs.fileno()),
            "--run-dir",
            run_dir,
        ]
        if debug:
            argv.append("--debug")
        self.proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self._ids = 0
        #: Called when the fork server is gone.
        self.on_lost: Callable[[], None] = lambda: None

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
            raise ServiceUnavailable(f"fork server (pid {self.proc.pid}): {e}") from None
        try:
            if not frame:
                raise ServiceUnavailable(f"fork server (pid {self.proc.pid}) hung up")
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
        """Hang up (the fork server exits on EOF) and reap it."""
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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

    def listeners(self, args: ListenersArgs) -> ListenersResult:
        """The seccomp listener of every trapping container (for a sentry that restarted)."""
        return self._with_files("ForkServer.Listeners", args, ListenersResult, [], lambda r: len(r.fds) == len(r.cids))

    def exec(self, args: ExecArgs) -> ExecStarted:
        """Start a process in a running container; its listener (and, with a terminal, its pty
        master) comes back, the fork server keeping its own copy of the listener."""
        return self._with_files(
            "ForkServer.Exec", args, ExecStarted, args.fds, lambda r: len(r.fds) == 1 + args.terminal
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
    forkserver = ForkServerConnection(str(ctx.run_dir.path), publisher, ctx.debug)
    forkserver.on_lost = ctx.loop.stop
    ctx.loop.add_reader(forkserver.sock.fileno(), forkserver.on_readable)
    ctx.loop.add_cleanup(forkserver.close)
    ctx.loop.add_cleanup(publisher.close)
    ctx.registry.register(Platform(forkserver))
