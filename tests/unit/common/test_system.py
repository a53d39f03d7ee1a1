"""The System domain's start counter and what System.Status reports of it (common.system)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.messages.system import StatusArgs
from common.rpc import Dispatcher, Registry
from common.rundir import InstanceLock, RunDir
from common.system import System, count_start


@pytest.fixture
def rd(tmp_path: Path) -> RunDir:
    return RunDir.at(tmp_path / "run").ensure()


def test_each_start_counts_one_more(rd: RunDir) -> None:
    lock = InstanceLock(rd, "gofer")
    try:
        assert [count_start(rd, "gofer") for _ in range(3)] == [1, 2, 3]
    finally:
        lock.release()
    assert rd.starts_path("gofer").read_text() == "3\n"
    # The count outlives the instance lock: the next instance goes on from it.
    assert count_start(rd, "gofer") == 4


def test_services_count_apart(rd: RunDir) -> None:
    count_start(rd, "gofer")
    count_start(rd, "gofer")
    assert count_start(rd, "sentry") == 1
    assert rd.starts_path("sentry") != rd.starts_path("gofer")


def test_the_count_is_replaced_whole(rd: RunDir) -> None:
    count_start(rd, "platform")
    before = rd.starts_path("platform").stat().st_ino
    count_start(rd, "platform")
    assert rd.starts_path("platform").stat().st_ino != before  # a new file renamed over the old
    assert sorted(p.name for p in rd.path.iterdir()) == ["platform.starts"]  # no temporary left


@pytest.mark.parametrize("text", ["", "x\n", "1.5", "\x00\x00"])
def test_a_file_that_is_not_a_count_starts_over(rd: RunDir, text: str) -> None:
    rd.starts_path("sentry").write_text(text)
    assert count_start(rd, "sentry") == 1


def test_a_leftover_temporary_is_overwritten(rd: RunDir) -> None:
    tmp = rd.starts_path("sentry").with_name("sentry.starts.tmp")
    tmp.write_text("999999 and more\n")
    assert count_start(rd, "sentry") == 1
    assert not tmp.exists()


def test_status_reports_restarts_and_a_snapshot_of_recovered(rd: RunDir) -> None:
    system = System("sentry", str(rd.path), Dispatcher(Registry()), restarts=2)
    system.recovered["containers"] = 3
    first = system.status(StatusArgs())
    system.recovered["listeners"] = 1
    assert first.restarts == 2
    assert first.recovered == {"containers": 3}
    assert system.status(StatusArgs()).recovered == {"containers": 3, "listeners": 1}


def test_a_first_start_reports_nothing_recovered(rd: RunDir) -> None:
    status = System("gofer", str(rd.path), Dispatcher(Registry())).status(StatusArgs())
    assert status.restarts == 0
    assert status.recovered == {}
