"""`controller ps`: the process tree of a container as it sees itself, in each format, and the
refusals (an unknown container, a stopped one)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration

#: The init runs three children; the third, a shell, runs a fourth process of its own.
TREE = "sleep 1000 & sleep 1001 & sh -c 'sleep 1002; true' & wait"


def full(zv: Zerovisor, cid: str) -> list[dict[str, Any]]:
    records = json.loads(zv("ps", "--format", "full-json", cid).stdout)
    assert isinstance(records, list)
    return records


def wait_for(zv: Zerovisor, cid: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The full records once the container has count processes, all past their exec."""
    deadline = time.monotonic() + timeout
    records = full(zv, cid)
    while not (len(records) == count and all(r["cmd"] in ("sh", "sleep") for r in records)):
        assert time.monotonic() < deadline, f"never {count} processes: {records}"
        time.sleep(0.1)
        records = full(zv, cid)
    return records


def check_tree(records: list[dict[str, Any]], tty: str) -> None:
    """records are TREE's: pid 1 the init sh, parent of two sleeps and a sh that runs the third."""
    assert [r["pid"] for r in records] == sorted(r["pid"] for r in records)
    by_pid = {r["pid"]: r for r in records}
    init = by_pid[1]
    assert (init["cmd"], init["ppid"], init["uid"]) == ("sh", 0, 0)
    children = [r for r in records if r["ppid"] == 1]
    assert sorted(r["cmd"] for r in children) == ["sh", "sleep", "sleep"]
    (inner,) = [r for r in children if r["cmd"] == "sh"]
    (grandchild,) = [r for r in records if r["ppid"] == inner["pid"]]
    assert grandchild["cmd"] == "sleep"
    for r in records:
        assert r["tty"] == tty and r["threads"] == [r["pid"]] and r["uid"] == 0, r
        assert 0 <= r["c"] <= 99 and r["time"].endswith("s") and r["stime"], r


def test_ps_of_a_terminal_container(zv: Zerovisor, tmp_path: Path, console_listener: tuple[str, socket.socket]) -> None:
    path, listener = console_listener
    bundle = sh(tmp_path, TREE)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = True
    (bundle / "config.json").write_text(json.dumps(config))
    zv("run", "-d", "--console-socket", path, "-b", str(bundle), "term")
    conn, _ = listener.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 4)
    try:
        # The master stays open meanwhile: closing it would hang the terminal up on the tree.
        records = wait_for(zv, "term", 5)
        check_tree(records, "pts/0")
        table = zv("ps", "term").stdout.splitlines()
        assert table[0].split() == ["UID", "PID", "PPID", "C", "TTY", "STIME", "TIME", "CMD"]
        rows = [line.split() for line in table[1:]]
        assert [(int(r[1]), int(r[2]), r[4], r[7]) for r in rows] == [
            (r["pid"], r["ppid"], r["tty"], r["cmd"]) for r in records
        ]
        pids = ",".join(str(r["pid"]) for r in records)
        assert zv("ps", "--format", "json", "term").stdout == f"[{pids}]\n"  # compact, as runc prints it
    finally:
        for fd in fds:
            os.close(fd)
        zv("delete", "--force", "term")


def test_ps_of_a_container_without_terminal(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, TREE)), "plain")
    try:
        records = wait_for(zv, "plain", 5)
        check_tree(records, "?")
        pids = json.loads(zv("ps", "-f", "json", "plain").stdout)
        assert pids == sorted(pids) == [r["pid"] for r in records] and pids[0] == 1
    finally:
        zv("delete", "--force", "plain")


def test_ps_shows_uids_of_the_user_namespace(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "sleep 1000 & wait")
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    (bundle / "config.json").write_text(json.dumps(config))
    # The rootfs must be reachable by the namespace's ids (pytest's directories are 0700).
    for parent in [tmp_path, *tmp_path.parents]:
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    zv("run", "-d", "-b", str(bundle), "userns")
    try:
        records = wait_for(zv, "userns", 2)
        # On the host they run as 101000.
        shown = [(r["pid"], r["ppid"], r["uid"], r["cmd"]) for r in records]
        assert shown == [(1, 0, 1000, "sh"), (2, 1, 1000, "sleep")]
    finally:
        zv("delete", "--force", "userns")


def test_ps_of_a_created_and_of_a_paused_container(zv: Zerovisor, tmp_path: Path) -> None:
    zv("create", "-b", str(sh(tmp_path, "exec sleep 1000")), "early")
    try:
        (init,) = full(zv, "early")  # the init, waiting for start
        assert (init["pid"], init["ppid"]) == (1, 0)
        zv("start", "early")
        wait_for(zv, "early", 1)
        zv("pause", "early")
        (init,) = full(zv, "early")
        assert (init["pid"], init["ppid"], init["cmd"]) == (1, 0, "sleep")
    finally:
        zv("delete", "--force", "early")


def test_ps_of_an_unknown_container(zv: Zerovisor) -> None:
    out = zv("ps", "nosuch", check=False)
    assert out.returncode == 3, out
    assert "container nosuch does not exist" in out.stderr, out.stderr
    assert out.stdout == ""


def test_ps_of_a_stopped_container_is_refused(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "exit 3")), "done")
    assert zv("wait", "done", check=False).returncode == 3
    out = zv("ps", "done", check=False)
    assert out.returncode == 3, out
    assert "cannot list the processes of container 'done' in state stopped" in out.stderr, out.stderr
    zv("delete", "done")
