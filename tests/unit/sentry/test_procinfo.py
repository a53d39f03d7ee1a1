"""A container's processes read from /proc: a fake /proc tree with fixed clocks, then real ones."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from common.messages.proc import Process
from common.messages.spec import IdMapping
from services.sentry.procinfo import OVERFLOW_UID, Clock, container_uid, processes

HZ = 100
BTIME = 1_700_000_000
#: 1000 s after boot, so that a process started 500 s after boot has lived 500 s.
CLOCK = Clock(now=BTIME + 1000.0, boot_now_ns=1000 * 10**9, btime=BTIME, hz=HZ)


def local_hhmm(since_boot: float) -> str:
    """STIME of a process started since_boot seconds after boot, on CLOCK's day (local zone)."""
    return time.strftime("%H:%M", time.localtime(BTIME + since_boot))


def fake_task(
    proc: Path,
    host_pid: int,
    *,
    ppid: int,
    nspid: int,
    uid: int = 0,
    comm: str = "sh",
    tty_nr: int = 0,
    ticks: tuple[int, int] = (0, 0),
    start: int = 50_000,
    threads: dict[int, int] | None = None,
) -> None:
    """/proc/<host_pid>/{status,stat,task/*/status} as Linux writes them, for what ps reads."""
    base = proc / str(host_pid)
    base.mkdir(parents=True)

    def status(host_id: int, ns_id: int) -> str:
        return (
            f"Name:\t{comm}\nTgid:\t{host_pid}\nPid:\t{host_id}\nPPid:\t{ppid}\n"
            f"Uid:\t{uid + 1}\t{uid}\t{uid}\t{uid}\nNSpid:\t{host_id}\t{ns_id}\n"
        )

    (base / "status").write_text(status(host_pid, nspid))
    utime, stime = ticks
    (base / "stat").write_text(
        f"{host_pid} ({comm}) S {ppid} {host_pid} {host_pid} {tty_nr} -1 4194560 0 0 0 0 {utime} {stime} "
        f"0 0 20 0 {len(threads or {}) or 1} 0 {start} 4321792 200 18446744073709551615\n"
    )
    for tid, ns_tid in (threads or {host_pid: nspid}).items():
        (base / "task" / str(tid)).mkdir(parents=True)
        (base / "task" / str(tid) / "status").write_text(status(tid, ns_tid))


def test_the_container_view_of_a_process_tree(tmp_path: Path) -> None:
    # The init (host 1000) is a child of the fork server (host 900), which is not in the container.
    fake_task(tmp_path, 1000, ppid=900, nspid=1, comm="sh", tty_nr=os.makedev(136, 0), start=50_000)
    fake_task(
        tmp_path,
        1001,
        ppid=1000,
        nspid=7,
        uid=1000,
        comm="sleep",
        ticks=(2_000, 500),
        start=50_000,
        threads={1001: 7, 1002: 8},
    )
    fake_task(tmp_path, 1003, ppid=1001, nspid=3, comm="my (odd) cmd", start=99_990)
    listing = processes([1001, 1003, 1000], proc=str(tmp_path), clock=CLOCK)
    early, late = local_hhmm(500), local_hhmm(999.9)
    assert listing == [
        Process(uid=0, pid=1, ppid=0, threads=[1], c=0, tty="pts/0", stime=early, time="0s", cmd="sh"),
        Process(uid=0, pid=3, ppid=7, threads=[3], c=0, tty="?", stime=late, time="0s", cmd="my (odd) cmd"),
        # 25 s of CPU over 500 s of life.
        Process(uid=1000, pid=7, ppid=1, threads=[7, 8], c=5, tty="?", stime=early, time="25s", cmd="sleep"),
    ]


def test_uids_are_mapped_into_the_user_namespace(tmp_path: Path) -> None:
    fake_task(tmp_path, 10, ppid=1, nspid=1, uid=100_000)
    fake_task(tmp_path, 11, ppid=10, nspid=2, uid=100_042)
    fake_task(tmp_path, 12, ppid=10, nspid=3, uid=0)  # root of the host, unmapped inside
    mappings = [IdMapping(container_id=0, host_id=100_000, size=65536)]
    uids = [p.uid for p in processes([10, 11, 12], mappings, proc=str(tmp_path), clock=CLOCK)]
    assert uids == [0, 42, OVERFLOW_UID]


@pytest.mark.parametrize(
    ("host_uid", "mappings", "uid"),
    [
        (1000, [], 1000),  # no user namespace: the host's ids
        (0, [], 0),
        (1000, [IdMapping(container_id=0, host_id=1000, size=1)], 0),
        (1001, [IdMapping(container_id=0, host_id=1000, size=1)], OVERFLOW_UID),
        (
            200_005,
            [IdMapping(container_id=0, host_id=1000, size=1), IdMapping(container_id=1, host_id=200_000, size=10)],
            6,
        ),
        (999, [IdMapping(container_id=0, host_id=1000, size=10)], OVERFLOW_UID),
    ],
)
def test_container_uid(host_uid: int, mappings: list[IdMapping], uid: int) -> None:
    assert container_uid(host_uid, mappings) == uid


def test_a_process_that_vanished_is_left_out(tmp_path: Path) -> None:
    fake_task(tmp_path, 20, ppid=1, nspid=1)
    fake_task(tmp_path, 21, ppid=20, nspid=2)
    (tmp_path / "21" / "stat").unlink()  # exited between reading its status and its stat
    fake_task(tmp_path, 22, ppid=20, nspid=3)
    (tmp_path / "22" / "status").write_text("")  # torn down between open and read
    listing = processes([20, 21, 22, 23], proc=str(tmp_path), clock=CLOCK)
    assert [p.pid for p in listing] == [1]


def test_a_thread_that_vanished_is_left_out(tmp_path: Path) -> None:
    fake_task(tmp_path, 30, ppid=1, nspid=1, threads={30: 1, 31: 2, 32: 3})
    (tmp_path / "30" / "task" / "31" / "status").unlink()
    (listed,) = processes([30], proc=str(tmp_path), clock=CLOCK)
    assert listed.threads == [1, 3]


def test_start_time_and_cpu_come_from_boot_ticks(tmp_path: Path) -> None:
    # Started 10 s ago, 3 s of CPU: 30 %; STIME is HH:MM of btime + 990 s, in the local zone.
    fake_task(tmp_path, 40, ppid=1, nspid=1, ticks=(200, 100), start=99_000)
    clock = Clock(now=BTIME + 1000.0, boot_now_ns=1000 * 10**9, btime=BTIME, hz=HZ)
    (listed,) = processes([40], proc=str(tmp_path), clock=clock)
    assert (listed.c, listed.time, listed.stime) == (30, "3s", local_hhmm(990))


def test_our_own_process_and_its_threads() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        (me,) = processes([os.getpid()])
    finally:
        stop.set()
        worker.join()
    assert me.pid == os.getpid()
    assert {os.getpid(), worker.native_id} <= set(me.threads)
    assert me.uid == os.geteuid()
    assert me.cmd == Path("/proc/self/comm").read_text().strip()
    assert 0 <= me.c <= 99 and me.time.endswith("s")


def test_a_child_on_a_terminal() -> None:
    master, replica = os.openpty()
    try:
        # setsid -c makes the replica (its stdin) the controlling terminal of a new session.
        child = subprocess.Popen(["setsid", "-c", "sleep", "30"], stdin=replica, stdout=replica, stderr=replica)
        try:
            expected = os.ttyname(replica).removeprefix("/dev/")
            listing: list[Process] = []
            for _ in range(200):
                listing = processes([os.getpid(), child.pid])
                if len(listing) == 2 and listing[-1].cmd == "sleep" and listing[-1].tty != "?":
                    break
                time.sleep(0.02)  # until setsid has set the terminal and exec'd
            me, sleeper = sorted(listing, key=lambda p: p.pid != os.getpid())
            assert (sleeper.cmd, sleeper.tty, sleeper.ppid) == ("sleep", expected, me.pid)
            assert me.ppid == 0  # our parent is not in the list
        finally:
            child.kill()
            child.wait()
    finally:
        os.close(master)
        os.close(replica)
