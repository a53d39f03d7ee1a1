"""The fork server's Exec: a process joins a running container (its pid namespace, mounts,
cgroup), places its files at their guest fds, traps like the init, and is reaped with an exit
event of its own; its listener is kept until its filter has no task left.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import fdpass, wire
from common.errors import RemoteError
from common.messages.execs import ExecArgs
from common.messages.platform import ContainerRef, ListenersArgs, PidsResult
from tests.unit.platform import supervisor
from tests.unit.platform.test_forkserver import ForkServerProcess, forkserver, started_container

__all__ = ["forkserver"]


def test_exec_joins_the_container(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    init, thread = started_container(forkserver, tmp_path, "c")
    r, w = os.pipe2(os.O_CLOEXEC)
    out = os.open(tmp_path / "exec.out", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    script = "echo pid=$$; cat <&5; echo; ls /; cat /proc/1/cmdline | tr '\\0' ' '; exit 3"
    args = ExecArgs(
        container_id="c", argv=["sh", "-c", script], envv=["PATH=/bin"], guest_fds=[1, 2, 5], fds=[out, out, r]
    )
    try:
        os.write(w, b"from the pipe")
        os.close(w)
        result, fds = forkserver.call("ForkServer.Exec", args, args.fds)
    finally:
        os.close(out)
        os.close(r)
    assert len(fds) == 1
    try:
        # In the container's pid namespace, and in its cgroup.
        pids, _ = forkserver.call("ForkServer.Pids", ContainerRef(cid="c"))
        assert result["host_pid"] in PidsResult(**pids).pids
        notes, _ = supervisor.serve(fds[0])
    finally:
        fdpass.close_all(fds)
    assert notes[0] == {"nr": 59, "path": "/bin/sh"}
    lines = (tmp_path / "exec.out").read_text().splitlines()
    assert lines[0] == f"pid={result['pid']}" and result["pid"] > 1
    assert lines[1] == "from the pipe"
    assert "bin" in lines and "sleep 1000 " in lines
    exit_event = next(e for e in wait_events(forkserver) if e["pid"] == result["host_pid"])
    assert exit_event == {"cid": "c", "pid": result["host_pid"], "init": False, "exit_code": 3, "ns_pid": result["pid"]}
    # The exec's listener is dropped at its hangup; the init's stays.
    listed, kept = forkserver.call("ForkServer.Listeners", ListenersArgs())
    fdpass.close_all(kept)
    assert listed == {"cids": ["c"]}
    forkserver.call("ForkServer.Destroy", ContainerRef(cid="c"))
    thread.join(timeout=60)
    assert init > 0


def wait_events(fs: ForkServerProcess) -> list[dict[str, object]]:
    """The events so far, waiting for one more if there is none of a non-init yet."""
    while not any(not e["init"] for e in fs.events):
        frame, out = fdpass.recv_frame(fs.sock)
        fdpass.close_all(out)
        fs.events.append(wire.load_envelope(frame)["body"])
    return fs.events


def test_exec_refusals(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="has no running init"):
        forkserver.call("ForkServer.Exec", ExecArgs(container_id="nope", argv=["true"]))
    _, thread = started_container(forkserver, tmp_path, "r")
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(RemoteError, match="guest file descriptors must be 0 or greater"):
            forkserver.call("ForkServer.Exec", ExecArgs(container_id="r", argv=["true"], guest_fds=[-1]), [devnull])
        with pytest.raises(RemoteError, match="does not match"):
            forkserver.call("ForkServer.Exec", ExecArgs(container_id="r", argv=["true"], guest_fds=[0, 1]), [devnull])
        with pytest.raises(RemoteError, match="either be started from a file or a filename"):
            forkserver.call("ForkServer.Exec", ExecArgs(container_id="r", argv=["x"], filename="/x"), [devnull])
    finally:
        os.close(devnull)
    forkserver.call("ForkServer.Destroy", ContainerRef(cid="r"))
    thread.join(timeout=60)
    with pytest.raises(RemoteError, match="has no running init"):
        forkserver.call("ForkServer.Exec", ExecArgs(container_id="r", argv=["true"]))


def test_a_repeated_exec_finds_the_process_the_first_started(forkserver: ForkServerProcess, tmp_path: Path) -> None:
    """A platform that died before it passed Exec's reply on sends the request again (same
    token): the fork server starts nothing new, and hands out its listener again."""
    _, thread = started_container(forkserver, tmp_path, "t")
    out = os.open(tmp_path / "once.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    args = ExecArgs(
        container_id="t", argv=["sh", "-c", "echo ran"], envv=["PATH=/bin"], guest_fds=[1], fds=[out], token="tok-1"
    )
    try:
        first, lost = forkserver.call("ForkServer.Exec", args, args.fds)
        again, fds = forkserver.call("ForkServer.Exec", args, args.fds)
    finally:
        os.close(out)
    fdpass.close_all(lost)  # the reply the dead platform never passed on
    assert (again["pid"], again["host_pid"]) == (first["pid"], first["host_pid"])
    assert len(fds) == 1
    try:
        supervisor.serve(fds[0])
    finally:
        fdpass.close_all(fds)
    assert (tmp_path / "once.out").read_text() == "ran\n"
    other = ExecArgs(container_id="t", argv=["true"], envv=["PATH=/bin"], token="tok-2")
    started, more = forkserver.call("ForkServer.Exec", other, [])
    fdpass.close_all(more)
    assert started["host_pid"] != first["host_pid"]  # another token: another process
    forkserver.call("ForkServer.Destroy", ContainerRef(cid="t"))
    thread.join(timeout=60)
