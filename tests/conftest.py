"""Fixtures shared by every test: per-test run directories and real service processes.

Each test gets its own run directory under tmp_path, so tests run in parallel
(`pytest -n auto`) without meeting each other's services.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.messages.system import PingResult
from common.methods import SYSTEM_PING
from common.rundir import RunDir
from common.zmqclient import RpcClient

REPO = Path(__file__).resolve().parent.parent


def service_argv(service: str, run_dir: Path) -> list[str]:
    """The command line of one service on run_dir, run by this interpreter."""
    # The controller's registry goes under --root: keep it inside the test's directory too.
    module = (
        ["services.controller", "--root", str(run_dir), "serve"] if service == "controller" else [f"services.{service}"]
    )
    return [sys.executable, "-m", *module, "--run-dir", str(run_dir)]


def each_process(name: str) -> Iterator[tuple[int, bytes]]:
    """(pid, /proc/PID/name's bytes) of every process, skipping those gone while listed."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                yield int(entry), Path(f"/proc/{entry}/{name}").read_bytes()
            except OSError:
                continue


def open_fds(pid: int | str = "self") -> set[int]:
    """The fd numbers a process has open right now."""
    return {int(n) for n in os.listdir(f"/proc/{pid}/fd")}


def nonblocking_pipe() -> tuple[int, int]:
    """A pipe whose read end never blocks, so a missed close fails a test instead of hanging it."""
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


def at_eof(fd: int) -> bool:
    """True when every write end of the pipe is closed (and its data has been read)."""
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


def settled_fd_count(pid: int, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """The number of fds pid has open once it has stayed the same for quiet seconds."""
    deadline = time.monotonic() + timeout
    count = len(open_fds(pid))
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet and time.monotonic() < deadline:
        time.sleep(0.02)
        now = len(open_fds(pid))
        if now != count:
            count, stable_since = now, time.monotonic()
    return count


def wait_fd_count(pid: int, at_most: int, timeout: float = 10.0) -> int:
    """Wait until pid has at most at_most fds open; return the final count.

    A service closes a connection's fds when it reads the peer's EOF (and ZMQ's I/O thread
    closes its own in the background), so counts settle shortly after a client goes away.
    """
    deadline = time.monotonic() + timeout
    while (count := len(open_fds(pid))) > at_most and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


class ServiceProcess:
    """One service run by the test as its own child, so the test reaps it."""

    def __init__(self, service: str, run_dir: Path, log: Path) -> None:
        self.service = service
        self.run_dir = run_dir
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> int:
        """Start the service and wait until it answers Ping; return its pid."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                service_argv(self.service, self.run_dir), stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=REPO
            )
        result = self.ping(timeout)
        assert result.pid == self.proc.pid
        return self.proc.pid

    def ping(self, timeout: float = 10.0) -> PingResult:
        """Ping the service, retrying until timeout."""
        with RpcClient(RunDir.at(self.run_dir).endpoint(self.service), timeout=timeout) as client:
            return client.call(SYSTEM_PING, None, PingResult)

    @property
    def pid(self) -> int:
        """Host pid of the running process."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self, signo: int = signal.SIGKILL) -> int:
        """Send signo and reap the process; return its wait status as Popen reports it."""
        assert self.proc is not None
        self.proc.send_signal(signo)
        return self.proc.wait(timeout=15)

    def stop(self) -> None:
        """Terminate (then kill) the process if it still runs; a platform's fork server too,
        which outlives it (and kills the containers it still holds)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.service == "platform":
            stop_forkserver(self.run_dir)


def stop_forkserver(run_dir: Path, timeout: float = 30.0) -> None:
    """SIGTERM the fork server of run_dir, if one runs, and wait until it is gone (it is not our
    child: it was started in its own session by a platform)."""
    pid = RunDir.at(run_dir).running_pid("forkserver")
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while RunDir.at(run_dir).running_pid("forkserver") and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A fresh run directory for this test."""
    path = tmp_path / "run"
    RunDir.at(path).ensure()
    return path


@pytest.fixture
def start_service(run_dir: Path, tmp_path: Path) -> Iterator[Callable[[str], ServiceProcess]]:
    """Factory: start_service("sentry") -> a ready ServiceProcess, stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(service: str) -> ServiceProcess:
        sp = ServiceProcess(service, run_dir, tmp_path / f"{service}.log")
        sp.start()
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()


def controller_cli(
    *args: str, root: Path, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the `controller` CLI as a user would, with --root root."""
    proc = subprocess.run(
        [sys.executable, "-m", "services.controller", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"controller {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
