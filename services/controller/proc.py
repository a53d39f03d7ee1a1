"""The controller's Proc domain: the processes of a container: ps, exec, waiting for an exec'd
process and signalling it, all through the sentry.

As the Containers domain does, each call first brings the registry's record up to date with the
sentry and checks the OCI status rules, so that a refusal names the container's real state.
WaitPid answers late (a Deferred), when the sentry publishes the process's exit, so that
`controller exec` waits on the fd channel alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

from common import wire
from common.client import ServiceChannel
from common.errors import NotFound, ServiceUnavailable, ZerovisorError
from common.messages.proc import (
    ExecRequest,
    ExecResult,
    ProcessArgs,
    ProcessExit,
    PsArgs,
    PsResult,
    SignalProcessArgs,
)
from common.messages.spec import ContainerSpec
from common.rpc import Deferred
from services.controller.containers import LIVE, require
from services.controller.execs import exec_args
from services.controller.registry import Registry

log = logging.getLogger(__name__)

#: How often waiters ask the sentry themselves, in case an exit event was lost, seconds.
POLL_INTERVAL = 1.0


class ExitWaiters:
    """The WaitPid answers still waiting, by container and pid; the service's event handler
    settles them as the sentry's process exits arrive."""

    def __init__(self, sentry: ServiceChannel) -> None:
        self._sentry = sentry
        self._waiting: dict[tuple[str, int], list[Deferred[ProcessExit]]] = {}
        self._polled = 0.0

    def add(self, cid: str, pid: int, answer: Deferred[ProcessExit]) -> None:
        """Settle answer when process pid of cid exits."""
        self._waiting.setdefault((cid, pid), []).append(answer)

    def process_exited(self, cid: str, pid: int) -> None:
        """An exec'd process exited: collect its status from the sentry for whoever waits (a
        sentry that is down now is asked again by poll)."""
        if (cid, pid) in self._waiting:
            with contextlib.suppress(ServiceUnavailable):
                self._settle(cid, pid)

    def poll(self) -> None:
        """Ask the sentry about every process still waited for, at most once per POLL_INTERVAL:
        an exit event lost to a restart (the sentry's or ours) must not leave a waiter hanging."""
        now = time.monotonic()
        if not self._waiting or now - self._polled < POLL_INTERVAL:
            return
        self._polled = now
        with contextlib.suppress(ServiceUnavailable):  # the sentry is down: next time
            for cid, pid in list(self._waiting):
                self._settle(cid, pid)

    def _settle(self, cid: str, pid: int) -> None:
        """Answer whoever waits for pid of cid if it has exited, or fail them if the sentry
        refuses; ServiceUnavailable (they wait on) if the sentry is down."""
        try:
            status: ProcessExit = self._sentry.call("Proc.ExitStatus", ProcessArgs(cid=cid, pid=pid), ProcessExit)
        except ServiceUnavailable:
            raise
        except ZerovisorError as e:
            for waiter in self._waiting.pop((cid, pid), []):
                waiter.fail(e)
            return
        if status.exited:
            for waiter in self._waiting.pop((cid, pid), []):
                waiter.resolve(status)

    def container_gone(self, cid: str) -> None:
        """The container was deleted: nobody will report its processes' exits any more."""
        for key in [key for key in self._waiting if key[0] == cid]:
            for waiter in self._waiting.pop(key):
                waiter.fail(NotFound(f"container {cid!r} was deleted before process {key[1]} exited"))


class Proc:
    """ps, exec, wait and signal: gVisor's control.Proc calls about a container's processes."""

    domain = "Proc"

    def __init__(self, registry: Registry, sentry: ServiceChannel, waiters: ExitWaiters) -> None:
        self._reg = registry
        self._sentry = sentry
        self._waiters = waiters

    def exec(self, args: ExecRequest) -> ExecResult:
        """Start a process in a running container (runc exec); with a terminal, the result
        carries its pty master."""
        rec = require(self._reg, self._sentry, args.id, "exec in", "running")
        spec = wire.from_wire(ContainerSpec, rec.config)
        resolved = exec_args(args, spec.process)
        result: ExecResult
        result, fds = self._sentry.call_with_fds("Proc.Exec", resolved, ExecResult, fds=args.fds)
        return dataclasses.replace(result, fds=fds)

    def release_console(self, args: ProcessArgs) -> None:
        """The CLI of `exec --tty` holds the process's pty master: the copy kept in case the
        reply that carried it was lost can go."""
        self._sentry.call("Proc.ReleaseConsole", args)

    def wait_pid(self, args: ProcessArgs) -> Deferred[ProcessExit]:
        """The exit of an exec'd process, once it has exited (asked again, the same status)."""
        answer: Deferred[ProcessExit] = Deferred()
        status: ProcessExit = self._sentry.call("Proc.ExitStatus", args, ProcessExit)
        if status.exited:
            answer.resolve(status)
        else:
            # Its exit event is handled after this call, never before: it cannot be missed.
            self._waiters.add(args.cid, args.pid, answer)
        return answer

    def signal_process(self, args: SignalProcessArgs) -> None:
        """Signal a process of a running container (pid 1 is its init), or the foreground
        process group of its terminal."""
        require(self._reg, self._sentry, args.cid, "signal", *LIVE)
        self._sentry.call("Proc.SignalProcess", args)

    def ps(self, args: PsArgs) -> PsResult:
        """The processes of a created, running or paused container, sorted by pid."""
        require(self._reg, self._sentry, args.cid, "list the processes of", *LIVE)
        result: PsResult = self._sentry.call("Proc.Ps", args, PsResult)
        return result
