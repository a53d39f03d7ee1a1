"""Rebuilding the sentry's kernel after a restart, and catching up after the platform's.

The sentry keeps nothing on disk: what it knows of the containers it rebuilds from the
platform, which holds every task (its fork server outlives any sentry), every exit it reaped
and nobody has waited for yet, and a copy of every seccomp listener. The controller's
registry then decides which of them should exist (Lifecycle.Reconcile).
"""

from __future__ import annotations

import logging

from common import fdpass
from common.errors import ServiceUnavailable, ZerovisorError
from common.messages.platform import (
    ContainerRef,
    ContainerTasks,
    ListenersArgs,
    ListenersResult,
    PidsResult,
    SpecResult,
    TaskExit,
    TasksArgs,
    TasksResult,
)
from common.messages.spec import ContainerSpec
from services.sentry.kernel import CREATED, PAUSED, RUNNING, STOPPED, Container, ExecProcess, Kernel
from services.sentry.nudge import nudge_waiting

log = logging.getLogger(__name__)

#: Exit code of a container whose tasks vanished with the fork server (as if SIGKILLed).
VANISHED_EXIT_CODE = 128 + 9


def restore(kernel: Kernel) -> dict[str, int]:
    """Rebuild kernel.containers from the platform and serve their listeners again; then nudge
    every task that waits in a notification the dead sentry took. What was recovered, by kind.

    ServiceUnavailable when the platform does not answer (the caller tries again later).
    """
    held: TasksResult = kernel.platform.call("Platform.Tasks", TasksArgs(), TasksResult)
    for tasks in held.containers:
        got: SpecResult = kernel.platform.call("Platform.Spec", ContainerRef(cid=tasks.cid), SpecResult)
        kernel.containers[tasks.cid] = _container(tasks, got.spec)
    for event in held.exits:
        kernel.on_task_exit(event, publish=False)
    listed, fds = kernel.platform.call_with_fds("Platform.Listeners", ListenersArgs(), ListenersResult)
    listeners = 0
    for cid, fd in zip(listed.cids, fds, strict=True):
        ctr = kernel.containers.get(cid)
        if ctr is None:
            fdpass.close_all([fd])
            continue
        kernel.watch(ctr, [fd])
        listeners += 1
    nudged = 0
    for ctr in kernel.containers.values():
        if ctr.status == RUNNING:
            nudged += nudge_container(kernel, ctr)
        elif ctr.status == PAUSED:
            ctr.nudge_on_resume = True  # a frozen task cannot leave its wait until thawed
    kernel.restored = True
    mounts = reattach(kernel)  # a gofer that restarted while we were down has none
    recovered = {
        "containers": len(held.containers),
        "mounts": mounts,
        "listeners": listeners,
        "notifications": nudged,
        "exits": len(held.exits),
    }
    log.info("restored from the platform: %s", recovered)
    return recovered


def nudge_container(kernel: Kernel, ctr: Container) -> int:
    """Make every task of ctr that waits in a notification re-issue its syscall; how many did."""
    try:
        pids: PidsResult = kernel.platform.call("Platform.Pids", ContainerRef(cid=ctr.cid), PidsResult)
    except ZerovisorError as e:
        log.warning("listing the tasks of %r to nudge them: %s", ctr.cid, e)
        return 0
    return nudge_waiting(pids.pids)


def catch_up(kernel: Kernel) -> None:
    """The platform restarted: take the exits it reported while the sentry was not listening,
    and stop the containers whose tasks it no longer holds (its fork server died with them)."""
    try:
        held: TasksResult = kernel.platform.call("Platform.Tasks", TasksArgs(), TasksResult)
    except ServiceUnavailable as e:
        log.warning("catching up with the platform: %s", e)
        return
    for event in held.exits:
        kernel.on_task_exit(event)
    present = {t.cid for t in held.containers}
    for ctr in list(kernel.containers.values()):
        if ctr.status != STOPPED and ctr.cid not in present:
            log.warning("container %r: its tasks are gone with the fork server", ctr.cid)
            kernel.on_task_exit(TaskExit(cid=ctr.cid, pid=ctr.pid, init=True, exit_code=VANISHED_EXIT_CODE))


def _container(tasks: ContainerTasks, spec: ContainerSpec) -> Container:
    """A container as it was before the restart (its syscall counts start again from zero)."""
    status = CREATED if not tasks.released else PAUSED if tasks.frozen else RUNNING
    ctr = Container(cid=tasks.cid, spec=spec, status=status, pid=tasks.init_pid, strace=tasks.strace, token=tasks.token)
    for e in tasks.execs:
        ctr.execs[e.ns_pid] = ExecProcess(host_pid=e.host_pid, token=e.token)
    return ctr


def reattach(kernel: Kernel) -> int:
    """Attach every container's mounts to a gofer that may have restarted (its connection was
    lost, or the sentry was down); how many were attached (those it still has stay as they are)."""
    attached = 0
    for ctr in list(kernel.containers.values()):
        try:
            # Held already: the gofer did not restart, only the connection was lost.
            attached += kernel.attach_files(ctr.cid, ctr.spec, held_ok=True)
        except ZerovisorError as e:
            log.warning("re-attaching the mounts of %r: %s", ctr.cid, e)
    if attached:
        log.info("re-attached the mounts of %d containers to the gofer", attached)
    return attached
