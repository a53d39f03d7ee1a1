"""The controller's Proc.Exec against a sentry double: a record that says running goes straight
to the sentry (the exec path asks it nothing else), and a refusal names the container's real
state, as the record brought up to date says it."""

from __future__ import annotations

import pytest

from common import wire
from common.errors import ConflictError
from common.messages.proc import ExecRequest, ExecResult
from common.messages.spec import ContainerSpec
from services.controller.registry import ContainerRecord, Registry
from tests.unit.controller.proc_doubles import STARTED, FakeSentry, domain

SPEC = wire.to_wire(ContainerSpec(oci_version="1.0.2", bundle="/b", rootfs="/b/rootfs"))


def _exec(registry: Registry, sentry: FakeSentry, recorded: str) -> ExecResult:
    registry.add(ContainerRecord(id="box", bundle="/b", rootfs="/b/rootfs", status=recorded, pid=42, config=SPEC))
    return domain(registry, sentry).exec(ExecRequest(id="box", args=["true"]))


def test_a_running_container_is_exec_d_into_with_one_call(registry: Registry) -> None:
    sentry = FakeSentry("running")
    assert _exec(registry, sentry, "running") == STARTED
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
