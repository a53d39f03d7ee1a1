"""ExitLog: exits are durable files until their container is destroyed, and a new fork server
reads what an earlier one left."""

from __future__ import annotations

import json
from pathlib import Path

from common.messages.platform import TaskExit
from services.platform.exits import ExitLog


def test_records_survive_a_new_log_and_go_with_their_container(tmp_path: Path) -> None:
    log = ExitLog(tmp_path / "exits")
    log.record(TaskExit(cid="a", pid=20, init=True, exit_code=3))
    log.record(TaskExit(cid="a", pid=10, init=False, exit_code=0, ns_pid=5))
    log.record(TaskExit(cid="b", pid=30, init=True, exit_code=137))
    assert json.loads((tmp_path / "exits" / "20.json").read_text())["exit_code"] == 3
    again = ExitLog(tmp_path / "exits")  # a fork server that started after the first died
    assert [(e.cid, e.pid, e.ns_pid) for e in again.all()] == [("a", 10, 5), ("a", 20, 0), ("b", 30, 0)]
    again.forget("a", [])
    assert [e.pid for e in again.all()] == [30]
    assert sorted(p.name for p in (tmp_path / "exits").iterdir()) == ["30.json"]


def test_a_reservation_is_overwritten_in_place_and_is_not_an_exit(tmp_path: Path) -> None:
    log = ExitLog(tmp_path / "exits")
    log.reserve(40, "c")
    path = tmp_path / "exits" / "40.json"
    size, inode = path.stat().st_size, path.stat().st_ino
    assert ExitLog(tmp_path / "exits").all() == []  # a task still running when its fork server died
    log.record(TaskExit(cid="c", pid=40, init=True, exit_code=0))
    assert (path.stat().st_size, path.stat().st_ino) == (size, inode)  # no new space needed
    assert [e.pid for e in ExitLog(tmp_path / "exits").all()] == [40]
    log.reserve(41, "c")
    log.forget("c", [41])  # destroyed before 41 exited: its reservation goes too
    assert list((tmp_path / "exits").iterdir()) == []


def test_unreadable_records_are_skipped(tmp_path: Path) -> None:
    exits = tmp_path / "exits"
    exits.mkdir()
    (exits / "7.json").write_text("{not json")
    (exits / "9.json").write_text(json.dumps({"cid": "c", "pid": 9, "init": True, "exit_code": 1}))
    log = ExitLog(exits)
    assert [e.pid for e in log.all()] == [9]


def test_reap_drops_only_exited_exec_processes_of_the_container(tmp_path: Path) -> None:
    log = ExitLog(tmp_path / "exits")
    log.record(TaskExit(cid="a", pid=10, init=False, exit_code=0, ns_pid=5))
    log.record(TaskExit(cid="a", pid=11, init=False, exit_code=1, ns_pid=6))
    log.record(TaskExit(cid="a", pid=20, init=True, exit_code=3))
    log.record(TaskExit(cid="b", pid=12, init=False, exit_code=0, ns_pid=5))
    log.reserve(13, "a")  # still running
    assert log.reap("a", [10, 12, 13, 20, 99]) == [10]
    assert [e.pid for e in log.all()] == [11, 12, 20]
    assert sorted(p.name for p in (tmp_path / "exits").iterdir()) == ["11.json", "12.json", "13.json", "20.json"]
    assert [e.pid for e in ExitLog(tmp_path / "exits").all()] == [11, 12, 20]  # gone for good
