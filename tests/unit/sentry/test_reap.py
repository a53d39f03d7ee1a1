"""Reaping exec'd processes in the sentry: a status handed out is forgotten but for the last
REAPED_KEPT, and the platform is told (after the answer, in a tick) so that it forgets too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from common.errors import NotFound, ServiceUnavailable, ZerovisorError
from common.events import Publisher
from common.messages.platform import ReapArgs, TaskExit
from common.messages.proc import ProcessArgs, ProcessExit
from common.messages.spec import ContainerSpec
from common.rundir import RunDir
from services.sentry.control.proc import Proc
from services.sentry.kernel import REAPED_KEPT, RUNNING, Container, ExecProcess, Kernel


class RecordingPlatform:
    """Takes Platform.Reap calls (failing with the next of failures first, if any)."""

    def __init__(self, failures: list[ZerovisorError] | None = None) -> None:
        self.failures = failures or []
        self.reaped: list[ReapArgs] = []

    def call(self, method: str, args: Any = None, result_type: type[Any] | None = None) -> Any:
        assert method == "Platform.Reap"
        if self.failures:
            raise self.failures.pop(0)
        self.reaped.append(args)
        return None


class Events:
    """Records what the kernel publishes."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    def publish(self, topic: str, _event: str, _body: object) -> None:
        self.topics.append(topic)


def kernel_with(tmp_path: Path, platform: RecordingPlatform) -> tuple[Kernel, Container]:
    kernel = Kernel(RunDir.at(tmp_path), cast(Publisher, Events()))
    kernel.platform = cast(Any, platform)
    spec = ContainerSpec(oci_version="1.0.2", bundle="/b", rootfs="/b/rootfs")
    ctr = kernel.containers["c"] = Container(cid="c", spec=spec, status=RUNNING, pid=100)
    kernel.restored = True
    return kernel, ctr


def exited(kernel: Kernel, ctr: Container, pid: int, host_pid: int, code: int) -> None:
    """Process pid (host_pid) was exec'd into ctr and has exited with code."""
    ctr.execs[pid] = ExecProcess(host_pid=host_pid)
    kernel.on_task_exit(TaskExit(cid="c", pid=host_pid, init=False, exit_code=code, ns_pid=pid))


def status(kernel: Kernel, pid: int) -> ProcessExit:
    return Proc(kernel).exit_status(ProcessArgs(cid="c", pid=pid))


def test_a_status_handed_out_is_reaped_and_the_platform_told_after(tmp_path: Path) -> None:
    platform = RecordingPlatform()
    kernel, ctr = kernel_with(tmp_path, platform)
    ctr.execs[7] = ExecProcess(host_pid=1007)
    assert status(kernel, 7) == ProcessExit(pid=7, exited=False)  # running: nothing to reap
    exited(kernel, ctr, 7, 1007, 3)
    exited(kernel, ctr, 8, 1008, 4)
    assert status(kernel, 7) == ProcessExit(pid=7, exited=True, exit_code=3)
    assert status(kernel, 8).exit_code == 4
    assert platform.reaped == [] and 7 not in ctr.execs  # not on the answer's path
    assert status(kernel, 7).exit_code == 3  # a caller whose answer was lost asks again
    kernel.send_reaps()
    assert platform.reaped == [ReapArgs(cid="c", host_pids=[1007, 1008])]
    kernel.send_reaps()
    assert len(platform.reaped) == 1  # each once


def test_only_the_last_reaped_statuses_stay_answerable(tmp_path: Path) -> None:
    kernel, ctr = kernel_with(tmp_path, RecordingPlatform())
    for pid in range(2, REAPED_KEPT + 3):
        exited(kernel, ctr, pid, 1000 + pid, pid % 256)
        status(kernel, pid)
    assert ctr.execs == {} and len(ctr.reaped) == REAPED_KEPT
    with pytest.raises(NotFound, match="container 'c' has no exec'd process 2"):
        status(kernel, 2)
    assert status(kernel, REAPED_KEPT + 2).exit_code == REAPED_KEPT + 2


def test_a_pid_used_again_answers_for_the_new_process(tmp_path: Path) -> None:
    kernel, ctr = kernel_with(tmp_path, RecordingPlatform())
    exited(kernel, ctr, 5, 1005, 1)
    status(kernel, 5)
    ctr.execs[5] = ExecProcess(host_pid=2005)  # the pid namespace handed 5 out again
    assert status(kernel, 5) == ProcessExit(pid=5, exited=False)
    kernel.on_task_exit(TaskExit(cid="c", pid=2005, init=False, exit_code=9, ns_pid=5))
    assert status(kernel, 5).exit_code == 9
    assert list(ctr.reaped) == [5] and ctr.reaped[5].host_pid == 2005


def test_an_exit_reported_again_after_its_reap_is_not_a_new_process(tmp_path: Path) -> None:
    kernel, ctr = kernel_with(tmp_path, RecordingPlatform())
    exited(kernel, ctr, 6, 1006, 2)
    status(kernel, 6)
    events = cast(Events, kernel.publisher)
    published = len(events.topics)
    # A catch-up that listed the platform's exits before it heard of the reap.
    kernel.on_task_exit(TaskExit(cid="c", pid=1006, init=False, exit_code=2, ns_pid=6))
    assert ctr.execs == {} and len(events.topics) == published


def test_reaps_wait_for_a_platform_that_is_down_and_an_error_drops_them(tmp_path: Path) -> None:
    platform = RecordingPlatform([ServiceUnavailable("platform is down"), NotFound("no such container")])
    kernel, ctr = kernel_with(tmp_path, platform)
    exited(kernel, ctr, 3, 1003, 0)
    status(kernel, 3)
    kernel.send_reaps()  # down: kept
    assert kernel.reaps_to_send == {"c": [1003]}
    kernel.send_reaps()  # refused: the platform keeps its record until Destroy; not sent again
    assert kernel.reaps_to_send == {} and platform.reaped == []
