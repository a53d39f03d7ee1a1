"""`controller status` counts each service's restarts in its run directory; `down` resets them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from common.rundir import SERVICES, RunDir
from tests.conftest import controller_cli

pytestmark = pytest.mark.integration


def statuses(root: Path) -> dict[str, dict[str, object]]:
    """Service -> its row of `controller status --format json`."""
    states = json.loads(controller_cli("status", "--format", "json", root=root).stdout)
    assert isinstance(states, list)
    return {s["service"]: s for s in states}


def wait_unlocked(rd: RunDir, service: str, timeout: float = 10) -> None:
    """Wait until no instance of service holds its lock (the kernel drops it as the process dies)."""
    deadline = time.monotonic() + timeout
    while rd.running_pid(service) is not None:
        assert time.monotonic() < deadline, f"{service} still holds its lock"
        time.sleep(0.05)


def test_status_counts_a_restart_until_down(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rd = RunDir.at(root)
    try:
        controller_cli("up", root=root)
        first = statuses(root)
        assert all(first[s]["restarts"] == 0 for s in SERVICES), first
        assert all(isinstance(first[s]["recovered"], dict) for s in SERVICES), first

        gofer = rd.running_pid("gofer")
        assert gofer
        os.kill(gofer, signal.SIGKILL)
        wait_unlocked(rd, "gofer")
        up = controller_cli("up", root=root)  # starts what is missing: the gofer alone
        assert "gofer running (pid " in up.stdout

        again = statuses(root)
        assert again["gofer"]["pid"] != gofer
        assert {s: again[s]["restarts"] for s in SERVICES} == {
            "platform": 0,
            "gofer": 1,
            "sentry": 0,
            "controller": 0,
        }
        assert all(again[s]["pid"] == first[s]["pid"] for s in SERVICES if s != "gofer")

        table = controller_cli("status", root=root).stdout.splitlines()
        assert table[0].split() == ["SERVICE", "PID", "UPTIME", "RESTARTS", "STATE", "RECOVERED"]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows["gofer"][3] == "1" and rows["sentry"][3] == "0"
        assert rows["gofer"][4] == "running"
        assert all(line == line.rstrip() for line in table)

        controller_cli("down", root=root)
        assert not any(rd.starts_path(s).exists() for s in SERVICES)
        stopped = statuses(root)
        assert all(stopped[s]["restarts"] is None and stopped[s]["recovered"] == {} for s in SERVICES)

        controller_cli("up", root=root)
        fresh = statuses(root)
        assert all(fresh[s]["restarts"] == 0 for s in SERVICES), fresh
    finally:
        controller_cli("down", root=root, check=False)
