"""ServiceManager: finds, starts, probes and stops the four services of one run directory.

Every command that needs the services calls ``ServiceManager.start()`` first, so one command
works on a fresh machine (the embedded default). Each service runs as its own detached
process (own session, stdio to its log file). Readiness is systemd's: the manager points
NOTIFY_SOCKET at a datagram socket of its own and waits for each service's READY=1, the same
message systemd waits for under ``Type=notify``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ServiceUnavailable
from common.rundir import FORKSERVER, SERVICES, RunDir

#: How long start() waits for every service to report ready.
START_TIMEOUT = 30.0
#: How long stop() waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 5.0
#: How long stop() waits for the fork server, which kills the containers, before SIGKILL.
FORKSERVER_STOP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One row of `controller status`."""

    #: controller, sentry, gofer or platform.
    service: str
    #: Host pid of the live instance, or None.
    pid: int | None
    #: "running", "not responding" (holds its lock, does not answer) or "stopped".
    state: str
    #: Seconds since it started, when it answered.
    uptime: float | None = None
    #: Its version, when it answered.
    version: str | None = None
    #: Requests it answered since start, when it answered.
    requests: int | None = None
    #: Requests it answered with an error, when it answered.
    errors: int | None = None
    #: What the service reported of itself (the sentry: trapped syscalls by container and family).
    details: dict[str, Any] = field(default_factory=dict)
    #: Times it was started again in this run directory since the first start, when it answered.
    restarts: int | None = None
    #: What it took over from the instance before it, by kind (containers=2 listeners=3 ...).
    recovered: dict[str, int] = field(default_factory=dict)


def service_argv(service: str, root: str) -> list[str]:
    """The command that runs service with this interpreter (a pyenv shim would re-resolve)."""
    if service == "controller":
        return [sys.executable, "-m", "services.controller", "--root", root, "serve"]
    return [sys.executable, "-m", f"services.{service}"]


class ServiceManager:
    """The services of one run directory."""

    def __init__(self, run_dir: RunDir, root: str, log_format: str = "text", debug: bool = False) -> None:
        self.run_dir = run_dir
        self.root = root
        self.log_format = log_format
        self.debug = debug
        self._log_start: dict[str, int] = {}

    def start(self, services: tuple[str, ...] = SERVICES, timeout: float = START_TIMEOUT) -> dict[str, int]:
        """Start every service in services that is not running; return all their pids.

        Returns once each has reported ready. A service that exits first is reported with the
        end of its log; one that loses a start race to another starter is taken as running.
        """
        self.run_dir.ensure()
        pids = {s: p for s in services if (p := self.run_dir.running_pid(s)) is not None}
        missing = [s for s in services if s not in pids]
        if not missing:
            return pids
        notify_path = self.run_dir.path / f"notify-{os.getpid()}.sock"
        notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as notify:
            notify.bind(str(notify_path))
            procs: dict[str, subprocess.Popen[bytes]] = {}
            try:
                for service in missing:
                    procs[service] = self._spawn(service, notify_path)
                pids.update(self._await_ready(notify, procs, time.monotonic() + timeout))
            except BaseException:
                # All or nothing: what this call started does not outlive its failure.
                for proc in procs.values():
                    _terminate(proc)
                raise
            finally:
                notify_path.unlink(missing_ok=True)
        return pids

    def _spawn(self, service: str, notify_path: Path) -> subprocess.Popen[bytes]:
        argv = [*service_argv(service, self.root), "--run-dir", str(self.run_dir.path), "--log-format", self.log_format]
        if self.debug:
            argv.append("--debug")
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        # The service logs to stderr, which is its log file, so that what it prints before its
        # logging is set up (or as it dies) lands there too.
        with open(self.run_dir.log_path(service), "ab") as out:
            self._log_start[service] = out.tell()
            return subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True
            )

    def _await_ready(
        self, notify: socket.socket, procs: dict[str, subprocess.Popen[bytes]], deadline: float
    ) -> dict[str, int]:
        waiting = {p.pid: s for s, p in procs.items()}
        ready: dict[str, int] = {}
        while waiting:
            for pid, service in list(waiting.items()):
                rc = procs[service].poll()
                if rc is None:
                    continue
                del waiting[pid]
                other = self._winner(service)
                if other is None:
                    raise ServiceUnavailable(
                        f"{service} exited with status {rc} before it was ready:\n{self._log_tail(service)}"
                    )
                ready[service] = other  # another starter won the race; its instance serves
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(sorted(waiting.values()))
                raise ServiceUnavailable(f"{names} did not report ready in time; see {self.run_dir.path}/*.log")
            notify.settimeout(min(left, 0.1))
            try:
                message = notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in message.splitlines() if "=" in line)
            pid_text = fields.get("MAINPID", "")
            if fields.get("READY") == "1" and pid_text.isdigit() and int(pid_text) in waiting:
                ready[waiting.pop(int(pid_text))] = int(pid_text)
        return ready

    def _winner(self, service: str) -> int | None:
        """The pid of the instance that holds service's lock, or None; a holder that has locked
        but not yet written its pid (it reads as 0) is given a moment to."""
        deadline = time.monotonic() + 1.0
        while (pid := self.run_dir.running_pid(service)) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return pid

    def _log_tail(self, service: str, lines: int = 15) -> str:
        """The last lines the service logged since this manager started it."""
        try:
            with open(self.run_dir.log_path(service), "rb") as f:
                f.seek(self._log_start.get(service, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(nothing logged)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int]:
        """Stop every running service (SIGTERM, then SIGKILL), then the platform's fork server,
        which outlives the platform and kills the containers as it goes; return the pids stopped.

        Returns once each process is gone, not only once it has let go of its lock.
        """
        stopped: dict[str, int] = {}
        for service in (*reversed(SERVICES), FORKSERVER):
            pid = self.run_dir.running_pid(service)
            if not pid:
                continue
            # The fork server removes every container's cgroup first: give it longer.
            grace = timeout if service != FORKSERVER else max(timeout, FORKSERVER_STOP_TIMEOUT)
            _signal(pid, signal.SIGTERM)
            if not _wait_gone(pid, time.monotonic() + grace):
                _signal(pid, signal.SIGKILL)
                if not _wait_gone(pid, time.monotonic() + timeout):
                    raise ServiceUnavailable(f"{service} (pid {pid}) survived SIGKILL")
            stopped[service] = pid
        return stopped

    def probe(self, timeout: float = 1.0) -> list[ServiceState]:
        """Ask each service for its status; a live lock holder that does not answer is "not responding"."""
        from common.messages.system import StatusResult
        from common.methods import SYSTEM_STATUS
        from common.zmqclient import RpcClient

        states = []
        for service in SERVICES:
            pid = self.run_dir.running_pid(service)
            if pid is None:
                states.append(ServiceState(service, None, "stopped"))
                continue
            try:
                with RpcClient(self.run_dir.endpoint(service), timeout=timeout) as client:
                    st = client.call(SYSTEM_STATUS, None, StatusResult)
            except ServiceUnavailable:
                states.append(ServiceState(service, pid, "not responding"))
                continue
            states.append(
                ServiceState(
                    service,
                    st.pid,
                    "running",
                    uptime=st.uptime,
                    version=st.version,
                    requests=st.requests,
                    errors=st.errors,
                    details=st.details,
                    restarts=st.restarts,
                    recovered=st.recovered,
                )
            )
        return states


def _signal(pid: int, signo: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signo)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop and reap a service this process started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_gone(pid: int, deadline: float) -> bool:
    """Wait until pid has exited (a zombie counts as gone: it runs nothing and holds nothing)."""
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in (b"Z", b"X"):
            return True
        time.sleep(0.02)
    return False
