"""OCI hooks end to end: every phase's place, its state on stdin, and what a failure does."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from tests.conftest import each_process
from tests.integration.zerovisor import Zerovisor, assert_no_such_container, cgroup_dirs, sh

pytestmark = pytest.mark.integration

#: Hooks get exactly the environment the config gives them: without PATH a script finds nothing.
HOOK_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
ANNOTATIONS = {"org.zerovisor.test/hooks": "round-trip", "other": "two words"}


def script(path: Path, body: str) -> str:
    """An executable /bin/sh script at path with body; returns its path as a string."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def logging_hook(path: Path, phase: str, log: str, then: str = "") -> str:
    """A script that appends "<phase> <its stdin>" as one line to log, then runs then."""
    return script(path, f"{{ printf '%s ' {phase}; cat; echo; }} >> {log}\n{then}")


def hook(path: str, timeout: int | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"path": path, "args": [path], "env": HOOK_ENV}
    if timeout is not None:
        entry["timeout"] = timeout
    return entry


def with_config(bundle: Path, **changes: object) -> Path:
    """Set top-level keys of the bundle's config.json."""
    config = json.loads((bundle / "config.json").read_text())
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def log_entries(log: Path) -> list[tuple[str, dict[str, object]]]:
    """(phase, state) per line the hooks wrote."""
    entries: list[tuple[str, dict[str, object]]] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        phase, _, state = line.partition(" ")
        entries.append((phase, json.loads(state)))
    return entries


def container_pids(zv: Zerovisor, cid: str) -> list[int]:
    """Host pids of every process in one of the container's cgroups."""
    needle = f"/zerovisor/{zv.instance}/{cid}"
    found = []
    for pid, raw in each_process("cgroup"):
        if any(line.split(":", 2)[2] == needle or needle + "/" in line for line in raw.decode().splitlines()):
            found.append(pid)
    return found


def test_every_phase_in_order_with_its_state(zv: Zerovisor, tmp_path: Path) -> None:
    logdir = tmp_path / "hooklog"
    logdir.mkdir()
    log = logdir / "log"
    bundle = sh(tmp_path, "exec sleep 1000")
    rootfs = bundle / "rootfs"
    # startContainer runs after pivot_root: its path, and what it writes to, are the container's.
    script(rootfs / "hook.sh", "{ printf '%s ' startContainer; cat; echo; } >> /hooklog/log\n")
    hooks = {
        phase: [hook(logging_hook(tmp_path / f"{phase}.sh", phase, str(log)))]
        for phase in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    }
    hooks["startContainer"] = [hook("/hook.sh")]
    config = json.loads((bundle / "config.json").read_text())
    mounts = [
        *config["mounts"],
        {"destination": "/hooklog", "type": "bind", "source": str(logdir), "options": ["rbind"]},
    ]
    with_config(bundle, hooks=hooks, annotations=ANNOTATIONS, mounts=mounts)

    zv("create", "-b", str(bundle), "hooked")
    pid = zv.state("hooked")["pid"]
    assert isinstance(pid, int) and pid > 1
    entries = log_entries(log)
    assert [phase for phase, _ in entries] == ["prestart", "createRuntime", "createContainer"], entries
    for phase, state in entries:
        assert state["id"] == "hooked", (phase, state)
        assert state["bundle"] == str(bundle), (phase, state)
        assert state["annotations"] == ANNOTATIONS, (phase, state)
        assert state["ociVersion"] == "1.0.2", (phase, state)
        assert state["status"] == "creating", (phase, state)
    # The runtime's hooks see the init's host pid; createContainer runs in its pid namespace.
    assert [state["pid"] for _, state in entries] == [pid, pid, 1]

    zv("start", "hooked")
    entries = log_entries(log)
    assert [phase for phase, _ in entries[3:]] == ["startContainer", "poststart"], entries
    (_, started), (_, poststart) = entries[3:]
    assert started["status"] == "created" and started["pid"] == 1, started
    assert poststart["status"] == "running" and poststart["pid"] == pid, poststart
    for state in (started, poststart):
        assert state["id"] == "hooked" and state["bundle"] == str(bundle), state
        assert state["annotations"] == ANNOTATIONS, state
    assert zv.state("hooked")["status"] == "running"

    zv("kill", "hooked", "KILL")
    assert zv("wait", "hooked", check=False).returncode == 137
    assert len(log_entries(log)) == 5, "a hook ran when the container stopped"
    zv("delete", "hooked")
    entries = log_entries(log)
    assert [phase for phase, _ in entries] == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ], entries
    poststop = entries[-1][1]
    assert poststop["status"] == "stopped" and "pid" not in poststop, poststop
    assert poststop["id"] == "hooked" and poststop["bundle"] == str(bundle), poststop
    assert poststop["annotations"] == ANNOTATIONS, poststop


def assert_nothing_left(zv: Zerovisor, cid: str) -> None:
    assert json.loads(zv("list", "--format", "json").stdout) == []
    assert_no_such_container(zv, cid)
    assert container_pids(zv, cid) == [], f"processes of {cid} outlived the failed create"


def test_failing_create_runtime_hook_fails_create_and_leaves_nothing(zv: Zerovisor, tmp_path: Path) -> None:
    log = tmp_path / "log"
    cgroups = tmp_path / "cgroups"
    # The hook saves the init's cgroups (it runs while they exist), then fails loudly.
    failing = logging_hook(
        tmp_path / "failing.sh",
        "createRuntime",
        str(log),
        then=(
            "pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p' " + str(log) + ")\n"
            f"cat /proc/$pid/cgroup > {cgroups}\n"
            "echo 'the runtime hook refuses' >&2\n"
            "exit 1\n"
        ),
    )
    late = logging_hook(tmp_path / "late.sh", "createContainer", str(log))
    bundle = with_config(
        sh(tmp_path, "exec sleep 1000"), hooks={"createRuntime": [hook(failing)], "createContainer": [hook(late)]}
    )
    out = zv("create", "-b", str(bundle), "refused", check=False)
    assert out.returncode == 3, out
    assert "createRuntime" in out.stderr and failing in out.stderr, out.stderr
    assert "the runtime hook refuses" in out.stderr, out.stderr
    entries = log_entries(log)
    assert [phase for phase, _ in entries] == ["createRuntime"], "a hook ran after the failed one"
    init = entries[0][1]["pid"]
    assert isinstance(init, int)
    dirs = list(cgroup_dirs(cgroups.read_text()).values())
    assert dirs, f"the init was in no zerovisor cgroup: {cgroups.read_text()}"
    assert_nothing_left(zv, "refused")
    with contextlib.suppress(FileNotFoundError):  # the pid exists again only if it was reused
        assert f"/zerovisor/{zv.instance}/refused" not in Path(f"/proc/{init}/cgroup").read_text()
    left = [str(d) for d in dirs if d.exists()]
    assert not left, f"the failed create left cgroups: {left}"


def test_prestart_hook_past_its_timeout_fails_create(zv: Zerovisor, tmp_path: Path) -> None:
    slow = script(tmp_path / "slow.sh", "sleep 30\n")
    bundle = with_config(sh(tmp_path, "exec sleep 1000"), hooks={"prestart": [hook(slow, timeout=1)]})
    began = time.monotonic()
    out = zv("create", "-b", str(bundle), "slow", check=False)
    took = time.monotonic() - began
    assert out.returncode == 3, out
    assert "prestart" in out.stderr and slow in out.stderr and "timed out" in out.stderr, out.stderr
    assert took < 25, f"create took {took:.1f} s with a 1 s hook timeout"
    assert_nothing_left(zv, "slow")


def test_failing_poststart_and_poststop_hooks_only_warn(zv: Zerovisor, tmp_path: Path) -> None:
    after_start = script(tmp_path / "after-start.sh", "echo poststart says no >&2\nexit 7\n")
    after_stop = script(tmp_path / "after-stop.sh", "echo poststop says no >&2\nexit 9\n")
    hooks = {"poststart": [hook(after_start)], "poststop": [hook(after_stop)]}
    bundle = with_config(sh(tmp_path, "exec sleep 1000"), hooks=hooks)
    zv("create", "-b", str(bundle), "warned")
    zv("start", "warned")
    assert zv.state("warned")["status"] == "running"
    platform_log = zv.root / "platform.log"
    text = platform_log.read_text()
    assert f"poststart hook {after_start}: exit status 7" in text and "poststart says no" in text, text
    zv("delete", "--force", "warned")
    assert json.loads(zv("list", "--format", "json").stdout) == []
    text = platform_log.read_text()
    assert f"poststop hook {after_stop}: exit status 9" in text and "poststop says no" in text, text
    assert container_pids(zv, "warned") == []
