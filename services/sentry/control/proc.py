"""The Proc domain: the processes of a container (gVisor's control/proc.go)."""

from __future__ import annotations

import logging

from common import fdpass
from common.errors import NotFound
from common.messages.execs import ExecArgs, ExecStarted
from common.messages.platform import ContainerRef, PidsResult, ProcessRef
from common.messages.platform import SignalProcessArgs as PlatformSignal
from common.messages.proc import (
    ExecResult,
    ProcessArgs,
    ProcessExit,
    PsArgs,
    PsResult,
    SignalProcessArgs,
)
from services.sentry import procinfo
from services.sentry.kernel import CREATED, PAUSED, RUNNING, Container, ExecProcess, Kernel

log = logging.getLogger(__name__)


class Proc:
    """Process calls of the controller: Ps, Exec, ReleaseConsole, ExitStatus, SignalProcess."""

    domain = "Proc"

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def ps(self, args: PsArgs) -> PsResult:
        """The container's processes, sorted by pid, with ids as the container sees them."""
        ctr = self._live(args.cid, "list the processes of")
        return PsResult(processes=procinfo.processes(self._host_pids(ctr), ctr.spec.uid_mappings))

    def exec(self, args: ExecArgs) -> ExecResult:
        """Start a process in a running container; its trapped syscalls are served from now on.

        With a terminal, the result carries its pty master.
        """
        log.debug("Exec: %r", args)  # repr leaves the environment out
        ctr = self._k.get(args.container_id)
        ctr.require("exec in", RUNNING)
        args.check()
        earlier = next((pid for pid, p in ctr.execs.items() if args.token and p.token == args.token), None)
        if earlier is not None and not args.terminal:
            # The same request again: its reply was lost to a restart. The same process answers.
            return ExecResult(pid=earlier, host_pid=ctr.execs[earlier].host_pid)
        # With a terminal, a repeated request goes on to the fork server too: it kept the pty
        # master (services/platform/consoles.py) and finds the process by the token.
        started, fds = self._k.platform.call_with_fds("Platform.Exec", args, ExecStarted, fds=args.fds)
        if earlier is not None:
            fdpass.close_all(fds[:1])  # its listener is watched already
        else:
            ctr.execs[started.pid] = ExecProcess(host_pid=started.host_pid, token=args.token)
            if fds:
                # The process waits in its trapped exec until its listener is served.
                self._k.watch(ctr, fds[:1])
        return ExecResult(pid=started.pid, host_pid=started.host_pid, fds=fds[1:])

    def release_console(self, args: ProcessArgs) -> None:
        """The CLI of an exec'd process holds its pty master: the fork server's copy can go."""
        ctr = self._k.get(args.cid)
        process = ctr.execs.get(args.pid)
        if process is None:
            raise NotFound(f"container {args.cid!r} has no exec'd process {args.pid}")
        if process.exit_code is None:
            self._k.platform.call("Platform.ReleaseConsole", ProcessRef(cid=args.cid, host_pid=process.host_pid))

    def exit_status(self, args: ProcessArgs) -> ProcessExit:
        """Whether an exec'd process has exited, and its status once it has.

        A status handed out reaps the process, as gVisor's WaitPID does: the sentry and the
        platform forget it, so that a container exec'd into for ever holds no more than its
        live processes. The last few stay answerable (REAPED_KEPT), so that a caller whose
        controller died before it passed the status on gets it when it asks again.
        """
        ctr = self._k.get(args.cid)
        process = ctr.execs.get(args.pid)
        if process is None:
            process = ctr.reaped.get(args.pid)
            if process is None:
                raise NotFound(f"container {args.cid!r} has no exec'd process {args.pid}")
        elif process.exit_code is None:
            return ProcessExit(pid=args.pid, exited=False)
        else:
            self._k.reap(ctr, args.pid)
        return ProcessExit(pid=args.pid, exited=True, exit_code=process.exit_code)

    def signal_process(self, args: SignalProcessArgs) -> None:
        """Signal the init (pid 1) or an exec'd process of a container, or the foreground
        process group of its terminal."""
        ctr = self._live(args.cid, "signal")
        if args.pid == 1:
            host_pid = ctr.pid
        elif (process := ctr.execs.get(args.pid)) is not None and process.exit_code is None:
            host_pid = process.host_pid
        else:
            raise NotFound(f"container {args.cid!r} has no running process {args.pid} to signal")
        request = PlatformSignal(cid=args.cid, host_pid=host_pid, signo=args.signo, foreground=args.foreground)
        self._k.platform.call("Platform.SignalProcess", request)

    def _live(self, cid: str, action: str) -> Container:
        """The container cid, refused unless it has processes (created, running or paused)."""
        ctr = self._k.get(cid)
        ctr.require(action, CREATED, RUNNING, PAUSED)
        return ctr

    def _host_pids(self, ctr: Container) -> list[int]:
        """Host pids of every process of ctr: its cgroup's, which the platform reads."""
        result: PidsResult = self._k.platform.call("Platform.Pids", ContainerRef(cid=ctr.cid), PidsResult)
        return result.pids
