"""runc's command-line contracts: inherited fds, cgroup removal, --log, pure JSON, refusals."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.zerovisor import Zerovisor, assert_no_such_container, cgroup_dirs, sh

pytestmark = pytest.mark.integration


def run_holding_fds(zv: Zerovisor, files: list[Path], *args: str) -> subprocess.CompletedProcess[str]:
    """`controller *args` started by a caller that holds fds 3, 4, ... open on files."""
    redirects = " ".join(f"{fd}<>{shlex.quote(str(path))}" for fd, path in enumerate(files, 3))
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {redirects}', "sh", *zv.argv(*args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def lowest_free(fds: set[int]) -> int:
    return min(set(range(len(fds) + 1)) - fds)


@pytest.mark.parametrize("preserve", [0, 1])
def test_container_inherits_only_stdio_and_preserved_fds(zv: Zerovisor, tmp_path: Path, preserve: int) -> None:
    files = [tmp_path / f"fd{n}" for n in (3, 4, 5)]
    for path in files:
        path.write_text("")
    script = ("echo via3 >&3; " if preserve else "") + "ls /proc/self/fd"
    bundle = sh(tmp_path, script)
    out = run_holding_fds(zv, files, "run", "--preserve-fds", str(preserve), "-b", str(bundle), "fds")
    assert out.returncode == 0, out
    listed = {int(word) for word in out.stdout.split()}
    inherited = {0, 1, 2, *range(3, 3 + preserve)}
    # ls opens /proc/self/fd itself, at the lowest fd the container left free.
    assert listed == inherited | {lowest_free(inherited)}, out.stdout
    assert files[0].read_text() == ("via3\n" if preserve else "")
    assert files[1].read_text() == files[2].read_text() == ""


def running_cgroups(zv: Zerovisor, cid: str) -> dict[str, Path]:
    state = zv.state(cid)
    assert state["status"] == "running" and isinstance(state["pid"], int)
    dirs = cgroup_dirs(Path(f"/proc/{state['pid']}/cgroup").read_text())
    assert dirs, f"container {cid} is in no zerovisor cgroup"
    v1 = {c for key in dirs for c in key.split(",")}
    assert "" in dirs or {"memory", "pids", "freezer"} <= v1, dirs
    for path in dirs.values():
        assert path.is_dir() and path.parts[-3:] == ("zerovisor", zv.instance, cid), path
    return dirs


def assert_gone(zv: Zerovisor, cid: str, dirs: dict[str, Path]) -> None:
    left = [str(p) for p in dirs.values() if p.exists()]
    assert not left, f"delete left the cgroups of {cid}: {left}"
    assert_no_such_container(zv, cid)


def test_delete_removes_the_cgroups(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "exec sleep 1000", "a")), "stopped")
    zv("run", "-d", "-b", str(sh(tmp_path, "exec sleep 1000", "b")), "forced")
    stopped, forced = running_cgroups(zv, "stopped"), running_cgroups(zv, "forced")
    zv("kill", "stopped", "KILL")
    assert zv("wait", "stopped", check=False).returncode == 137
    zv("delete", "stopped")
    assert_gone(zv, "stopped", stopped)
    assert all(p.is_dir() for p in forced.values()), "deleting one container removed another's cgroups"
    zv("delete", "--force", "forced")
    assert_gone(zv, "forced", forced)
    # The run directory's own group goes with its last container; zerovisor/ stays.
    assert not any(p.parent.exists() for p in forced.values()), forced
    assert all(p.parent.parent.is_dir() for p in forced.values())


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_log_file_gets_the_error_and_stderr_the_message(zv: Zerovisor, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    has_config = sh(tmp_path, "true")
    cases = [
        (["state", "nosuch"], 3, "nosuch"),
        (["start", "ghost"], 3, "ghost"),
        (["create", "-b", str(empty), "x"], 3, str(empty)),
        (["spec", "-b", str(has_config)], 1, str(has_config / "config.json")),
    ]
    for n, (args, code, needle) in enumerate(cases):
        log = tmp_path / f"log{n}.json"
        out = zv("--log", str(log), "--log-format", "json", *args, check=False)
        assert out.returncode == code, (args, out)
        assert out.stderr.startswith("controller: ") and needle in out.stderr, (args, out.stderr)
        entries = [json.loads(line) for line in log_lines(log)]
        assert all({"level", "msg", "time"} <= entry.keys() for entry in entries), entries
        errors = [e["msg"] for e in entries if e["level"] == "error"]
        assert any(needle in msg for msg in errors), (args, entries)

    text = tmp_path / "log.txt"
    out = zv("--log", str(text), "--log-format", "text", "state", "nosuch", check=False)
    assert out.returncode == 3 and out.stderr.startswith("controller: ")
    errors = [line for line in log_lines(text) if " ERROR " in line]
    assert len(errors) == 1 and "nosuch" in errors[0] and not errors[0].startswith("{"), log_lines(text)

    usage = zv("--log", str(text), "kill", "x", "NOSUCHSIG", check=False)
    assert usage.returncode == 2 and "invalid signal" in usage.stderr, usage


def test_delete_force_of_an_unknown_id_and_json_output(zv: Zerovisor, tmp_path: Path) -> None:
    gone = zv("delete", "--force", "never-existed")
    assert gone.returncode == 0 and gone.stdout == ""
    assert json.loads(zv("list", "--format", "json").stdout) == []
    bundle = sh(tmp_path, "exec sleep 1000")
    zv("run", "-d", "-b", str(bundle), "js")
    for debug in ([], ["--debug"]):
        state = json.loads(zv(*debug, "state", "js").stdout)
        assert state["id"] == "js" and state["status"] == "running" and state["bundle"] == str(bundle)
        listed = json.loads(zv(*debug, "list", "--format", "json").stdout)
        assert [entry["id"] for entry in listed] == ["js"]
        assert listed[0] == state
    zv("delete", "--force", "js")


def test_kill_of_a_stopped_container_is_refused_and_changes_nothing(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "exit 4")), "done")
    assert zv("wait", "done", check=False).returncode == 4
    before = zv.state("done")
    assert before["status"] == "stopped"
    for args in (["KILL"], ["TERM"], ["--all", "KILL"]):
        out = zv("kill", *args[:-1], "done", args[-1], check=False)
        assert out.returncode == 3, (args, out)
        assert "cannot signal container 'done' in state stopped" in out.stderr, (args, out.stderr)
        assert zv.state("done") == before
    assert zv("wait", "done", check=False).returncode == 4
    zv("delete", "done")


def test_the_installed_console_script_runs_commands(zv: Zerovisor) -> None:
    # The `controller` a user's shell finds (pyproject's [project.scripts]), not `python -m`.
    script = Path(sys.executable).parent / "controller"
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.startswith("controller, version "), version
    unknown = subprocess.run(
        [str(script), "--root", str(zv.root), "state", "nobody"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 3 and "nobody" in unknown.stderr, unknown
