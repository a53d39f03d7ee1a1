"""The processes of a container, read from the host's /proc.

gVisor's control.Processes reads its own task table; our tasks are host processes, so the same
facts come from /proc/PID/{status,stat,task}, translated into the container's view: pids into
its pid namespace (the last NSpid field), the effective uid into its user namespace (its uid
mappings). A process that exits while it is being read is left out, not an error: `ps` is a
snapshot, and a process gone before the reply would be gone from it anyway.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from common.messages.proc import Process
from common.messages.spec import IdMapping
from services.sentry.psformat import format_duration, format_start_time, percent_cpu, tty_name

log = logging.getLogger(__name__)

#: The uid an id without a mapping shows as inside a user namespace (the kernel's overflowuid).
OVERFLOW_UID = 65534

_NS_PER_S = 1_000_000_000

# Indexes into the fields of /proc/PID/stat that follow "(comm)", counted from the state
# (field 3 in proc(5)): tty_nr is field 7, utime 14, stime 15, starttime 22.
_STAT_TTY_NR = 7 - 3
_STAT_UTIME = 14 - 3
_STAT_STIME = 15 - 3
_STAT_STARTTIME = 22 - 3


class _Gone(Exception):
    """The process (or thread) exited while it was being read."""


@dataclass(frozen=True, slots=True)
class Clock:
    """One reading of the clocks a listing needs, taken once so that every row agrees."""

    #: Wall-clock time, seconds since the epoch.
    now: float
    #: Time since boot, nanoseconds (CLOCK_BOOTTIME, which /proc's starttime counts on).
    boot_now_ns: int
    #: Boot time, seconds since the epoch (/proc/stat's btime).
    btime: int
    #: Clock ticks per second of /proc's times (SC_CLK_TCK).
    hz: int


@dataclass(frozen=True, slots=True)
class _Task:
    """The raw facts of one host process, before translation into the container's view."""

    host_pid: int
    host_ppid: int
    pid: int
    euid: int
    threads: list[int]
    comm: str
    tty_nr: int
    cpu_ticks: int
    start_ticks: int


def read_clock(proc: str = "/proc") -> Clock:
    """The clocks now."""
    btime = 0
    with open(os.path.join(proc, "stat")) as f:
        for line in f:
            if line.startswith("btime "):
                btime = int(line.split()[1])
                break
    return Clock(
        now=time.time(),
        boot_now_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        btime=btime,
        hz=os.sysconf("SC_CLK_TCK"),
    )


def container_uid(host_uid: int, mappings: Sequence[IdMapping]) -> int:
    """host_uid as the container sees it: through its uid mappings, the same id without any."""
    if not mappings:
        return host_uid
    for m in mappings:
        if m.host_id <= host_uid < m.host_id + m.size:
            return m.container_id + (host_uid - m.host_id)
    return OVERFLOW_UID


def processes(
    host_pids: Iterable[int],
    uid_mappings: Sequence[IdMapping] = (),
    *,
    proc: str = "/proc",
    clock: Clock | None = None,
) -> list[Process]:
    """The processes among host_pids that still exist, in the container's view, sorted by pid.

    A parent outside host_pids (the init's: the platform's fork server) shows as ppid 0.
    """
    clock = clock or read_clock(proc)
    tasks: list[_Task] = []
    for host_pid in host_pids:
        try:
            tasks.append(_read_task(proc, host_pid))
        except _Gone:
            log.debug("process %d exited while being listed", host_pid)
    inside = {t.host_pid: t.pid for t in tasks}
    listing = [_process(t, inside, uid_mappings, clock) for t in tasks]
    return sorted(listing, key=lambda p: p.pid)


def _process(task: _Task, inside: dict[int, int], uid_mappings: Sequence[IdMapping], clock: Clock) -> Process:
    start_ns = task.start_ticks * _NS_PER_S // clock.hz
    cpu_ns = task.cpu_ticks * _NS_PER_S // clock.hz
    return Process(
        uid=container_uid(task.euid, uid_mappings),
        pid=task.pid,
        ppid=inside.get(task.host_ppid, 0),
        threads=task.threads,
        c=percent_cpu(cpu_ns, start_ns, clock.boot_now_ns),
        tty=tty_name(task.tty_nr),
        stime=format_start_time(clock.btime + start_ns / _NS_PER_S, clock.now),
        time=format_duration(cpu_ns),
        cmd=task.comm,
    )


def _read_task(proc: str, host_pid: int) -> _Task:
    base = os.path.join(proc, str(host_pid))
    status = _status(os.path.join(base, "status"))
    comm, fields = _stat(os.path.join(base, "stat"))
    threads: list[int] = []
    try:
        tids = os.listdir(os.path.join(base, "task"))
    except (FileNotFoundError, ProcessLookupError):
        raise _Gone from None
    for tid in tids:
        try:
            threads.append(_nspid(_status(os.path.join(base, "task", tid, "status")), int(tid)))
        except _Gone:
            continue  # a thread that exited; the process may live on
    return _Task(
        host_pid=host_pid,
        host_ppid=int(status["PPid"]),
        pid=_nspid(status, host_pid),
        # Uid: real, effective, saved, filesystem; ps shows the effective one, as gVisor does.
        euid=int(status["Uid"].split()[1]),
        threads=sorted(threads),
        comm=comm,
        tty_nr=int(fields[_STAT_TTY_NR]),
        cpu_ticks=int(fields[_STAT_UTIME]) + int(fields[_STAT_STIME]),
        start_ticks=int(fields[_STAT_STARTTIME]),
    )


def _nspid(status: dict[str, str], host_id: int) -> int:
    """The id in the innermost pid namespace: NSpid's last field (the host id before Linux 4.1)."""
    nspid = status.get("NSpid", "").split()
    return int(nspid[-1]) if nspid else host_id


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise _Gone from None
    if not text:
        raise _Gone  # a task torn down between open and read shows empty
    return text


def _status(path: str) -> dict[str, str]:
    """/proc/PID/status as "Key" -> value text."""
    out: dict[str, str] = {}
    for line in _read(path).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def _stat(path: str) -> tuple[str, list[str]]:
    """comm and the fields after it, of /proc/PID/stat.

    comm may hold spaces and parentheses itself, so it ends at the last ")".
    """
    text = _read(path)
    open_paren, close_paren = text.index("("), text.rindex(")")
    return text[open_paren + 1 : close_paren], text[close_paren + 1 :].split()
