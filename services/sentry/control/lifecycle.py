"""The Lifecycle domain: containers from creation to deletion (gVisor's control/lifecycle.go)."""

from __future__ import annotations

import logging

from common.errors import ConflictError
from common.messages.lifecycle import (
    ContainerArgs,
    ContainerList,
    ContainerStatus,
    CreateContainerArgs,
    DeleteContainerArgs,
    ListContainersArgs,
    SignalContainerArgs,
)
from common.messages.platform import ContainerRef, LaunchArgs, LaunchResult, SignalArgs, StatsResult
from services.sentry.kernel import CREATED, PAUSED, RUNNING, STOPPED, Container, Kernel

log = logging.getLogger(__name__)


class Lifecycle:
    """Container lifecycle calls of the controller."""

    domain = "Lifecycle"

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def create_container(self, args: CreateContainerArgs) -> ContainerStatus:
        """Create the container's init through the platform; it waits for StartContainer."""
        old = self._k.containers.get(args.cid)
        if old is not None:
            raise ConflictError(f"container {args.cid!r} already exists")
        launched = self._k.platform.call(
            "Platform.Launch", LaunchArgs(cid=args.cid, spec=args.spec), LaunchResult, fds=args.fds
        )
        ctr = Container(cid=args.cid, spec=args.spec, status=CREATED, pid=launched.pid)
        self._k.containers[args.cid] = ctr
        self._k.publish(ctr, "create")
        return ctr.snapshot()

    def start_container(self, args: ContainerArgs) -> ContainerStatus:
        """Let a created container's init exec its program."""
        ctr = self._k.get(args.cid)
        ctr.require("start", CREATED)
        if ctr.spec.process is None:
            raise ConflictError(f"cannot start container {args.cid!r}: its config has no process")
        self._k.platform.call("Platform.Release", ContainerRef(cid=args.cid))
        # The init may already have run and exited (its exit event came during the call).
        if ctr.status == CREATED:
            ctr.status = RUNNING
        self._k.publish(ctr, "start")
        return ctr.snapshot()

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
        self._k.publish(ctr, "resume")
        return ctr.snapshot()

    def delete_container(self, args: DeleteContainerArgs) -> None:
        """Forget a stopped container (or, with force, kill it first) and remove its cgroup."""
        ctr = self._k.containers.get(args.cid)
        if ctr is None:
            if args.force:
                return
            self._k.get(args.cid)
            return
        if not args.force:
            ctr.require("delete", STOPPED)
        self._k.platform.call("Platform.Destroy", ContainerRef(cid=args.cid))
        del self._k.containers[args.cid]
        self._k.publish(ctr, "delete")

    def get_status(self, args: ContainerArgs) -> ContainerStatus:
        """The container's status, pid and exit code."""
        return self._k.get(args.cid).snapshot()

    def list_containers(self, args: ListContainersArgs) -> ContainerList:
        """Every container the sentry knows."""
        return ContainerList(containers=[c.snapshot() for c in self._k.containers.values()])

    def stats(self, args: ContainerArgs) -> StatsResult:
        """The container's cgroup counters."""
        ctr = self._k.get(args.cid)
        ctr.require("read statistics of", CREATED, RUNNING, PAUSED)
        result: StatsResult = self._k.platform.call("Platform.Stats", ContainerRef(cid=args.cid), StatsResult)
        return result
