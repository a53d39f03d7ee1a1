"""The sentry's kernel state: containers, their status machine, and the way to the platform.

The status machine is gVisor's: created -> running <-> paused, and any of them -> stopped when
the init exits. A transition the machine does not allow raises ConflictError naming the action
and the status, as gVisor's requireStatus does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import wire
from common.client import ServiceChannel
from common.errors import ConflictError, NotFound
from common.events import Publisher
from common.messages.lifecycle import ContainerStatus, StartRecord
from common.messages.platform import TaskExit
from common.messages.spec import ContainerSpec
from common.rundir import RunDir
from services.sentry.supervisor import Supervisor

log = logging.getLogger(__name__)

CREATED, RUNNING, PAUSED, STOPPED = "created", "running", "paused", "stopped"

#: How long a call to the platform may take; creating a container mounts and forks.
PLATFORM_TIMEOUT = 60.0
#: How long attaching or detaching a container's mounts may take.
GOFER_TIMEOUT = 30.0
#: The kernel release uname reports, unless the container's annotation sets another.
DEFAULT_KERNEL_RELEASE = "4.4.0"
#: Annotation naming the kernel release uname reports.
KERNEL_RELEASE_ANNOTATION = "dev.zerovisor.kernel-release"
#: Annotation that turns strace on for a container ("true").
STRACE_ANNOTATION = "dev.zerovisor.strace"


@dataclass(slots=True)
class Container:
    """One container as the sentry sees it."""

    #: Container id.
    cid: str
    #: The spec it was created from.
    spec: ContainerSpec
    #: created, running, paused or stopped.
    status: str
    #: Host pid of the init.
    pid: int
    #: Exit code once stopped.
    exit_code: int | None = None
    #: When the start request arrived and completed, once started.
    started: StartRecord | None = None
    #: Log every trapped syscall (runsc --strace).
    strace: bool = False
    #: Trapped syscalls answered, by family; shared with the container's listeners.
    syscalls: dict[str, int] = field(default_factory=dict)

    def require(self, action: str, *allowed: str) -> None:
        """Refuse action unless the container is in one of the allowed statuses."""
        if self.status not in allowed:
            raise ConflictError(f"cannot {action} container {self.cid!r} in state {self.status}")

    def snapshot(self) -> ContainerStatus:
        """The wire view of this container."""
        return ContainerStatus(
            cid=self.cid, status=self.status, pid=self.pid, exit_code=self.exit_code, started=self.started
        )


class Kernel:
    """Every container of this sentry, by id."""

    def __init__(self, run_dir: RunDir, publisher: Publisher) -> None:
        self.run_dir = run_dir
        self.publisher = publisher
        self.platform = ServiceChannel(run_dir.socket_path("platform"), PLATFORM_TIMEOUT)
        #: Attach and Detach; the syscalls' own gofer calls go through the supervisor.
        self.gofer = ServiceChannel(run_dir.socket_path("gofer"), GOFER_TIMEOUT)
        #: Serves the trapped syscalls (set by the server's setup).
        self.supervisor: Supervisor | None = None
        self.containers: dict[str, Container] = {}
        #: Stops the service's loop (set by the server's setup).
        self.shutdown: Callable[[], None] = lambda: None

    def get(self, cid: str) -> Container:
        """The container named cid."""
        ctr = self.containers.get(cid)
        if ctr is None:
            raise NotFound(f"container {cid!r} does not exist")
        return ctr

    def publish(self, ctr: Container, event: str) -> None:
        """Publish container.<cid>.<event> with the container's status."""
        self.publisher.publish(f"container.{ctr.cid}.{event}", event, ctr.snapshot())

    def on_task_exit(self, body: dict[str, Any]) -> None:
        """A task exited (platform event): an init's exit stops its container."""
        event = wire.from_wire(TaskExit, body)
        ctr = self.containers.get(event.cid)
        if ctr is None or not event.init or ctr.pid != event.pid:
            return
        ctr.status = STOPPED
        ctr.exit_code = event.exit_code
        log.info("container %r stopped with exit code %d", ctr.cid, event.exit_code)
        self.publish(ctr, "exit")
