"""The fork server with trapping containers: Release hands out the listener, Listeners hands
out dups again until Destroy, and a late exec failure is logged.

The fork server runs as its own process (it clones; this pytest worker has threads) on a
socketpair, spoken to with the wire envelope as the platform does; this test process answers
the notifications with CONTINUE (supervisor.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common import fdpass, wire
from common.errors import ErrCode, RemoteError, error_from_wire, has_code
from common.messages.lifecycle import StartContainerArgs
from common.messages.platform import ContainerRef, LaunchArgs, ListenersArgs, TasksArgs
from common.messages.spec import ContainerSpec
from common.rundir import RunDir
from tests.rootfs import make_rootfs
from tests.unit.platform import supervisor
from tests.unit.platform.stub_runner import base_spec

REPO = Path(__file__).resolve().parents[3]


class ForkServerProcess:
    """A fork server child and our end of its connection."""

    def __init__(self, run_dir: Path, log_path: Path) -> None:
        argv = [sys.executable, "-m", "services.platform.forkserver_main", "--run-dir", str(run_dir)]
        with open(log_path, "a") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, stderr=log)
        self.run_dir = run_dir
        self.sock = self.connect()
        self.events: list[dict[str, Any]] = []
        self._ids = 0

    def connect(self, timeout: float = 30.0) -> socket.socket:
        """A connection to the fork server, as a platform makes it (waiting for it to listen)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(str(RunDir.at(self.run_dir).forkserver_socket))
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                assert self.proc.poll() is None, "the fork server exited"
                assert time.monotonic() < deadline, "the fork server did not listen"
                time.sleep(0.02)
                continue
            sock.settimeout(60)
            return sock

    def reconnect(self) -> None:
        """Hang up and connect again, as a restarted platform does."""
        self.sock.close()
        self.sock = self.connect()

    def call(self, method: str, args: Any, fds: list[int] | None = None) -> tuple[dict[str, Any], list[int]]:
        """One request; the raw result and the reply's fds (ours). Exit events are collected."""
        self._ids += 1
        fdpass.send_frame(self.sock, wire.encode_request(self._ids, method, wire.to_wire(args)), fds)
        while True:
            frame, out = fdpass.recv_frame(self.sock)
            env = wire.load_envelope(frame)
            if "event" in env:
                self.events.append(env["body"])
                continue
            reply = wire.reply_from_envelope(env)
            assert reply.id == self._ids
            if not reply.ok:
                fdpass.close_all(out)
                raise error_from_wire(reply.error)
            return reply.result or {}, out

    def wait_exit(self, cid: str) -> dict[str, Any]:
        """The init exit event of cid, waiting for it if it has not come yet."""
        while True:
            for event in self.events:
                if event["cid"] == cid and event["init"]:
                    return event
            frame, out = fdpass.recv_frame(self.sock)
            fdpass.close_all(out)
            env = wire.load_envelope(frame)
            assert "event" in env, env
            self.events.append(env["body"])

    def close(self) -> None:
        """Hang up and SIGTERM it, as `controller down` does: it kills what is left and exits."""
        self.sock.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def forkserver(tmp_path: Path) -> Iterator[ForkServerProcess]:
    """A fork server under tmp_path/run, logging to tmp_path/forkserver.log."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fs = ForkServerProcess(run_dir, tmp_path / "forkserver.log")
    try:
        yield fs
    finally:
        fs.close()


def launch_and_release(fs: ForkServerProcess, tmp_path: Path, cid: str, argv: list[str]) -> tuple[int, int]:
    """Launch a trapping container running argv and release it; its pid and the listener (ours)."""
    rootfs = make_rootfs(tmp_path / cid)
    spec = wire.from_wire(ContainerSpec, base_spec(rootfs, argv))
    out = os.open(tmp_path / f"{cid}.out", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        launched, console = fs.call("ForkServer.Launch", LaunchArgs(cid=cid, spec=spec), [devnull, out, out])
    finally:
        os.close(out)
        os.close(devnull)
    assert console == []
    start = StartContainerArgs(
        container_id=cid, argv=argv, envv=["PATH=/bin"], resolve_binary_path=True, resolve_home=True
    )
    released, fds = fs.call("ForkServer.Release", start)
    assert released == {"pid": launched["pid"]}
    assert len(fds) == 1
    return int(launched["pid"]), fds[0]


def started_container(fs: ForkServerProcess, tmp_path: Path, cid: str) -> tuple[int, threading.Thread]:
    """A running container whose init sleeps; its listener is served in a thread until Destroy."""
    pid, listener = launch_and_release(fs, tmp_path, cid, ["sleep", "1000"])

    def serve() -> None:
        try:
            supervisor.serve(listener, timeout=120)
        finally:
            os.close(listener)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return pid, thread


def listed(fs: ForkServerProcess, cids: list[str] | None = None) -> list[str]:
    result, fds = fs.call("ForkServer.Listeners", ListenersArgs(cids=cids or []))
    fdpass.close_all(fds)
    assert len(fds) == len(result["cids"])
    return list(result["cids"])


def test_release_returns_the_listener_and_keeps_a_copy(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    pid, listener = launch_and_release(forkserver, tmp_path, "c1", ["sh", "-c", "mkdir /dev/shm/d && echo made"])
    try:
        notes, _ = supervisor.serve(listener)  # the fork server reaps the init: POLLHUP follows
    finally:
        os.close(listener)
    assert notes[0] == {"nr": 59, "path": "/bin/sh"}  # execve
    assert {"nr": 83, "path": "/dev/shm/d"} in notes  # mkdir
    assert (tmp_path / "c1.out").read_text() == "made\n"
    assert forkserver.wait_exit("c1") == {"cid": "c1", "pid": pid, "init": True, "exit_code": 0, "ns_pid": 0}
    # No task is left under the filter: the fork server drops its copy at the hangup.
    deadline = time.monotonic() + 30
    while listed(forkserver):
        assert time.monotonic() < deadline, "the listener of a finished container is still kept"
        time.sleep(0.05)


def test_a_repeated_release_answers_as_the_first_and_runs_nothing_again(
    forkserver: ForkServerProcess, tmp_path: Path
) -> None:
    """A platform killed before it passed Release's answer on: the sentry asks again."""
    argv = ["sh", "-c", "echo ran >> /dev/shm/runs; cat /dev/shm/runs"]
    pid, lost = launch_and_release(forkserver, tmp_path, "again", argv)
    os.close(lost)  # the answer that died with the platform; the fork server keeps its copy
    start = StartContainerArgs(container_id="again", argv=argv, envv=["PATH=/bin"], resolve_binary_path=True)
    released, fds = forkserver.call("ForkServer.Release", start)
    assert released == {"pid": pid}
    assert len(fds) == 1
    try:
        supervisor.serve(fds[0])
    finally:
        os.close(fds[0])
    assert forkserver.wait_exit("again")["exit_code"] == 0
    assert (tmp_path / "again.out").read_text() == "ran\n"  # the program ran once


def test_a_repeated_launch_with_its_token_answers_as_the_first(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    """A platform killed before it passed Launch's answer on: the sentry asks again, with the
    create's token; another token is still a conflict."""
    spec = wire.from_wire(ContainerSpec, base_spec(make_rootfs(tmp_path / "twice"), ["true"]))
    first, _ = forkserver.call("ForkServer.Launch", LaunchArgs(cid="twice", spec=spec, token="t1"))
    try:
        again, fds = forkserver.call("ForkServer.Launch", LaunchArgs(cid="twice", spec=spec, token="t1"))
        assert (again, fds) == (first, [])
        with pytest.raises(RemoteError) as other:
            forkserver.call("ForkServer.Launch", LaunchArgs(cid="twice", spec=spec, token="t2"))
        assert has_code(other.value, ErrCode.CONFLICT)
    finally:
        forkserver.call("ForkServer.Destroy", ContainerRef(cid="twice"))


def test_spec_answers_for_a_held_container_only(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    """Tasks leaves specs out (each may be megabytes); Spec gives one, while the container is held."""
    spec = wire.from_wire(ContainerSpec, base_spec(make_rootfs(tmp_path / "held"), ["true"]))
    forkserver.call("ForkServer.Launch", LaunchArgs(cid="held", spec=spec))
    try:
        held, _ = forkserver.call("ForkServer.Tasks", TasksArgs())
        (listed_container,) = held["containers"]
        assert listed_container["cid"] == "held" and "spec" not in listed_container
        got, _ = forkserver.call("ForkServer.Spec", ContainerRef(cid="held"))
        assert wire.from_wire(ContainerSpec, got["spec"]) == spec
    finally:
        forkserver.call("ForkServer.Destroy", ContainerRef(cid="held"))
    with pytest.raises(RemoteError) as gone:
        forkserver.call("ForkServer.Spec", ContainerRef(cid="held"))
    assert has_code(gone.value, ErrCode.NOT_FOUND)


def test_listeners_are_kept_while_the_container_runs(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    threads = [started_container(forkserver, tmp_path, cid)[1] for cid in ("a", "b")]
    assert listed(forkserver, ["b", "nope"]) == ["b"]
    assert sorted(listed(forkserver)) == ["a", "b"]
    for cid in ("a", "b"):
        forkserver.call("ForkServer.Destroy", ContainerRef(cid=cid))
    for thread in threads:
        thread.join(timeout=60)
    assert listed(forkserver) == []


def test_late_exec_failure_is_logged(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    rootfs = tmp_path / "late"
    make_rootfs(rootfs)
    bad = rootfs / "bin" / "bad"
    bad.write_text("neither ELF nor #!\n")
    bad.chmod(0o755)
    _, listener = launch_and_release(forkserver, tmp_path, "late", ["/bin/bad"])
    try:
        supervisor.serve(listener)
    finally:
        os.close(listener)
    assert forkserver.wait_exit("late")["exit_code"] == 127
    assert (tmp_path / "late.out").read_text() == "exec failed: exec /bin/bad: [Errno 8] Exec format error\n"
    forkserver.close()
    log = (tmp_path / "forkserver.log").read_text()
    assert "WARNING services.platform.stub: container late init" in log, log
    assert "exec /bin/bad: [Errno 8] Exec format error" in log


def test_the_fork_server_outlives_its_platform(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    """A platform that hangs up (dies) leaves every task running; an exit meanwhile is kept, and
    the next platform finds the container, the exit and a copy of the listener."""
    pid, listener = launch_and_release(forkserver, tmp_path, "c", ["sleep", "1000"])
    served = threading.Thread(target=supervisor.serve, args=(listener,), kwargs={"timeout": 60}, daemon=True)
    served.start()
    forkserver.sock.close()  # the platform dies
    time.sleep(0.3)
    assert forkserver.proc.poll() is None
    os.kill(pid, 9)  # the init dies while no platform listens
    forkserver.sock = forkserver.connect()
    deadline = time.monotonic() + 30
    while True:
        held, _ = forkserver.call("ForkServer.Tasks", TasksArgs())
        exits = [e for e in held["exits"] if e["pid"] == pid]
        if exits or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert exits == [{"cid": "c", "pid": pid, "init": True, "exit_code": 137, "ns_pid": 0}]
    assert [(c["cid"], c["init_pid"], c["released"]) for c in held["containers"]] == [("c", pid, True)]
    served.join(timeout=30)
    os.close(listener)
    forkserver.call("ForkServer.Destroy", ContainerRef(cid="c"))
    held, _ = forkserver.call("ForkServer.Tasks", TasksArgs())
    assert held == {"containers": [], "exits": []}  # destroyed: nobody will ask again


def test_an_idle_fork_server_exits_when_its_platform_hangs_up(forkserver: ForkServerProcess) -> None:
    forkserver.sock.close()
    assert forkserver.proc.wait(timeout=10) == 0
    assert RunDir.at(forkserver.run_dir).running_pid("forkserver") is None
