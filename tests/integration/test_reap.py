"""Exec'd processes are reaped once waited for, end to end on real services: nothing of them
stays in the sentry, the platform, the fork server or its exit records, so a container exec'd
into for ever holds no more than its live processes; and a reap the platform missed while it was
down is sent again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from common.client import FdClient
from common.errors import ErrCode, RemoteError, has_code
from common.events import Subscriber
from common.messages.platform import TasksArgs, TasksResult
from common.messages.proc import ExecRequest, ExecResult, ProcessArgs, ProcessExit
from common.rundir import RunDir
from common.server import TICK_MS
from tests.integration.test_restart import kill_service
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration

T = TypeVar("T")


def held_by_platform(zv: Zerovisor, cid: str) -> tuple[list[int], list[int]]:
    """Host pids of the exec'd processes of cid the platform holds, and of their exits it keeps."""
    with FdClient(RunDir.at(zv.root).socket_path("platform"), timeout=60) as platform:
        held, _ = platform.call("Platform.Tasks", TasksArgs(), TasksResult)
    (tasks,) = [t for t in held.containers if t.cid == cid]
    return sorted(e.host_pid for e in tasks.execs), sorted(e.pid for e in held.exits if e.cid == cid and not e.init)


def settled(probe: Callable[[], T], want: T, timeout: float = 15.0) -> T:
    """probe() once it returns want, or what it returns at timeout: the sentry tells the platform
    of a reap just after the status went out, not before."""
    deadline = time.monotonic() + timeout
    while (got := probe()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def exit_records(zv: Zerovisor) -> list[str]:
    """The fork server's exit records that are exits, not reservations, by file name."""
    exits = RunDir.at(zv.root).path / "exits"
    return sorted(p.name for p in exits.iterdir() if "exit_code" in json.loads(p.read_text()))


def test_waited_for_execs_leave_nothing_behind(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    for code in (3, 4, 5):
        assert zv("exec", "c", "sh", "-c", f"exit {code}", check=False).returncode == code
    zv("exec", "-d", "c", "sleep", "1000")  # running: kept
    assert settled(lambda: held_by_platform(zv, "c")[1], []) == []
    running, exits = held_by_platform(zv, "c")
    assert len(running) == 1 and exits == []
    assert exit_records(zv) == []
    kill_service(zv, "platform")  # the records are gone from disk too: a new platform has none
    zv("up")
    assert held_by_platform(zv, "c") == (running, [])
    assert zv("exec", "c", "true").returncode == 0
    # Its detached exec's CLI waits on: it would start the services again after `down`.
    zv("delete", "-f", "c")


def test_a_lost_answer_is_asked_again_and_a_reap_waits_for_the_platform(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    run_dir = RunDir.at(zv.root)
    events = Subscriber(run_dir.events_endpoint, ["process.c.exit"])
    try:
        time.sleep(0.2)  # PUB/SUB: a subscription made after the event would miss it
        with FdClient(run_dir.socket_path("controller"), timeout=60) as controller:
            started, _ = controller.call("Proc.Exec", ExecRequest(id="c", args=["sh", "-c", "exit 7"]), ExecResult)
            assert events.recv(timeout=30) is not None  # the sentry has its status
            kill_service(zv, "platform")
            process = ProcessArgs(cid="c", pid=started.pid)
            waits = [controller.call("Proc.WaitPid", process, ProcessExit, wait_forever=True)[0] for _ in range(2)]
            assert [w.exit_code for w in waits] == [7, 7]  # the second as if the first answer was lost
    finally:
        events.close()
    record = f"{started.host_pid}.json"
    time.sleep(2.5 * TICK_MS / 1000)  # the sentry's ticks, which find the platform down
    assert exit_records(zv) == [record]  # nobody could tell the fork server yet
    zv("up")
    assert settled(lambda: exit_records(zv), []) == []
    assert held_by_platform(zv, "c") == ([], [])
    kill_service(zv, "sentry")  # a restarted sentry rebuilds from the platform: nothing of it
    zv("up")
    with FdClient(run_dir.socket_path("controller"), timeout=60) as controller, pytest.raises(RemoteError) as err:
        controller.call("Proc.WaitPid", ProcessArgs(cid="c", pid=started.pid), ProcessExit, wait_forever=True)
    assert has_code(err.value, ErrCode.NOT_FOUND)
