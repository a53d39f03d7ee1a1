"""The command server end to end: a `controller` process whose command a warm worker runs.

Each test has a server of its own (ZEROVISOR_CLI_SERVER names it), so that killing it touches no
other test's commands, and kills it at teardown. A worker is found as the server's child; what it
took on from its client (files, working directory, environment) is read from its /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.processctl import PR_SET_NO_NEW_PRIVS, prctl
from services.controller.cli import EXIT_REMOTE
from services.controller.cmdserver.client import LOST_STATUS
from services.controller.cmdserver.protocol import SWITCH
from tests.conftest import REPO, each_process
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration

#: How long a test waits for a process to appear or go.
WAIT = 20.0


def _servers(instance: str) -> list[int]:
    """Pids of the command servers named instance."""
    found = []
    for pid, cmdline in each_process("cmdline"):
        if b"services.controller.cmdserver" not in cmdline:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{SWITCH}={instance}".encode() in environ:
            found.append(pid)
    # Spares and workers are forks of their server: same command line, same environment.
    return [pid for pid in found if _parent(pid) not in found]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _workers(server: int) -> list[int]:
    """The server's children that run a command: not the spare, which holds no stdio."""
    try:
        children = [int(c) for c in Path(f"/proc/{server}/task/{server}/children").read_text().split()]
    except OSError:
        return []
    return [c for c in children if os.path.lexists(f"/proc/{c}/fd/1")]


def _spares(server: int) -> list[int]:
    """The server's spare worker, once it waits: it holds one fd, its socket."""
    try:
        children = [int(c) for c in Path(f"/proc/{server}/task/{server}/children").read_text().split()]
    except OSError:
        return []
    spares = []
    for child in children:
        try:
            if len(os.listdir(f"/proc/{child}/fd")) == 1:
                spares.append(child)
        except OSError:
            pass  # gone
    return spares


def _until(what: str, check: object) -> object:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture
def server(zv: Zerovisor, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A command server of this test's own, up and serving; its pid. Killed at teardown."""
    instance = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(SWITCH, instance)
    zv("list")  # runs in its own process, and starts the server
    pid = _until("the server", lambda: _servers(instance))[0]  # type: ignore[index]
    yield pid
    for left in _servers(instance):
        os.kill(left, signal.SIGKILL)


def _spawn(zv: Zerovisor, tmp_path: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    with open(tmp_path / "out", "wb") as out:
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            zv.argv(*args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, **kwargs
        )
    return proc


def test_a_worker_takes_on_its_client_and_exits_as_it_does(
    zv: Zerovisor, tmp_path: Path, server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    # No --root: the worker must take the client's environment to find the container.
    monkeypatch.setenv("ZEROVISOR_ROOT", str(zv.root))
    pid_file = tmp_path / "exec.pid"
    [spare] = _until("a spare", lambda: _spares(server))  # type: ignore[misc]
    argv = [sys.executable, "-m", "services.controller", "exec", "--pid-file", str(pid_file), "c"]
    with open(tmp_path / "out", "wb") as out:
        client = subprocess.Popen(
            [*argv, "sh", "-c", "echo hi; sleep 2; exit 7"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    worker = _until("a worker", lambda: _workers(server))[0]  # type: ignore[index]
    assert worker == spare, "the spare forked ahead runs the command"
    _until("the next spare", lambda: [p for p in _spares(server) if p != spare])
    assert os.readlink(f"/proc/{worker}/cwd") == str(tmp_path)
    assert os.readlink(f"/proc/{worker}/fd/1") == str(tmp_path / "out")
    assert client.wait(timeout=WAIT) == 7
    assert (tmp_path / "out").read_text() == "hi\n"
    # The pid file names the process the user started, which stands for the command.
    assert pid_file.read_text() == str(client.pid)
    _until("the worker reaped", lambda: _gone(worker))
    zv("delete", "--force", "c")


@pytest.mark.parametrize("ignored", [False, True], ids=["caught", "ignored-at-start"])
def test_signals_reach_the_command(zv: Zerovisor, tmp_path: Path, server: int, ignored: bool) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")

    def ignore_term() -> None:
        # As a shell starts a background job without job control (SIGINT and SIGQUIT), or
        # nohup (SIGHUP): exec catches the signals it forwards whatever it inherited.
        if ignored:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    script = "trap 'echo term; exit 5' TERM; while :; do sleep 0.1; done"
    client = _spawn(zv, tmp_path, "exec", "c", "sh", "-c", script, preexec_fn=ignore_term)
    _until("a worker", lambda: _workers(server))
    time.sleep(1.0)  # the exec'd shell sets its trap
    client.send_signal(signal.SIGTERM)
    # exec forwards SIGTERM to the process, whose trap ends it with 5.
    assert client.wait(timeout=WAIT) == 5
    assert "term" in (tmp_path / "out").read_text()
    zv("delete", "--force", "c")


def test_a_client_killed_outright_takes_its_worker(zv: Zerovisor, tmp_path: Path, server: int) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    client = _spawn(zv, tmp_path, "exec", "c", "sleep", "1000")
    worker = _until("a worker", lambda: _workers(server))[0]  # type: ignore[index]
    client.kill()
    client.wait(timeout=WAIT)
    _until("the worker gone", lambda: _gone(worker))
    assert _servers(os.environ[SWITCH]) == [server], "the server goes on"
    zv("delete", "--force", "c")


def test_a_server_killed_outright_ends_its_commands_with_an_error(zv: Zerovisor, tmp_path: Path, server: int) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    client = _spawn(zv, tmp_path, "exec", "c", "sleep", "1000")
    worker = _until("a worker", lambda: _workers(server))[0]  # type: ignore[index]
    os.kill(server, signal.SIGKILL)
    assert client.wait(timeout=WAIT) == LOST_STATUS == EXIT_REMOTE
    assert "command server went away" in (tmp_path / "out").read_text()
    _until("the worker gone", lambda: _gone(worker))
    # The next command runs in its own process and starts a new server.
    assert zv("list").returncode == 0
    _until("a new server", lambda: [p for p in _servers(os.environ[SWITCH]) if p != server])
    zv("delete", "--force", "c")


def test_a_caller_with_fewer_privileges_runs_its_command_itself(zv: Zerovisor, tmp_path: Path, server: int) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")

    def no_new_privs() -> None:
        prctl(PR_SET_NO_NEW_PRIVS, 1)

    client = _spawn(zv, tmp_path, "exec", "c", "sh", "-c", "sleep 1; echo done", preexec_fn=no_new_privs)
    _assert_no_worker_while(client, server)
    assert client.wait(timeout=WAIT) == 0
    assert (tmp_path / "out").read_text() == "done\n"
    zv("delete", "--force", "c")


def test_a_terminal_on_stdio_keeps_the_command_in_its_own_process(zv: Zerovisor, tmp_path: Path, server: int) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    primary, replica = os.openpty()
    try:
        client = subprocess.Popen(
            zv.argv("exec", "c", "sh", "-c", "sleep 1; echo done"), stdin=replica, stdout=replica, stderr=replica
        )
    finally:
        os.close(replica)
    _assert_no_worker_while(client, server)
    assert client.wait(timeout=WAIT) == 0
    assert os.read(primary, 100).strip() == b"done"
    os.close(primary)
    zv("delete", "--force", "c")


def _assert_no_worker_while(client: subprocess.Popen[bytes], server: int) -> None:
    """No worker for the 1.5 s the command's `sleep 1` runs in its own process."""
    deadline = time.monotonic() + 1.5
    while client.poll() is None and time.monotonic() < deadline:
        assert not _workers(server), "the command went to a worker"
        time.sleep(0.05)
