"""services.platform.hooks against real hook processes: small /bin/sh scripts under tmp_path.

What a hook received (stdin, argv, environment, fds) is read back from files it wrote. The
cases that change process-wide signal state (SIGCHLD ignored, pid 1 of a new pid namespace)
run in a single-threaded subprocess that reports as JSON.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import ErrCode
from common.messages.spec import Hook
from services.platform.hooks import HookError, oci_state, run_hook, run_hooks, run_hooks_warn
from tests.conftest import each_process

REPO = Path(__file__).resolve().parents[3]
STATE = oci_state(oci_version="1.0.2", cid="c1", status="creating", pid=42, bundle="/b", annotations={"a": "1"})


def script(tmp_path: Path, name: str, body: str) -> str:
    """An executable /bin/sh script tmp_path/name running body; its path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def running(pid: int) -> bool:
    """Whether pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes in process group pgid."""
    members = []
    for pid, stat in each_process("stat"):
        state, _, pgrp = stat.decode().rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(pid)
    return members


def open_fds() -> set[int]:
    """The fd numbers this process has open."""
    return {int(n) for n in os.listdir("/proc/self/fd")}


@pytest.fixture
def inherited_fd() -> Iterator[int]:
    """An inheritable fd at 100 or above, which only close_fds keeps from a hook."""
    r, w = os.pipe()
    high = fcntl.fcntl(w, fcntl.F_DUPFD, 100)
    os.set_inheritable(high, True)
    yield high
    for fd in (r, w, high):
        os.close(fd)


def test_oci_state() -> None:
    assert json.loads(STATE) == {
        "ociVersion": "1.0.2",
        "id": "c1",
        "status": "creating",
        "pid": 42,
        "bundle": "/b",
        "annotations": {"a": "1"},
    }
    stopped = oci_state(oci_version="1.0.2", cid="c1", status="stopped", pid=0, bundle="/b", annotations={})
    assert "pid" not in json.loads(stopped)
    assert json.loads(stopped)["annotations"] == {}


def test_stdin_is_the_state(tmp_path: Path) -> None:
    out = tmp_path / "state.json"
    run_hook("createRuntime", Hook(path=script(tmp_path, "h", 'cat > "$1"\n'), args=["h", str(out)]), STATE)
    assert out.read_bytes() == STATE
    assert json.loads(out.read_bytes())["id"] == "c1"


def test_large_state_unread_does_not_block(tmp_path: Path) -> None:
    # More than a pipe holds: a hook that never reads its stdin must not stall us.
    big = oci_state(oci_version="1", cid="c", status="created", pid=1, bundle="/", annotations={"x": "y" * 200_000})
    run_hook("poststart", Hook(path=script(tmp_path, "h", "exit 0\n"), timeout=10), big)
    out = tmp_path / "state.json"
    run_hook("poststart", Hook(path=script(tmp_path, "c", 'cat > "$1"\n'), args=["c", str(out)]), big)
    assert out.read_bytes() == big


def test_argv_and_env_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZV_HOOK_LEAK", "parent-only")
    argv_out, env_out = tmp_path / "argv", tmp_path / "env"
    # /bin/sh itself is the hook, so that argv[0] (lost by a #! script) shows in its cmdline.
    body = 'cat /proc/$$/cmdline > "$1"; cat /proc/$$/environ > "$2"'
    args = ["argv0-marker", "-c", body, "sh", str(argv_out), str(env_out)]
    env = ["FOO=bar", "EMPTY=", "WITH_EQ=a=b", "SPACE=two words"]
    run_hook("createRuntime", Hook(path="/bin/sh", args=args, env=env), STATE)
    assert argv_out.read_bytes().split(b"\0")[:-1] == [a.encode() for a in args]
    environ = env_out.read_bytes().split(b"\0")[:-1]
    assert sorted(environ) == sorted(e.encode() for e in env)
    assert not any(e.startswith(b"ZV_HOOK_LEAK=") for e in environ)


def test_default_argv_is_path(tmp_path: Path) -> None:
    out = tmp_path / "argv"
    path = script(tmp_path, "h", f'echo "$0 $#" > {out}\n')
    run_hook("prestart", Hook(path=path), STATE)
    assert out.read_text() == f"{path} 0\n"


def test_only_stdio_inherited_and_no_fd_leak(tmp_path: Path, inherited_fd: int) -> None:
    out = tmp_path / "fd"
    path = script(tmp_path, "h", f"[ -e /proc/$$/fd/{inherited_fd} ] && echo leaked > {out}; exit 0\n")
    before = open_fds()
    run_hook("prestart", Hook(path=path), STATE)
    with pytest.raises(HookError):
        run_hook("prestart", Hook(path=script(tmp_path, "f", "exit 1\n")), STATE)
    assert not out.exists()
    assert open_fds() == before


def test_failure_names_phase_path_status_and_output(tmp_path: Path) -> None:
    path = script(tmp_path, "fail", "echo out-text; echo boom-text >&2; exit 3\n")
    with pytest.raises(HookError) as info:
        run_hook("createRuntime", Hook(path=path), STATE)
    message = str(info.value)
    assert message.startswith(f"createRuntime hook {path}: exit status 3")
    assert "stdout: out-text" in message
    assert "stderr: boom-text" in message
    assert info.value.code == ErrCode.OS_ERROR


def test_only_the_tail_of_the_output(tmp_path: Path) -> None:
    path = script(tmp_path, "fail", "head -c 100000 /dev/zero | tr '\\0' x >&2; echo THE-END >&2; exit 1\n")
    with pytest.raises(HookError) as info:
        run_hook("poststop", Hook(path=path), STATE)
    message = str(info.value)
    assert message.endswith("THE-END")
    assert len(message) < 1300


def test_death_by_signal(tmp_path: Path) -> None:
    with pytest.raises(HookError, match="killed by SIGKILL"):
        run_hook("prestart", Hook(path=script(tmp_path, "h", "kill -KILL $$\n")), STATE)


def test_ignored_signals_are_not_inherited(tmp_path: Path) -> None:
    # The fork server ignores SIGTERM; its hooks must still die of one.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with pytest.raises(HookError, match="killed by SIGTERM"):
            run_hook("prestart", Hook(path=script(tmp_path, "h", "kill -TERM $$\nexit 0\n")), STATE)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    hook_pid, sleep_pid = tmp_path / "hook.pid", tmp_path / "sleep.pid"
    path = script(tmp_path, "slow", f"echo $$ > {hook_pid}\nsleep 30 &\necho $! > {sleep_pid}\nwait\n")
    started = time.monotonic()
    try:
        with pytest.raises(HookError, match=f"^startContainer hook {path}: timed out after 1 s$"):
            run_hook("startContainer", Hook(path=path, timeout=1), STATE)
        assert time.monotonic() - started < 5
        pgid, child = int(hook_pid.read_text()), int(sleep_pid.read_text())
        deadline = time.monotonic() + 5
        while (running(child) or group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(pgid)
        assert not running(child)
        assert group_members(pgid) == []
    finally:
        if sleep_pid.exists() and running(int(sleep_pid.read_text())):
            os.kill(int(sleep_pid.read_text()), signal.SIGKILL)


def test_fast_hook_with_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    run_hook("prestart", Hook(path=script(tmp_path, "h", "exit 0\n"), timeout=30), STATE)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("case", ["missing", "not-executable"])
def test_cannot_start(tmp_path: Path, case: str) -> None:
    path = tmp_path / "hook"
    if case == "not-executable":
        path.write_text("#!/bin/sh\n")
    expected = "No such file or directory" if case == "missing" else "Permission denied"
    with pytest.raises(HookError, match=f"^createContainer hook {path}: could not start: {expected}$"):
        run_hook("createContainer", Hook(path=str(path)), STATE)


def test_run_hooks_in_order_stops_at_first_failure(tmp_path: Path) -> None:
    log, marker = tmp_path / "log", tmp_path / "marker"
    first = Hook(path=script(tmp_path, "one", f"echo one >> {log}\n"))
    second = Hook(path=script(tmp_path, "two", f"echo two >> {log}\n"))
    run_hooks("createRuntime", [first, second], STATE)
    assert log.read_text() == "one\ntwo\n"
    failing = Hook(path=script(tmp_path, "fail", "exit 2\n"))
    touch = Hook(path=script(tmp_path, "touch", f"touch {marker}\n"))
    with pytest.raises(HookError, match="exit status 2"):
        run_hooks("createRuntime", [failing, touch], STATE)
    assert not marker.exists()


def test_run_hooks_warn_logs_and_continues(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "marker"
    failing = Hook(path=script(tmp_path, "fail", "echo why-it-failed >&2; exit 4\n"))
    touch = Hook(path=script(tmp_path, "touch", f"touch {marker}\n"))
    log = logging.getLogger("test_hooks.warn")
    with caplog.at_level(logging.WARNING, logger=log.name):
        run_hooks_warn("poststop", [failing, touch], STATE, log)
    assert marker.exists()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"poststop hook {failing.path}: exit status 4" in record.getMessage()
    assert "why-it-failed" in record.getMessage()


#: Runs run_hook in a single-threaded process with a SIGCHLD handler and a wakeup fd, as the
#: fork server does: mode "pid1" from the init of a new pid namespace, mode "sigchld-ignored"
#: with children reaped behind run_hook's back. Prints what each hook gave as JSON.
PROBE = textwrap.dedent(
    """
    import json, os, signal, sys
    from common.messages.spec import Hook
    from services.platform.clone import CLONE_NEWPID, clone_process
    from services.platform.hooks import HookError, run_hook

    def attempt(hook):
        try:
            run_hook("probe", hook, b"{}")
            return "ok"
        except HookError as e:
            return str(e)

    mode, ok, slow = sys.argv[1:]
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    if mode == "sigchld-ignored":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        print(json.dumps({"ok": attempt(Hook(path=ok))}))
        sys.exit(0)
    r, w = os.pipe()
    pid = clone_process(CLONE_NEWPID)
    if pid == 0:
        try:
            out = {"pid": os.getpid(), "ok": attempt(Hook(path=ok)), "slow": attempt(Hook(path=slow, timeout=1))}
        except BaseException as e:
            out = {"error": repr(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    out = json.loads(os.read(r, 65536) or b"{}")
    os.waitpid(pid, 0)
    print(json.dumps(out))
    """
)


def probe(tmp_path: Path, mode: str) -> dict[str, Any]:
    ok = script(tmp_path, "ok", "exit 0\n")
    slow = script(tmp_path, "slow", "sleep 30 &\nwait\n")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode, ok, slow],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    return dict(json.loads(proc.stdout))


def test_from_pid_1_of_a_new_pid_namespace(tmp_path: Path) -> None:
    report = probe(tmp_path, "pid1")
    assert report["pid"] == 1
    assert report["ok"] == "ok"
    assert report["slow"] == f"probe hook {tmp_path / 'slow'}: timed out after 1 s"


def test_child_reaped_by_someone_else(tmp_path: Path) -> None:
    report = probe(tmp_path, "sigchld-ignored")
    assert report["ok"] == f"probe hook {tmp_path / 'ok'}: reaped by another waiter, its exit status is lost"
