"""`controller up`, `status` and `down` drive four real service processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from common.rundir import SERVICES, RunDir
from tests.conftest import controller_cli

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    """True while pid runs (a zombie does not count: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


def status_json(root: Path) -> list[dict[str, object]]:
    out = controller_cli("status", "--format", "json", root=root)
    states = json.loads(out.stdout)
    assert isinstance(states, list)
    return states


def test_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "root"
    try:
        up = controller_cli("up", root=root)
        for service in SERVICES:
            assert f"{service} running (pid " in up.stdout

        states = status_json(root)
        assert [s["service"] for s in states] == list(SERVICES)
        pids = [s["pid"] for s in states]
        assert all(isinstance(p, int) for p in pids)
        assert len(set(pids)) == 4, pids
        assert all(alive(p) for p in pids if isinstance(p, int))
        assert all(s["state"] == "running" for s in states)
        # Each is its own detached process: its own session, not the CLI's.
        assert all(os.getsid(p) == p for p in pids if isinstance(p, int))

        table = controller_cli("status", root=root).stdout.splitlines()
        assert table[0].split() == ["SERVICE", "PID", "UPTIME", "RESTARTS", "STATE", "RECOVERED"]
        assert {line.split()[0] for line in table[1:]} == set(SERVICES)

        # A second `up` finds them running and starts nothing new.
        controller_cli("up", root=root)
        assert [s["pid"] for s in status_json(root)] == pids

        for service in SERVICES:
            assert RunDir.at(root).log_path(service).exists()
        assert (root.stat().st_mode & 0o777) == 0o700

        down = controller_cli("down", root=root)
        for service in SERVICES:
            assert f"{service} stopped" in down.stdout
        assert not any(alive(p) for p in pids if isinstance(p, int))
        assert all(s["state"] == "stopped" and s["pid"] is None for s in status_json(root))
    finally:
        controller_cli("down", root=root, check=False)


def test_run_dir_flag_separates_services_from_root(tmp_path: Path) -> None:
    root, run = tmp_path / "root", tmp_path / "run"
    try:
        controller_cli("up", "--run-dir", str(run), root=root)
        assert RunDir.at(run).running_pid("sentry")
        assert not (root / "sentry.pid").exists()
        states = json.loads(controller_cli("--run-dir", str(run), "status", "--format", "json", root=root).stdout)
        assert all(s["state"] == "running" for s in states)
    finally:
        controller_cli("down", "--run-dir", str(run), root=root, check=False)
    assert RunDir.at(run).running_pid("sentry") is None


def test_status_reports_a_stopped_service_as_not_responding(tmp_path: Path) -> None:
    root = tmp_path / "root"
    try:
        controller_cli("up", root=root)
        gofer = RunDir.at(root).running_pid("gofer")
        assert gofer
        os.kill(gofer, 19)  # SIGSTOP: holds its lock, answers nothing
        try:
            states = {s["service"]: s for s in status_json(root)}
            assert states["gofer"]["state"] == "not responding"
            assert states["sentry"]["state"] == "running"
        finally:
            os.kill(gofer, 18)  # SIGCONT
    finally:
        controller_cli("down", root=root, check=False)


def test_down_kills_a_service_that_ignores_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "root"
    try:
        controller_cli("up", root=root)
        platform = RunDir.at(root).running_pid("platform")
        assert platform
        os.kill(platform, 19)  # stopped: SIGTERM stays pending, only SIGKILL ends it
        down = controller_cli("down", "--timeout", "1", root=root)
        assert "platform stopped" in down.stdout
        assert not alive(platform)
    finally:
        controller_cli("down", root=root, check=False)


def test_up_reports_a_service_that_cannot_start(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (root / "sentry.fds").mkdir()  # the socket path is taken by a directory
    (root / "sentry.fds" / "keep").write_text("")
    try:
        proc = controller_cli("up", root=root, check=False)
        assert proc.returncode == 3
        assert "sentry exited with status 1 before it was ready" in proc.stderr
        assert "Is a directory" in proc.stderr
        # All or nothing: the services this `up` started are stopped again.
        assert all(RunDir.at(root).running_pid(s) is None for s in SERVICES)
    finally:
        controller_cli("down", root=root, check=False)
