"""The controller's Proc.Exec against a sentry double: a record that says running goes straight
to the sentry (the exec path asks it nothing else), and a refusal names the container's real
state, as the record brought up to date says it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from common import wire
from common.client import ServiceChannel
from common.errors import ConflictError, NotFound
from common.messages.execs import ExecArgs
from common.messages.lifecycle import ContainerArgs, ContainerStatus
from common.messages.proc import ExecRequest, ExecResult
from common.messages.spec import ContainerSpec
from services.controller.proc import Proc, process_exit
from services.controller.registry import ContainerRecord, Registry
from services.controller.waiters import Waiters

SPEC = wire.to_wire(ContainerSpec(oci_version="1.0.2", bundle="/b", rootfs="/b/rootfs"))


class FakeSentry:
    """The sentry as Proc.Exec sees it: its own status check, then the exec."""

    def __init__(self, status: str | None) -> None:
        #: What the sentry knows of the container: a status, or None if it has no such container.
        self.status = status
        self.calls: list[str] = []

    def call(
        self, method: str, args: Any = None, result_type: type[Any] | None = None, timeout: float | None = None
    ) -> Any:
        self.calls.append(method)
        assert method == "Lifecycle.GetStatus" and isinstance(args, ContainerArgs)
        if self.status is None:
            raise NotFound(f"container {args.cid!r} does not exist")
        return ContainerStatus(cid=args.cid, status=self.status, pid=42)

    def call_with_fds(
        self, method: str, args: Any, result_type: type[Any], fds: list[int] | None = None
    ) -> tuple[Any, list[int]]:
        self.calls.append(method)
        assert method == "Proc.Exec" and isinstance(args, ExecArgs)
        if self.status is None:
            raise NotFound(f"container {args.container_id!r} does not exist")
        if self.status != "running":
            raise ConflictError(f"cannot exec in container {args.container_id!r} in state {self.status}")
        return ExecResult(pid=7, host_pid=700), []


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(str(tmp_path / "root"))
    yield reg
    reg.close()


def _exec(registry: Registry, sentry: FakeSentry, recorded: str) -> ExecResult:
    registry.add(ContainerRecord(id="box", bundle="/b", rootfs="/b/rootfs", status=recorded, pid=42, config=SPEC))
    channel = cast(ServiceChannel, sentry)
    return Proc(registry, channel, Waiters(process_exit(channel))).exec(ExecRequest(id="box", args=["true"]))


def test_a_running_container_is_exec_d_into_with_one_call(registry: Registry) -> None:
    sentry = FakeSentry("running")
    assert _exec(registry, sentry, "running") == ExecResult(pid=7, host_pid=700)
    assert sentry.calls == ["Proc.Exec"]


@pytest.mark.parametrize("sentry_status", ["stopped", None])
def test_a_container_that_stopped_unseen_is_refused_by_its_real_state(
    registry: Registry, sentry_status: str | None
) -> None:
    # The registry missed the exit (or the sentry restarted and forgot the container).
    sentry = FakeSentry(sentry_status)
    with pytest.raises(ConflictError, match="cannot exec in container 'box' in state stopped"):
        _exec(registry, sentry, "running")
    assert sentry.calls == ["Proc.Exec", "Lifecycle.GetStatus"]
    assert registry.get("box").status == "stopped"


def test_a_record_that_is_not_running_is_checked_with_the_sentry_first(registry: Registry) -> None:
    # A paused container the registry thinks still created (say): the sentry's word decides.
    sentry = FakeSentry("paused")
    with pytest.raises(ConflictError, match="in state paused"):
        _exec(registry, sentry, "created")
    assert sentry.calls == ["Lifecycle.GetStatus"]
    assert registry.get("box").status == "paused"
