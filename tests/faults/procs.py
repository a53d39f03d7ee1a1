"""What the fault checks read of /proc and the cgroup hierarchies: processes, their state and
lineage, the tasks and cgroup directories of one run directory's containers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: How long a SIGKILLed service may take to disappear.
GONE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """The fields of /proc/PID/stat the checks need."""

    pid: int
    ppid: int
    #: One letter: R, S, D, Z, T, ...
    state: str
    #: Start time in clock ticks since boot: with pid, an identity that survives pid reuse.
    start: int


def proc_info(pid: int) -> ProcInfo | None:
    """pid's stat fields, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data.rpartition(b")")[2].split()  # comm may hold spaces and parentheses
    return ProcInfo(pid, int(fields[1]), fields[0].decode(), int(fields[19]))


def all_pids() -> list[int]:
    """Every pid in /proc right now."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(pid: int) -> set[int]:
    """pid's children, their children, and so on (threads' children included)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{tid}/children").read_text()
            except FileNotFoundError:
                continue
            for child in map(int, text.split()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def cmdline(pid: int) -> str:
    """pid's command line, spaces between arguments ("" when gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def cgroup_mounts() -> list[Path]:
    """Mount points of the host's cgroup hierarchies (v1 controllers and v2)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] in ("cgroup", "cgroup2") and fields[3] == "/":
            points.append(Path(fields[4]))
    return points


def wait_gone(pid: int, timeout: float = GONE_TIMEOUT) -> bool:
    """Wait until pid has exited (a zombie counts: it runs nothing and holds no lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = proc_info(pid)
        if info is None or info.state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


def tasks_in(instance: str) -> list[int]:
    """Pids of processes in a container cgroup of the run directory whose group is instance
    (a container's cgroup is zerovisor/<instance>/<cid>)."""
    marker = f"/zerovisor/{instance}/"
    found = []
    for pid in all_pids():
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if marker in text:
            found.append(pid)
    return found


def container_cgroups(instance: str) -> list[Path]:
    """Container cgroup directories (zerovisor/<instance>/*), in every hierarchy."""
    return sorted(
        child
        for point in cgroup_mounts()
        if (group := point / "zerovisor" / instance).is_dir()
        for child in group.iterdir()
        if child.is_dir()
    )


def describe(pids: Iterable[int]) -> str:
    """pids with their command lines, for a failure message."""
    return "; ".join(f"{p} {cmdline(p)[:100]!r}" for p in pids) or "none"
