"""A sentry double for the controller's Proc domain: GetStatus, Ps and Exec as the sentry answers
them for a container in a given state, each call recorded; and the domain wired to it."""

from __future__ import annotations

from typing import Any, cast

from common.client import ServiceChannel
from common.errors import ConflictError, NotFound
from common.messages.execs import ExecArgs
from common.messages.lifecycle import ContainerArgs, ContainerStatus
from common.messages.proc import ExecResult, Process, PsArgs, PsResult
from services.controller.proc import Proc, process_exit
from services.controller.registry import Registry
from services.controller.waiters import Waiters

#: The one process Ps answers with.
INIT = Process(uid=0, pid=1, ppid=0, threads=[1], c=0, tty="pts/0", stime="14:04", time="10ms", cmd="sh")
#: What Exec answers for a running container.
STARTED = ExecResult(pid=7, host_pid=700)


class FakeSentry:
    """The sentry's side of GetStatus, Ps and Exec, recording the calls."""

    def __init__(self, status: str | None) -> None:
        #: The container's status as the sentry knows it; None: the sentry does not know it.
        self.status = status
        self.calls: list[str] = []

    def call(
        self, method: str, args: Any = None, result_type: type[Any] | None = None, timeout: float | None = None
    ) -> Any:
        self.calls.append(method)
        if method == "Lifecycle.GetStatus":
            assert isinstance(args, ContainerArgs)
            if self.status is None:
                raise NotFound(f"container {args.cid!r} does not exist")
            return ContainerStatus(cid=args.cid, status=self.status, pid=42)
        assert method == "Proc.Ps" and isinstance(args, PsArgs) and result_type is PsResult
        return PsResult(processes=[INIT])

    def call_with_fds(
        self, method: str, args: Any, result_type: type[Any], fds: list[int] | None = None
    ) -> tuple[Any, list[int]]:
        """Exec, refused as the sentry's own status check refuses it."""
        self.calls.append(method)
        assert method == "Proc.Exec" and isinstance(args, ExecArgs)
        if self.status is None:
            raise NotFound(f"container {args.container_id!r} does not exist")
        if self.status != "running":
            raise ConflictError(f"cannot exec in container {args.container_id!r} in state {self.status}")
        return STARTED, []


def domain(registry: Registry, sentry: FakeSentry) -> Proc:
    """The controller's Proc domain on registry, talking to sentry."""
    channel = cast(ServiceChannel, sentry)
    return Proc(registry, channel, Waiters(process_exit(channel)))
