"""The Lifecycle domain: containers from creation to deletion (gVisor's control/lifecycle.go)."""

from __future__ import annotations

import logging

from common.clock import now_rfc3339
from common.errors import ConflictError
from common.messages.containers import StartRecord
from common.messages.lifecycle import (
    ContainerArgs,
    ContainerList,
    ContainerStats,
    ContainerStatus,
    CreateContainerArgs,
    CreateContainerResult,
    DeleteContainerArgs,
    ExitStatus,
    ListContainersArgs,
    RunningResult,
    ShutdownArgs,
    SignalContainerArgs,
    StartContainerArgs,
)
from common.messages.platform import ContainerRef, LaunchArgs, LaunchResult, ReleaseResult, SignalArgs, StatsResult
from services.sentry.kernel import (
    CREATED,
    PAUSED,
    RUNNING,
    STOPPED,
    STRACE_ANNOTATION,
    Container,
    Kernel,
)
from services.sentry.restore import nudge_container

log = logging.getLogger(__name__)


class Lifecycle:
    """Container lifecycle calls of the controller."""

    domain = "Lifecycle"

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def create_container(self, args: CreateContainerArgs) -> CreateContainerResult:
        """Create the container's init through the platform; it waits for StartContainer.

        With a terminal, the result carries the pty master. A request sent again with the token
        of the one that made the container, which has not started, gets that container: as it
        is, or, with a terminal, made again, because its pty master went with the lost reply.
        """
        old = self._k.table.get(args.cid)
        if old is not None:
            if not (args.token and old.token == args.token and old.status == CREATED):
                raise ConflictError(f"container {args.cid!r} already exists")
            if old.spec.process is None or not old.spec.process.terminal:
                log.info("container %r: create sent again, the first made it", args.cid)
                return CreateContainerResult(status=old.snapshot(), fds=[])
            log.info("container %r: create sent again, made again for a new terminal", args.cid)
            self.delete_container(DeleteContainerArgs(cid=args.cid, force=True))
        # The gofer serves the container's files from the moment its program can run.
        self._k.attach_files(args.cid, args.spec)
        strace = args.strace or args.spec.annotations.get(STRACE_ANNOTATION) == "true"
        try:
            launched, fds = self._k.platform.call_with_fds(
                "Platform.Launch",
                LaunchArgs(cid=args.cid, spec=args.spec, strace=strace, token=args.token),
                LaunchResult,
                fds=args.fds,
            )
        except BaseException:
            self._k.detach_files(args.cid)
            raise
        ctr = Container(cid=args.cid, spec=args.spec, status=CREATED, pid=launched.pid, strace=strace, token=args.token)
        self._k.table[args.cid] = ctr
        self._k.publish(ctr, "create")
        return CreateContainerResult(status=ctr.snapshot(), fds=fds)

    def start_container(self, args: StartContainerArgs) -> ContainerStatus:
        """Let a created container's init exec the program args describe.

        Publishes "start" with the times the request arrived and completed.
        """
        received = now_rfc3339()
        log.debug("StartContainer: %r", args)  # repr leaves secret_envv out
        ctr = self._k.get(args.container_id)
        ctr.require("start", CREATED)
        if ctr.spec.process is None:
            raise ConflictError(f"cannot start container {args.container_id!r}: its config has no process")
        args.check()
        _, fds = self._k.platform.call_with_fds("Platform.Release", args, ReleaseResult, fds=args.fds)
        self._k.watch(ctr, fds)
        # The init may already have run and exited (its exit event came during the call).
        if ctr.status == CREATED:
            ctr.status = RUNNING
        ctr.started = StartRecord(request_received=received, request_completed=now_rfc3339())
        self._k.publish(ctr, "start")
        return ctr.snapshot()

    def get_exit_status(self, args: ContainerArgs) -> ExitStatus:
        """The exit code of a stopped container; refused while it has not exited."""
        ctr = self._k.get(args.cid)
        if ctr.status != STOPPED or ctr.exit_code is None:
            raise ConflictError(f"container {args.cid!r} hasn't exited yet")
        return ExitStatus(exit_code=ctr.exit_code)

    def reap(self, args: ContainerArgs) -> None:
        """Promise the caller an exit event: published again now if the container already stopped.

        The caller subscribes first, then calls Reap, so that it cannot miss the exit.
        """
        ctr = self._k.get(args.cid)
        if ctr.status == STOPPED:
            self._k.publish(ctr, "exit")

    def is_container_running(self, args: ContainerArgs) -> RunningResult:
        """Whether the container is running; an unknown one is not."""
        ctr = self._k.table.get(args.cid)
        return RunningResult(running=ctr is not None and ctr.status == RUNNING)

    def shutdown(self, args: ShutdownArgs) -> None:
        """Stop the sentry once this reply is sent (the services' supervisor decides what next)."""
        log.info("shutdown requested")
        self._k.shutdown()

    def signal_container(self, args: SignalContainerArgs) -> None:
        """Signal the init, or every process with the container frozen meanwhile."""
        ctr = self._k.get(args.cid)
        ctr.require("signal", CREATED, RUNNING, PAUSED)
        self._k.platform.call("Platform.Signal", SignalArgs(cid=args.cid, signo=args.signo, all=args.all))

    def pause(self, args: ContainerArgs) -> ContainerStatus:
        """Freeze every process of a running container."""
        ctr = self._k.get(args.cid)
        ctr.require("pause", RUNNING)
        self._k.platform.call("Platform.Freeze", ContainerRef(cid=args.cid))
        ctr.status = PAUSED
        self._k.publish(ctr, "pause")
        return ctr.snapshot()

    def resume(self, args: ContainerArgs) -> ContainerStatus:
        """Thaw a paused container."""
        ctr = self._k.get(args.cid)
        ctr.require("resume", PAUSED)
        self._k.platform.call("Platform.Thaw", ContainerRef(cid=args.cid))
        if ctr.status == PAUSED:
            ctr.status = RUNNING
        if ctr.nudge_on_resume:
            ctr.nudge_on_resume = False
            nudge_container(self._k, ctr)
        self._k.publish(ctr, "resume")
        return ctr.snapshot()

    def delete_container(self, args: DeleteContainerArgs) -> None:
        """Forget a stopped container (or, with force, kill it first) and remove its cgroup."""
        ctr = self._k.table.get(args.cid)
        if ctr is None:
            if args.force:
                return
            self._k.get(args.cid)
            return
        if not args.force:
            ctr.require("delete", STOPPED)
        self._k.unwatch(args.cid)
        self._k.platform.call("Platform.Destroy", ContainerRef(cid=args.cid))
        self._k.sweep()
        self._k.detach_files(args.cid)
        self._k.run_dir.hostname_path(args.cid).unlink(missing_ok=True)
        del self._k.table[args.cid]
        self._k.publish(ctr, "delete")

    def get_status(self, args: ContainerArgs) -> ContainerStatus:
        """The container's status, pid and exit code."""
        return self._k.get(args.cid).snapshot()

    def list_containers(self, args: ListContainersArgs) -> ContainerList:
        """Every container the sentry knows."""
        return ContainerList(containers=[c.snapshot() for c in self._k.table.values()])

    def stats(self, args: ContainerArgs) -> ContainerStats:
        """The container's cgroup counters and its trapped syscalls by family."""
        ctr = self._k.get(args.cid)
        ctr.require("read statistics of", CREATED, RUNNING, PAUSED)
        cgroup: StatsResult = self._k.platform.call("Platform.Stats", ContainerRef(cid=args.cid), StatsResult)
        return ContainerStats(cgroup=cgroup, syscalls=dict(ctr.syscalls))
