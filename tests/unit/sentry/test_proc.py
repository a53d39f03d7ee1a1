"""The sentry's Proc domain with a fake platform: the status rules, and Ps over real host pids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

from common.errors import ConflictError, NotFound
from common.events import Publisher
from common.messages.platform import ContainerRef, PidsResult
from common.messages.proc import PsArgs
from common.messages.spec import ContainerSpec, IdMapping
from common.rpc import Registry
from common.rundir import RunDir
from services.sentry.control.proc import Proc
from services.sentry.kernel import CREATED, PAUSED, RUNNING, STOPPED, Container, Kernel


class FakePlatform:
    """Answers Platform.Pids with the pids it was given, and records the calls."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.calls: list[tuple[str, Any]] = []

    def call(self, method: str, args: Any = None, result_type: type[Any] | None = None) -> Any:
        self.calls.append((method, args))
        assert method == "Platform.Pids" and result_type is PidsResult
        return PidsResult(pids=self.pids)


def kernel_with(tmp_path: Path, status: str, pids: list[int], uid_mappings: list[IdMapping] | None = None) -> Kernel:
    kernel = Kernel(RunDir.at(tmp_path), cast(Publisher, None))
    kernel.platform = cast(Any, FakePlatform(pids))
    spec = ContainerSpec(oci_version="1.0.2", bundle="/b", rootfs="/b/rootfs", uid_mappings=uid_mappings or [])
    kernel.containers["c"] = Container(cid="c", spec=spec, status=status, pid=pids[0] if pids else 0)
    return kernel


def test_only_the_calls_are_rpcs() -> None:
    reg = Registry()
    reg.register(Proc(cast(Kernel, object())))
    assert reg.names() == ["Proc.Exec", "Proc.ExitStatus", "Proc.Ps", "Proc.ReleaseConsole", "Proc.SignalProcess"]


@pytest.mark.parametrize("status", [CREATED, RUNNING, PAUSED])
def test_ps_lists_the_processes_the_platform_names(tmp_path: Path, status: str) -> None:
    kernel = kernel_with(tmp_path, status, [os.getpid(), 2**22 + 12345])  # the second never existed
    result = Proc(kernel).ps(PsArgs(cid="c"))
    assert cast(FakePlatform, kernel.platform).calls == [("Platform.Pids", ContainerRef(cid="c"))]
    (me,) = result.processes
    assert me.pid == os.getpid() and me.uid == os.geteuid() and os.getpid() in me.threads


def test_ps_maps_uids_through_the_container_user_namespace(tmp_path: Path) -> None:
    mapping = IdMapping(container_id=0, host_id=os.geteuid(), size=1)
    kernel = kernel_with(tmp_path, RUNNING, [os.getpid()], [mapping])
    assert [p.uid for p in Proc(kernel).ps(PsArgs(cid="c")).processes] == [0]


def test_ps_of_a_stopped_container_is_refused(tmp_path: Path) -> None:
    kernel = kernel_with(tmp_path, STOPPED, [])
    with pytest.raises(ConflictError, match="cannot list the processes of container 'c' in state stopped"):
        Proc(kernel).ps(PsArgs(cid="c"))
    assert cast(FakePlatform, kernel.platform).calls == []


def test_ps_of_an_unknown_container(tmp_path: Path) -> None:
    kernel = kernel_with(tmp_path, RUNNING, [os.getpid()])
    with pytest.raises(NotFound, match="container 'nope' does not exist"):
        Proc(kernel).ps(PsArgs(cid="nope"))
