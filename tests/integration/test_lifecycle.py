"""The sentry's Lifecycle domain called directly, as gVisor's control server is: StartContainerArgs,
GetExitStatus, Reap, IsContainerRunning, Shutdown; and the start record that `events` prints."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from common.client import FdClient
from common.errors import RemoteError
from common.events import Subscriber
from common.messages.lifecycle import (
    ContainerArgs,
    ContainerStatus,
    ExitStatus,
    Limit,
    RunningResult,
    ShutdownArgs,
    StartContainerArgs,
)
from common.rundir import RunDir
from tests.conftest import nonblocking_pipe
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-value-never-logged"


def sentry(zv: Zerovisor) -> FdClient:
    return FdClient(RunDir.at(zv.root).socket_path("sentry"), timeout=60)


def call(zv: Zerovisor, method: str, args: Any, result_type: type[Any] | None = None) -> Any:
    """One call to the sentry; the files of args (if any) go as its file payload."""
    with sentry(zv) as client:
        result, out = client.call(method, args, result_type, getattr(args, "fds", None))
    assert out == []
    return result


def read_all(fd: int, timeout: float = 30.0) -> bytes:
    """Everything written to a non-blocking pipe until every writer closed it."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"pipe still open after {timeout} s; read {data!r}")


def test_start_container_args_reach_the_program(zv: Zerovisor, tmp_path: Path) -> None:
    zv("--debug", "create", "-b", str(sh(tmp_path, "exit 99")), "direct")
    script = 'echo "$A $S $HOME $PWD" >&5; grep "open files" /proc/self/limits >&5'
    r, w = nonblocking_pipe()
    try:
        args = StartContainerArgs(
            container_id="direct",
            argv=["sh", "-c", script],
            envv=["A=visible", "PATH=/bin"],
            secret_envv=[f"S={SECRET}"],
            wd="/tmp",
            limits={"RLIMIT_NOFILE": Limit(cur=77, max=88)},
            resolve_home=True,
            resolve_binary_path=True,
            donated_fds=[5],
            fds=[w],
        )
        assert SECRET not in repr(args)
        status = call(zv, "Lifecycle.StartContainer", args, ContainerStatus)
        os.close(w)
        w = -1
        assert status.status in ("running", "stopped") and status.started is not None
        assert status.started.request_received <= status.started.request_completed
        lines = read_all(r).decode().splitlines()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert lines[0] == f"visible {SECRET} /root /tmp"
    assert lines[1].split()[3:5] == ["77", "88"]
    assert zv("wait", "direct", check=False).returncode == 0
    # The debug log shows the request, never the secret.
    logs = "".join(p.read_text() for p in zv.root.glob("*.log"))
    assert "StartContainer" in logs
    assert SECRET not in logs


def test_binary_path_rules(zv: Zerovisor, tmp_path: Path) -> None:
    r, w = nonblocking_pipe()
    try:
        for n, (filename, wd) in enumerate([("/bin/echo", "/"), ("./echo", "/bin"), ("echo", "/")]):
            cid = f"path{n}"
            zv("create", "-b", str(sh(tmp_path, "true", name=cid)), cid)
            args = StartContainerArgs(
                container_id=cid,
                filename=filename,
                argv=["echo", cid],
                envv=["PATH=/usr/bin:/bin"],
                wd=wd,
                resolve_binary_path=True,
                donated_fds=[1],
                fds=[w],
            )
            call(zv, "Lifecycle.StartContainer", args, ContainerStatus)
            assert zv("wait", cid, check=False).returncode == 0
        os.close(w)
        w = -1
        assert read_all(r).decode().split() == ["path0", "path1", "path2"]
        zv("create", "-b", str(sh(tmp_path, "true", name="nopath")), "nopath")
        with pytest.raises(RemoteError, match="no-such-program: executable file not found"):
            call(
                zv,
                "Lifecycle.StartContainer",
                StartContainerArgs(container_id="nopath", argv=["no-such-program"], resolve_binary_path=True),
            )
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_bad_start_requests_are_refused_and_change_nothing(zv: Zerovisor, tmp_path: Path) -> None:
    zv("create", "-b", str(sh(tmp_path, "exit 7")), "bad")
    with pytest.raises(RemoteError, match="unknown limit 'RLIMIT_BOGUS'"):
        call(
            zv,
            "Lifecycle.StartContainer",
            StartContainerArgs(container_id="bad", argv=["true"], limits={"RLIMIT_BOGUS": Limit(cur=1, max=1)}),
        )
    with pytest.raises(RemoteError, match=r"same number of elements \(0 != 1\)"):
        call(zv, "Lifecycle.StartContainer", StartContainerArgs(container_id="bad", argv=["true"], donated_fds=[4]))
    with pytest.raises(RemoteError, match="does not exist"):
        call(zv, "Lifecycle.StartContainer", StartContainerArgs(container_id="ghost", argv=["true"]))
    assert zv.state("bad")["status"] == "created"
    zv("start", "bad")
    assert zv("wait", "bad", check=False).returncode == 7
    with pytest.raises(RemoteError, match="in state stopped"):
        call(zv, "Lifecycle.StartContainer", StartContainerArgs(container_id="bad", argv=["true"]))


def test_exit_status_reap_and_running(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "ex")
    assert call(zv, "Lifecycle.IsContainerRunning", ContainerArgs(cid="ex"), RunningResult).running
    assert not call(zv, "Lifecycle.IsContainerRunning", ContainerArgs(cid="ghost"), RunningResult).running
    with pytest.raises(RemoteError, match="hasn't exited yet"):
        call(zv, "Lifecycle.GetExitStatus", ContainerArgs(cid="ex"), ExitStatus)
    zv("kill", "ex", "KILL")
    assert zv("wait", "ex", check=False).returncode == 137
    assert call(zv, "Lifecycle.GetExitStatus", ContainerArgs(cid="ex"), ExitStatus).exit_code == 137
    assert not call(zv, "Lifecycle.IsContainerRunning", ContainerArgs(cid="ex"), RunningResult).running
    # Reap after the exit: the caller, subscribed first, still hears of it.
    sub = Subscriber(RunDir.at(zv.root).events_endpoint, ["container.ex."])
    try:
        time.sleep(0.3)  # a SUB socket misses what is published before it has connected
        call(zv, "Lifecycle.Reap", ContainerArgs(cid="ex"))
        event = sub.recv(timeout=10)
    finally:
        sub.close()
    assert event is not None and event[0] == "container.ex.exit" and event[1]["body"]["exit_code"] == 137
    with pytest.raises(RemoteError, match="does not exist"):
        call(zv, "Lifecycle.Reap", ContainerArgs(cid="ghost"))


def test_shutdown_stops_the_sentry(zv: Zerovisor) -> None:
    zv("up")
    run_dir = RunDir.at(zv.root)
    pid = run_dir.running_pid("sentry")
    assert pid is not None
    call(zv, "Lifecycle.Shutdown", ShutdownArgs())
    deadline = time.monotonic() + 30
    while run_dir.running_pid("sentry") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_dir.running_pid("sentry") is None
    assert run_dir.running_pid("controller") is not None  # the others go on


def test_events_start_with_the_start_record(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1")), "ev")
    lines = [json.loads(line) for line in zv("events", "ev", timeout=60).stdout.splitlines()]
    assert [line["type"] for line in lines] == ["start", "exit"]
    start = lines[0]
    assert start["id"] == "ev" and start["data"]["pid"] > 0
    assert start["data"]["request_received"] <= start["data"]["request_completed"] == start["time"]
    assert lines[1]["data"]["exit_code"] == 0 and lines[1]["data"]["status"] == "stopped"


def test_user_namespace_root_owns_the_stdio(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "stat -L -c '%u %g' /proc/self/fd/1; id -u")
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    (bundle / "config.json").write_text(json.dumps(config))
    # The rootfs must be reachable by the namespace's root (pytest's directories are 0700).
    for parent in [tmp_path, *tmp_path.parents]:
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    assert zv("run", "-b", str(bundle), "userns").stdout.split() == ["0", "0", "0"]
