"""The controller's Proc domain: the processes of a container: ps, exec, waiting for an exec'd
process and signalling it, all through the sentry.

As the Containers domain does, each call first brings the registry's record up to date with the
sentry and checks the OCI status rules, so that a refusal names the container's real state.
Exec, the one on a command's critical path, trusts a record that says running and lets the
sentry's own check stand: only a refusal brings the record up to date, to name the real state.
WaitPid answers late (a Deferred from the waiters table), when the sentry publishes the process's
exit, so that `controller exec` waits on the fd channel alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from common import wire
from common.client import ServiceChannel
from common.errors import ErrCode, ZerovisorError, has_code
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
from services.controller.waiters import Waiters

log = logging.getLogger(__name__)


#: What WaitPid waits on: (container id, pid).
ProcessKey = tuple[str, int]


def process_exit(sentry: ServiceChannel) -> Callable[[ProcessKey], ProcessExit | None]:
    """The check of the WaitPid table: the exit of (cid, pid) once it has exited, else None."""

    def check(key: ProcessKey) -> ProcessExit | None:
        status: ProcessExit = sentry.call("Proc.ExitStatus", ProcessArgs(cid=key[0], pid=key[1]), ProcessExit)
        return status if status.exited else None

    return check


class Proc:
    """ps, exec, wait and signal: gVisor's control.Proc calls about a container's processes."""

    domain = "Proc"

    def __init__(
        self, registry: Registry, sentry: ServiceChannel, waiters: Waiters[tuple[str, int], ProcessExit]
    ) -> None:
        self._reg = registry
        self._sentry = sentry
        self._waiters = waiters

    def exec(self, args: ExecRequest) -> ExecResult:
        """Start a process in a running container (runc exec); with a terminal, the result
        carries its pty master."""
        rec = self._reg.get(args.id)
        if rec.status != "running":
            rec = require(self._reg, self._sentry, args.id, "exec in", "running")
        spec = wire.from_wire(ContainerSpec, rec.config)
        resolved = exec_args(args, spec.process)
        result: ExecResult
        try:
            result, fds = self._sentry.call_with_fds("Proc.Exec", resolved, ExecResult, fds=args.fds)
        except ZerovisorError as e:
            if has_code(e, ErrCode.CONFLICT) or has_code(e, ErrCode.NOT_FOUND):
                # The record was behind the sentry (an exit not heard of yet): say what it is.
                require(self._reg, self._sentry, args.id, "exec in", "running")
            raise
        return dataclasses.replace(result, fds=fds)

    def release_console(self, args: ProcessArgs) -> None:
        """The CLI of `exec --tty` holds the process's pty master: the copy kept in case the
        reply that carried it was lost can go."""
        self._sentry.call("Proc.ReleaseConsole", args)

    def wait_pid(self, args: ProcessArgs) -> Deferred[ProcessExit]:
        """The exit of an exec'd process, once it has exited; the sentry then reaps it (asked
        again soon, the same status)."""
        return self._waiters.wait((args.cid, args.pid))

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
