"""The Containers domain: the controller's public API, orchestrating the sentry.

The registry (SQLite) is the controller's record of every container; the sentry is the truth
about the ones still alive. Each call checks the OCI status rules first (gVisor's
requireStatus), then acts, then records; a create that fails halfway is undone.
"""

from __future__ import annotations

import logging
from typing import Any

from common import fdpass, wire
from common.client import ServiceChannel
from common.errors import ConflictError, ErrCode, InvalidArgument, NotFound, ZerovisorError, has_code
from common.messages.containers import (
    ContainerState,
    ContainerStates,
    CreateArgs,
    CreateResult,
    DeleteArgs,
    IdArgs,
    KillArgs,
    ListArgs,
    StartRecord,
)
from common.messages.lifecycle import (
    ContainerArgs,
    ContainerList,
    ContainerStats,
    ContainerStatus,
    CreateContainerArgs,
    CreateContainerResult,
    DeleteContainerArgs,
    Limit,
    ListContainersArgs,
    SignalContainerArgs,
    StartContainerArgs,
)
from common.messages.spec import ContainerSpec, ProcessSpec
from common.rpc import Deferred
from services.controller import oci
from services.controller.registry import ContainerRecord, Registry, validate_id
from services.controller.waiters import Waiters

log = logging.getLogger(__name__)

#: How long a call to the sentry may take (creating a container mounts and forks).
SENTRY_TIMEOUT = 60.0
#: How long a question about containers' states may take: a sentry that takes longer is stuck,
#: and `state` or `list` says so instead of waiting on it.
QUERY_TIMEOUT = 10.0
#: Statuses in which the sentry, not the registry, has the last word.
LIVE = ("created", "running", "paused")


def state_of(rec: ContainerRecord) -> ContainerState:
    """The OCI state of a record."""
    return ContainerState(
        oci_version=str(rec.config.get("oci_version", "")),
        id=rec.id,
        status=rec.status,
        pid=(rec.pid or 0) if rec.status != "stopped" else 0,
        bundle=rec.bundle,
        rootfs=rec.rootfs,
        created=rec.created,
        annotations=rec.annotations,
        owner=rec.owner,
        exit_status=rec.exit_status,
        started=wire.from_wire(StartRecord, rec.started) if rec.started else None,
    )


def start_args(cid: str, process: ProcessSpec) -> StartContainerArgs:
    """The sentry's StartContainerArgs for an OCI process, resolved as runc resolves it."""
    return StartContainerArgs(
        container_id=cid,
        argv=list(process.args),
        envv=list(process.env),
        wd=process.cwd,
        uid=process.uid,
        gid=process.gid,
        limits={r.type: Limit(cur=r.soft, max=r.hard) for r in process.rlimits},
        resolve_home=True,
        resolve_binary_path=True,
    )


class Containers:
    """create, start, state, wait, list, kill, pause, resume, delete, stats."""

    domain = "Containers"

    def __init__(self, registry: Registry, sentry: ServiceChannel) -> None:
        self._reg = registry
        self._sentry = sentry
        #: Containers.Wait answers, by container id; settled by the service's event handler.
        self.waiters: Waiters[str, ContainerState] = Waiters(self._stopped_state)

    def create(self, args: CreateArgs) -> CreateResult:
        """Validate the bundle, record the container, and have the sentry create its init.

        With a terminal, the result carries the pty master for the caller. A request sent again
        with the token of the one that made the container (whose reply a restart lost) is
        answered by the sentry, which has the container and the token too.
        """
        validate_id(args.id)
        old = self._reg.find(args.id)
        if old is not None and not (args.token and old.token == args.token and old.status == "created"):
            raise ConflictError(f"container {args.id!r} already exists")
        spec = oci.load_bundle(args.bundle)
        terminal = spec.process is not None and spec.process.terminal
        if terminal and not (args.console_socket or args.foreground):
            raise InvalidArgument("process.terminal is true: a detached container needs --console-socket")
        if args.console_socket and not terminal:
            raise InvalidArgument("--console-socket needs process.terminal to be true in config.json")
        record = ContainerRecord(
            id=args.id,
            bundle=spec.bundle,
            rootfs=spec.rootfs,
            status="creating",
            annotations=spec.annotations,
            config=wire.to_wire(spec),
            token=args.token,
        )
        if old is not None:
            # Recorded again from the same request; a death in between leaves the sentry's
            # container with no record, which reconcile deletes, and the CLI's retry makes anew.
            self._reg.remove(args.id)
        self._reg.add(record)
        try:
            created, fds = self._sentry.call_with_fds(
                "Lifecycle.CreateContainer",
                CreateContainerArgs(cid=args.id, spec=spec, strace=args.strace, token=args.token),
                CreateContainerResult,
                args.fds,
            )
        except BaseException:
            self._reg.remove(args.id)
            raise
        try:
            rec = self._reg.update(args.id, status="created", pid=created.status.pid)
        except BaseException:
            fdpass.close_all(fds)
            raise
        return CreateResult(state=state_of(rec), fds=fds)

    def start(self, args: IdArgs) -> ContainerState:
        """Run the program of a created container."""
        rec = self._require(args.id, "start", "created")
        spec = wire.from_wire(ContainerSpec, rec.config)
        if spec.process is None:
            raise ConflictError(f"cannot start container {args.id!r}: its config.json has no process")
        status = self._sentry.call("Lifecycle.StartContainer", start_args(args.id, spec.process), ContainerStatus)
        return state_of(self._record(status))

    def state(self, args: IdArgs) -> ContainerState:
        """The container's OCI state, brought up to date with the sentry."""
        return state_of(self._refresh(self._reg.get(args.id)))

    def wait(self, args: IdArgs) -> Deferred[ContainerState]:
        """The container's state once it has stopped (at once if it has): `controller wait` and
        `run` wait on the fd channel for this answer."""
        return self.waiters.wait(args.id)

    def _stopped_state(self, cid: str) -> ContainerState | None:
        # The exit event is recorded before waiters hear of it: the registry answers then,
        # and the sentry is asked only when a poll finds the registry behind.
        rec = self._reg.get(cid)
        if rec.status != "stopped":
            rec = self._refresh(rec)
        return state_of(rec) if rec.status == "stopped" else None

    def list(self, args: ListArgs) -> ContainerStates:
        """Every container, oldest first."""
        records = self._reg.list()
        if any(r.status in LIVE for r in records):
            listing = self._sentry.call(
                "Lifecycle.ListContainers", ListContainersArgs(), ContainerList, timeout=QUERY_TIMEOUT
            )
            known = {c.cid: c for c in listing.containers}
            records = [self._listed(r, known.get(r.id)) for r in records]
        return ContainerStates(containers=[state_of(r) for r in records])

    def kill(self, args: KillArgs) -> None:
        """Send a signal to the init, or to every process of the container."""
        self._require(args.id, "signal", *LIVE)
        signal_args = SignalContainerArgs(cid=args.id, signo=args.signo, all=args.all)
        self._sentry.call("Lifecycle.SignalContainer", signal_args)

    def pause(self, args: IdArgs) -> ContainerState:
        """Freeze a running container."""
        self._require(args.id, "pause", "running")
        status = self._sentry.call("Lifecycle.Pause", ContainerArgs(cid=args.id), ContainerStatus)
        return state_of(self._record(status))

    def resume(self, args: IdArgs) -> ContainerState:
        """Thaw a paused container."""
        self._require(args.id, "resume", "paused")
        status = self._sentry.call("Lifecycle.Resume", ContainerArgs(cid=args.id), ContainerStatus)
        return state_of(self._record(status))

    def delete(self, args: DeleteArgs) -> None:
        """Remove a stopped container; with force, kill it first, and an unknown id is fine."""
        rec = self._reg.find(args.id)
        if rec is None:
            if args.force:
                return
            raise NotFound(f"container {args.id!r} does not exist")
        rec = self._refresh(rec)
        if rec.status != "stopped" and not args.force:
            raise ConflictError(f"cannot delete container {args.id!r} in state {rec.status}")
        try:
            self._sentry.call("Lifecycle.DeleteContainer", DeleteContainerArgs(cid=args.id, force=args.force))
        except ZerovisorError as e:
            if not has_code(e, ErrCode.NOT_FOUND):
                raise
            # The sentry never knew the container, or forgot it: nothing to undo there.
        self._reg.remove(args.id)

    def stats(self, args: IdArgs) -> ContainerStats:
        """cgroup counters and trapped-syscall counts of a live container."""
        self._require(args.id, "read statistics of", *LIVE)
        result: ContainerStats = self._sentry.call("Lifecycle.Stats", ContainerArgs(cid=args.id), ContainerStats)
        return result

    def _require(self, cid: str, action: str, *allowed: str) -> ContainerRecord:
        return require(self._reg, self._sentry, cid, action, *allowed)

    def _listed(self, rec: ContainerRecord, status: ContainerStatus | None) -> ContainerRecord:
        if status is not None:
            return self._record(status)
        return gone(self._reg, rec) if rec.status in LIVE else rec

    def _refresh(self, rec: ContainerRecord) -> ContainerRecord:
        return refresh(self._reg, self._sentry, rec)

    def _record(self, status: ContainerStatus) -> ContainerRecord:
        return record_status(self._reg, status)


def require(registry: Registry, sentry: ServiceChannel, cid: str, action: str, *allowed: str) -> ContainerRecord:
    """The record of cid brought up to date; ConflictError naming action unless its status is
    one of allowed (gVisor's requireStatus), NotFound for an unknown id."""
    rec = refresh(registry, sentry, registry.get(cid))
    if rec.status not in allowed:
        raise ConflictError(f"cannot {action} container {cid!r} in state {rec.status}")
    return rec


def refresh(registry: Registry, sentry: ServiceChannel, rec: ContainerRecord) -> ContainerRecord:
    """Ask the sentry about a container the registry thinks alive (an event may be missed)."""
    if rec.status not in LIVE:
        return rec
    try:
        status = sentry.call("Lifecycle.GetStatus", ContainerArgs(cid=rec.id), ContainerStatus, timeout=QUERY_TIMEOUT)
    except ZerovisorError as e:
        if not has_code(e, ErrCode.NOT_FOUND):
            raise
        return gone(registry, rec)
    return record_status(registry, status)


def gone(registry: Registry, rec: ContainerRecord) -> ContainerRecord:
    """A record the registry thinks alive whose container the sentry does not have (its tasks
    died while no service watched them): whatever ran is gone, so it is stopped."""
    return registry.update(rec.id, status="stopped")


def record_status(registry: Registry, status: ContainerStatus) -> ContainerRecord:
    """Write what the sentry says of a container into the registry."""
    changes: dict[str, Any] = {"status": status.status}
    if status.exit_code is not None:
        changes["exit_status"] = status.exit_code
    if status.started is not None:
        changes["started"] = wire.to_wire(status.started)
    return registry.update(status.cid, **changes)


def record_event(registry: Registry, body: dict[str, Any]) -> None:
    """Record a container event the sentry published (an exit, above all)."""
    status = wire.from_wire(ContainerStatus, body)
    if registry.find(status.cid) is not None:
        record_status(registry, status)
