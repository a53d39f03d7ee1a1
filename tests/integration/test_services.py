"""Each service runs alone, answers the System domain, and comes back after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.errors import ServiceUnavailable
from common.messages.system import PingResult, StatusResult
from common.methods import SYSTEM_PING, SYSTEM_STATUS
from common.rundir import SERVICES, RunDir
from common.zmqclient import RpcClient
from tests.conftest import REPO, ServiceProcess, service_argv

pytestmark = pytest.mark.integration

StartService = Callable[[str], ServiceProcess]


@pytest.mark.parametrize("service", SERVICES)
def test_service_alone_answers_ping_and_status(service: str, start_service: StartService, run_dir: Path) -> None:
    sp = start_service(service)
    with RpcClient(RunDir.at(run_dir).endpoint(service), timeout=5) as client:
        ping = client.call(SYSTEM_PING, None, PingResult)
        status = client.call(SYSTEM_STATUS, None, StatusResult)
    assert ping.service == service and ping.pid == sp.pid
    assert status.service == service and status.pid == sp.pid
    assert status.run_dir == str(run_dir)
    assert status.uptime > 0
    assert status.requests >= 3  # the start-up ping, this ping, this status
    assert status.errors == 0


@pytest.mark.parametrize("service", SERVICES)
def test_sigkilled_service_restarts_and_waiting_client_gets_reply(
    service: str, start_service: StartService, run_dir: Path, tmp_path: Path
) -> None:
    first = start_service(service)
    first.kill(signal.SIGKILL)
    # The dead instance left its socket files; the lock died with it.
    assert RunDir.at(run_dir).running_pid(service) is None

    result: dict[str, object] = {}

    def waiting_client() -> None:
        with RpcClient(RunDir.at(run_dir).endpoint(service), timeout=30) as client:
            try:
                result["reply"] = client.call(SYSTEM_PING, None, PingResult)
            except ServiceUnavailable as e:
                result["error"] = e

    thread = threading.Thread(target=waiting_client)
    thread.start()
    time.sleep(1.5)  # the client is now retrying against a dead service
    assert "reply" not in result
    second = ServiceProcess(service, run_dir, tmp_path / "second.log")
    try:
        second.start()
        thread.join(timeout=30)
        assert not thread.is_alive()
        reply = result.get("reply")
        assert isinstance(reply, PingResult), result
        assert reply.pid == second.pid != first.pid
    finally:
        second.stop()


def test_second_instance_on_same_run_dir_is_refused(start_service: StartService, run_dir: Path) -> None:
    first = start_service("sentry")
    proc = subprocess.run(service_argv("sentry", run_dir), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 1
    assert f"already running in {run_dir} (pid {first.pid})" in proc.stderr
    assert first.ping().pid == first.pid


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_and_removes_sockets(start_service: StartService, run_dir: Path, signo: int) -> None:
    sp = start_service("gofer")
    rd = RunDir.at(run_dir)
    assert rd.socket_path("gofer").exists() and rd.zmq_path("gofer").exists()
    assert sp.kill(signo) == 0
    assert not rd.socket_path("gofer").exists()
    assert not rd.zmq_path("gofer").exists()
    assert not rd.pid_path("gofer").exists()


def test_unanswered_call_times_out_instead_of_hanging(start_service: StartService, run_dir: Path) -> None:
    sp = start_service("platform")
    os.kill(sp.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with (
            RpcClient(RunDir.at(run_dir).endpoint("platform"), timeout=1.5) as client,
            pytest.raises(ServiceUnavailable, match="no reply"),
        ):
            client.call(SYSTEM_PING)
        assert time.monotonic() - started < 10
    finally:
        os.kill(sp.pid, signal.SIGCONT)
    assert sp.ping().pid == sp.pid


def test_service_module_and_console_script_agree() -> None:
    script = Path(sys.executable).parent / "sentry"
    if not script.exists():
        pytest.skip("console scripts are not installed beside this interpreter")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "--run-dir" in out.stdout and "--log-format" in out.stdout
