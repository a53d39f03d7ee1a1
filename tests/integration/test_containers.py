"""OCI containers end to end: a real busybox bundle through the controller CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration


def test_run_prints_and_returns_exit_codes(zv: Zerovisor, tmp_path: Path) -> None:
    out = zv("run", "-b", str(sh(tmp_path, "echo hello")), "c1")
    assert out.stdout == "hello\n"
    assert zv("run", "-b", str(sh(tmp_path, "exit 3", "b3")), "c3", check=False).returncode == 3
    # An init cannot be killed from inside its own pid namespace: kill it from outside.
    runner = subprocess.Popen(
        zv.argv("run", "-b", str(sh(tmp_path, "exec sleep 1000", "b9")), "c9"),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while zv("state", "c9", check=False).returncode != 0 or zv.state("c9")["status"] != "running":
            assert time.monotonic() < deadline, "c9 never ran"
            time.sleep(0.1)
        zv("kill", "c9", "KILL")
        assert runner.wait(timeout=60) == 137
    finally:
        runner.kill()
        runner.wait()
    # run deletes what it ran
    assert json.loads(zv("list", "--format", "json").stdout) == []


def test_inside_the_container(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "echo pid=$$; hostname; grep 'open files' /proc/self/limits; ls /proc | grep -c '^[0-9]'")
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]
    config["hostname"] = "inside-zv"
    (bundle / "config.json").write_text(json.dumps(config))
    lines = zv("run", "-b", str(bundle), "inside").stdout.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1] == "inside-zv"
    assert lines[2].split()[3:5] == ["123", "321"]
    assert int(lines[3]) <= 3  # sh, ls, grep: nothing of the host's


def test_create_start_state_kill_wait_delete(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "while true; do sleep 0.1; done")
    zv("create", "-b", str(bundle), "life")
    state = zv.state("life")
    assert state["status"] == "created" and isinstance(state["pid"], int) and state["pid"] > 0
    assert state["bundle"] == str(bundle) and state["rootfs"] == str(bundle / "rootfs")
    assert state["ociVersion"] == "1.0.2" and state["owner"] == "root"
    zv("start", "life")
    assert zv.state("life")["status"] == "running"
    listed = zv("list").stdout.splitlines()
    assert listed[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert listed[1].split()[0:3] == ["life", str(state["pid"]), "running"]
    assert zv("list", "-q").stdout.split() == ["life"]
    zv("kill", "life", "KILL")
    assert zv("wait", "life", check=False).returncode == 137
    assert zv.state("life")["status"] == "stopped"
    zv("delete", "life")
    missing = zv("state", "life", check=False)
    assert missing.returncode == 3 and "container life does not exist" in missing.stderr.replace("'", "")


def test_pause_stops_a_counter_and_resume_continues_it(zv: Zerovisor, tmp_path: Path) -> None:
    # The counter appends, so the file's size is the count and a reader never sees it truncated.
    bundle = sh(tmp_path, "i=0; while true; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.01; done")
    zv("run", "-d", "-b", str(bundle), "counter")
    count = bundle / "rootfs" / "tmp" / "count"

    def size() -> int:
        return count.stat().st_size if count.exists() else 0

    deadline = time.monotonic() + 10
    while size() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert size() > 0, "the counter never wrote"
    zv("pause", "counter")
    assert zv.state("counter")["status"] == "paused"
    frozen = size()
    time.sleep(0.5)
    assert size() == frozen
    zv("resume", "counter")
    assert zv.state("counter")["status"] == "running"
    time.sleep(0.5)
    assert size() > frozen
    zv("delete", "--force", "counter")


def test_memory_limit_stops_a_hog(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived")
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}
    (bundle / "config.json").write_text(json.dumps(config))
    out = zv("run", "-b", str(bundle), "hog", check=False)
    assert out.returncode == 137, out
    assert "survived" not in out.stdout


def test_two_containers_do_not_see_each_other(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "exec sleep 1000", "a")), "a")
    out = zv("run", "-b", str(sh(tmp_path, "ps -o comm | grep -c sleep", "b")), "b", check=False)
    assert out.stdout.strip() == "0"
    zv("delete", "-f", "a")


def test_events_show_the_exit(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1; exit 5")), "ev")
    events = zv("events", "ev", timeout=60).stdout.splitlines()
    last = json.loads(events[-1])
    assert last["type"] == "exit" and last["id"] == "ev" and last["data"]["exit_code"] == 5
    zv("delete", "ev")


def test_stats_report_the_cgroup(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "exec sleep 1000")
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}
    (bundle / "config.json").write_text(json.dumps(config))
    zv("run", "-d", "-b", str(bundle), "st")
    stats = json.loads(zv("events", "--stats", "st").stdout)
    assert stats["type"] == "stats"
    assert stats["data"]["memory_limit"] == 64 << 20
    assert stats["data"]["pids_limit"] == 50
    assert stats["data"]["pids_current"] >= 1
    zv("delete", "-f", "st")


def test_pid_file_names_a_process_that_exits_with_the_container(zv: Zerovisor, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    zv("create", "-b", str(sh(tmp_path, "sleep 0.3; exit 7")), "--pid-file", str(pid_file), "pf")
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}").exists()
    zv("start", "pf")
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    zv("delete", "pf")


def test_oci_errors_are_clear_and_change_nothing(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "sleep 1000")
    zv("create", "-b", str(bundle), "dup")
    again = zv("create", "-b", str(bundle), "dup", check=False)
    assert again.returncode != 0 and "container 'dup' already exists" in again.stderr
    zv("start", "dup")
    restart = zv("start", "dup", check=False)
    assert restart.returncode != 0 and "cannot start container 'dup' in state running" in restart.stderr
    running = zv("delete", "dup", check=False)
    assert running.returncode != 0 and "cannot delete container 'dup' in state running" in running.stderr
    zv("kill", "dup", "9")
    zv("wait", "dup", check=False)
    stopped = zv("kill", "dup", check=False)
    assert stopped.returncode != 0 and "cannot signal container 'dup' in state stopped" in stopped.stderr
    zv("delete", "dup")
    zv("delete", "--force", "dup")  # gone already: fine with --force
    for command in (["start", "ghost"], ["kill", "ghost"], ["delete", "ghost"], ["pause", "ghost"], ["state", "ghost"]):
        out = zv(*command, check=False)
        assert out.returncode != 0, command
        assert "container ghost does not exist" in out.stderr.replace("'", ""), (command, out.stderr)

    no_config = tmp_path / "empty"
    no_config.mkdir()
    out = zv("create", "-b", str(no_config), "x", check=False)
    assert out.returncode != 0 and "config.json" in out.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    out = zv("create", "-b", str(bad), "x", check=False)
    assert out.returncode != 0 and "config.json" in out.stderr

    no_process = sh(tmp_path, "true", "noproc")
    config = json.loads((no_process / "config.json").read_text())
    del config["process"]
    (no_process / "config.json").write_text(json.dumps(config))
    zv("create", "-b", str(no_process), "noproc")
    out = zv("start", "noproc", check=False)
    assert out.returncode != 0 and "has no process" in out.stderr
    zv("delete", "-f", "noproc")
    assert json.loads(zv("list", "--format", "json").stdout) == []
    assert os.listdir(zv.root)  # the registry lives under --root


def test_run_and_wait_wait_on_the_fd_channel_without_zmq(zv: Zerovisor, tmp_path: Path) -> None:
    # The exit comes back as Containers.Wait's late answer, not through an event subscription.
    assert zv.run_loading("zmq", "run", "-b", str(sh(tmp_path, "sleep 0.5; exit 6")), "fg") == (6, False)
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 0.5; exit 7", name="detached")), "bg")
    assert zv.run_loading("zmq", "wait", "bg") == (7, False)
