"""compose/: the systemd units verify, and their ExecStart lines really start a ready service."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.rundir import SERVICES
from tests.conftest import REPO

pytestmark = pytest.mark.integration

COMPOSE = REPO / "compose"
UNITS = [COMPOSE / f"zerovisor-{s}.service" for s in SERVICES]


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: the README's setup installs Debian's systemd package")
    files = sorted(str(p) for p in COMPOSE.iterdir() if p.suffix in (".service", ".target"))
    assert len(files) == 5
    proc = subprocess.run([analyze, "verify", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "zerovisor" not in proc.stderr, proc.stderr


#: The units each service unit starts after, and wants: its dependencies (none for platform and gofer).
DEPENDENCIES = {
    "platform": set(),
    "gofer": set(),
    "sentry": {"zerovisor-platform.service", "zerovisor-gofer.service"},
    "controller": {"zerovisor-sentry.service"},
}


def unit_names(values: list[str]) -> set[str]:
    """The unit names of a dependency setting (space-separated, and the key may repeat)."""
    return {name for value in values for name in value.split()}


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_unit_settings(unit: Path) -> None:
    s = unit_settings(unit)
    assert s["Type"] == ["notify"]
    # Always, not on-failure: a service that stops cleanly (the platform does when its fork
    # server is gone) must come back too; and a crash loop is never rate-limited away.
    assert s["Restart"] == ["always"]
    assert s["RestartSec"] == ["1"]
    assert s["StartLimitIntervalSec"] == ["0"]
    assert s["RuntimeDirectory"] == ["zerovisor"]
    assert s["RuntimeDirectoryMode"] == ["0700"]
    assert s["WantedBy"] == ["zerovisor.target"]
    assert s["PartOf"] == ["zerovisor.target"]
    target = unit_settings(COMPOSE / "zerovisor.target")
    assert unit.name in target["Wants"][0].split()


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_only_the_platform_leaves_its_children_alive(unit: Path) -> None:
    """The fork server and the container tasks outlive a platform restart; nothing else may linger."""
    kill_mode = unit_settings(unit).get("KillMode", [])
    if unit.stem == "zerovisor-platform":
        assert kill_mode == ["process"]
    else:
        assert kill_mode in ([], ["control-group"])


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_are_ordered_and_independently_restartable(unit: Path) -> None:
    """Start order comes from After=; Wants= pulls the dependencies in but, unlike Requires=,
    never stops or restarts this unit when one of them stops or restarts."""
    s = unit_settings(unit)
    service = unit.stem.removeprefix("zerovisor-")
    assert unit_names(s.get("After", [])) == DEPENDENCIES[service]
    assert unit_names(s.get("Wants", [])) == DEPENDENCIES[service]


def test_no_unit_requires_or_binds_another() -> None:
    """Requires= and BindsTo= propagate a stop (BindsTo= also a restart): a unit restarting alone
    would take the units that depend on it down with it."""
    for path in COMPOSE.iterdir():
        s = unit_settings(path)
        assert not {"Requires", "Requisite", "BindsTo"} & s.keys(), path.name


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_exec_start_runs_a_service_that_notifies_ready(unit: Path, tmp_path: Path) -> None:
    """Start the unit's ExecStart as systemd would (PATH, NOTIFY_SOCKET), on a private run dir."""
    run_dir = tmp_path / "run"
    exec_start = unit_settings(unit)["ExecStart"][0].replace("/run/zerovisor", str(run_dir))
    argv = shlex.split(exec_start)
    notify_path = tmp_path / "notify"
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", NOTIFY_SOCKET=str(notify_path)
    )
    if shutil.which(argv[1], path=env["PATH"]) is None:
        pytest.skip(f"console script {argv[1]} is not installed beside this interpreter")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            message = notify.recv(4096).decode()
            assert "READY=1" in message
            assert f"MAINPID={proc.pid}" in message  # env exec'd the service: same pid
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err
            assert "STOPPING=1" in notify.recv(4096).decode()
            assert b'"level": "info"' in err  # --log-format json from the unit
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
