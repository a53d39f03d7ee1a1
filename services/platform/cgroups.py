"""Container cgroups: creation, limits, membership, freezing, statistics and removal.

This module owns every cgroup directory zerovisor makes for a container, at
``<root>/zerovisor/<name>``, on both layouts a host may have (cgroup_layout finds which):

- cgroup v2: one directory in the unified hierarchy, with the memory, cpu and pids
  controllers enabled down to it through ``cgroup.subtree_control``;
- cgroup v1, alone or hybrid: one directory per controller hierarchy (memory, cpu, cpuacct,
  pids, freezer).

Reading, writing and converting the values of single cgroup files is cgroup_files' job.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from common.errors import InvalidArgument, NotFound
from common.messages.spec import Resources
from services.platform.cgroup_files import cpu_weight, parse_keyed, parse_limit, read_file, swap_max, write_file
from services.platform.cgroup_layout import DEFAULT_ROOT, UNIFIED, V1_CONTROLLERS, Layout, detect_layout

log = logging.getLogger(__name__)

#: Directory under each hierarchy holding every zerovisor group; shared, so never removed.
PREFIX = "zerovisor"
#: The v2 controllers enabled for a container, where the parent offers them.
V2_CONTROLLERS = ("memory", "cpu", "pids")

# OCI: -1 means unlimited for a limit; shares and period have no such value.
_LOWEST = {"memory_limit": -1, "memory_swap": -1, "cpu_quota": -1, "pids_limit": -1, "cpu_shares": 0, "cpu_period": 0}


@dataclass(frozen=True)
class CgroupStats:
    """Resource usage of one container's cgroup."""

    #: CPU time used by every process of the group, in nanoseconds.
    cpu_usage_ns: int
    #: Memory charged to the group now, in bytes.
    memory_usage: int
    #: Memory limit in bytes; None when unlimited.
    memory_limit: int | None
    #: Number of tasks in the group now.
    pids_current: int
    #: Task limit; None when unlimited.
    pids_limit: int | None


def _relpath(name: str) -> str:
    """The group's path below PREFIX; an OCI cgroupsPath may be absolute or nested."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in name or not parts:
        raise InvalidArgument(f"cgroup name {name!r} is empty, has a NUL byte or a '..' component")
    return "/".join(parts)


def _wait(done: Callable[[], bool], timeout: float) -> bool:
    """Poll done() with a growing sleep (0.5 ms to 10 ms) until it holds or timeout passes."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    return True


class Cgroup:
    """One container's cgroup: a directory in each hierarchy (v1) or one directory (v2)."""

    def __init__(self, rel: str, layout: Layout, controllers: list[str]) -> None:
        self._rel = rel
        self._unified = layout.unified
        self._dirs = {c: os.path.join(layout.mounts[c], PREFIX, rel) for c in controllers}
        # Co-mounted v1 controllers (cpu,cpuacct) share a directory: visit each one once.
        self._mounts = sorted({layout.mounts[c] for c in controllers})
        self._tops = sorted(set(self._dirs.values()))

    def __repr__(self) -> str:
        return f"Cgroup({self._rel!r}, {'v2' if self._unified else 'v1'})"

    @property
    def name(self) -> str:
        """The group's path below zerovisor/, normalized."""
        return self._rel

    @property
    def unified(self) -> bool:
        """True on a cgroup v2 layout."""
        return self._unified

    @classmethod
    def create(
        cls, name: str, resources: Resources, root: str = DEFAULT_ROOT, *, layout: Layout | None = None
    ) -> Cgroup:
        """Create zerovisor/<name> in every hierarchy a container needs and apply resources.

        layout defaults to what /proc/self/mountinfo says about root. An existing directory is
        reused. On failure, what was created is removed again. InvalidArgument for a bad name
        or impossible resources; OSError naming the file for a limit the kernel refuses.
        """
        rel = _relpath(name)
        for field, lowest in _LOWEST.items():
            if (value := getattr(resources, field)) is not None and value < lowest:
                raise InvalidArgument(f"{field} {value} is out of range")
        swap_max(resources.memory_limit, resources.memory_swap)  # raises on an impossible pair
        layout = layout or detect_layout(root)
        controllers = [UNIFIED] if layout.unified else [c for c in V1_CONTROLLERS if c in layout.mounts]
        if not controllers:
            raise OSError(errno.ENOENT, "no cgroup hierarchy is mounted", root)
        if not layout.unified and (missing := sorted(set(V1_CONTROLLERS) - set(controllers))):
            log.debug("cgroup %s: no v1 hierarchy for %s", rel, missing)
        cg = cls(rel, layout, controllers)
        try:
            for mount in cg._mounts:
                cg._make_dirs(mount)
            cg._apply(resources)
        except BaseException:
            # Never kill the processes of a group that existed before and was being reused.
            with suppress(OSError):
                if not cg.pids():
                    cg.destroy()
            raise
        log.debug("created cgroup %s at %s", rel, cg._dirs)
        return cg

    @classmethod
    def open(cls, name: str, root: str = DEFAULT_ROOT) -> Cgroup:
        """The existing group zerovisor/<name>; NotFound if no hierarchy has it."""
        rel = _relpath(name)
        layout = detect_layout(root)
        present = [c for c, m in layout.mounts.items() if os.path.isdir(os.path.join(m, PREFIX, rel))]
        if not present:
            raise NotFound(f"cgroup {rel!r} does not exist under {root}")
        return cls(rel, layout, present)

    def paths(self) -> dict[str, str]:
        """Controller -> directory on v1 (co-mounted controllers share one); {UNIFIED: dir} on v2."""
        return dict(self._dirs)

    def _file(self, controller: str, filename: str) -> str:
        key = UNIFIED if self._unified else controller
        if key not in self._dirs:
            raise OSError(errno.ENOENT, f"cgroup {self._rel}: no {controller} hierarchy is mounted")
        return os.path.join(self._dirs[key], filename)

    def _read_opt(self, controller: str, filename: str) -> str | None:
        """A statistics file, or None where the controller or the file is absent."""
        try:
            return read_file(self._file(controller, filename))
        except FileNotFoundError:  # also what _file() raises for a missing hierarchy
            return None

    def _set(self, controller: str, filename: str, value: str) -> None:
        write_file(self._file(controller, filename), value)

    def _make_dirs(self, mount: str, attempts: int = 5) -> None:
        for attempt in range(attempts):
            try:
                parent = mount
                for part in [PREFIX, *self._rel.split("/")]:
                    if self._unified:
                        self._enable_controllers(parent)
                    with suppress(FileExistsError):
                        os.mkdir(os.path.join(parent, part))
                    parent = os.path.join(parent, part)
                return
            except FileNotFoundError:
                # Another group's destroy() removed a shared intermediate directory between
                # our mkdirs: start over from the top.
                if attempt == attempts - 1:
                    raise

    def _enable_controllers(self, parent: str) -> None:
        offered = read_file(os.path.join(parent, "cgroup.controllers")).split()
        enabled = read_file(os.path.join(parent, "cgroup.subtree_control")).split()
        if want := [c for c in V2_CONTROLLERS if c in offered and c not in enabled]:
            write_file(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in want))

    def _apply(self, r: Resources) -> None:
        # None and 0 both mean "not set", as in runc.
        if self._unified:
            if r.memory_limit:
                self._set("memory", "memory.max", "max" if r.memory_limit == -1 else str(r.memory_limit))
            swap = swap_max(r.memory_limit, r.memory_swap)
            if swap is not None and self._has_swap("memory.swap.max"):
                self._set("memory", "memory.swap.max", swap)
            if r.cpu_shares:
                self._set("cpu", "cpu.weight", str(cpu_weight(r.cpu_shares)))
            if r.cpu_quota or r.cpu_period:
                # "max" alone keeps the current period, as runc writes it.
                quota = str(r.cpu_quota) if r.cpu_quota and r.cpu_quota > 0 else "max"
                self._set("cpu", "cpu.max", f"{quota} {r.cpu_period}" if r.cpu_period else quota)
        else:
            writes = [("memory.limit_in_bytes", str(r.memory_limit))] if r.memory_limit else []
            if r.memory_swap and self._has_swap("memory.memsw.limit_in_bytes"):
                # The kernel keeps memsw >= memory at every step, so the order depends on
                # whether memsw grows or shrinks (runc does the same).
                current = int(read_file(self._file("memory", "memory.memsw.limit_in_bytes")))
                grows = r.memory_swap == -1 or current < r.memory_swap
                writes.insert(0 if grows else 1, ("memory.memsw.limit_in_bytes", str(r.memory_swap)))
            for filename, value in writes:
                self._set("memory", filename, value)
            if r.cpu_shares:
                self._set("cpu", "cpu.shares", str(r.cpu_shares))
            if r.cpu_period:
                self._set("cpu", "cpu.cfs_period_us", str(r.cpu_period))
            if r.cpu_quota:
                self._set("cpu", "cpu.cfs_quota_us", str(r.cpu_quota))
        if r.pids_limit:
            self._set("pids", "pids.max", "max" if r.pids_limit < 0 else str(r.pids_limit))

    def _has_swap(self, filename: str) -> bool:
        # Without swap accounting (no swap file, swapaccount=0) there is no swap to limit: runc
        # ignores the setting then, and so do we.
        if os.path.exists(self._file("memory", filename)):
            return True
        log.debug("cgroup %s: no %s, memory_swap ignored", self._rel, filename)
        return False

    def add(self, pid: int) -> None:
        """Move process pid (all its threads) into the group, in every hierarchy."""
        for top in self._tops:
            write_file(os.path.join(top, "cgroup.procs"), str(pid))

    @contextmanager
    def membership_files(self) -> Iterator[list[int]]:
        """For the body, open fds (closed after it) of the files through which a new task
        joins the group by itself (cgroup_files.join_self): `tasks` in each v1 hierarchy,
        cgroup.procs on v2. OSError naming the file if one cannot be opened.

        Why the task moves itself: a write to cgroup.procs takes the kernel's global
        cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period; here that
        is 8-16 ms per migration, the largest part of an exec. A single-threaded task that
        writes 0 to a v1 `tasks` file moves only itself and is spared that lock (0.4 ms for
        five hierarchies, Linux 6.18). v2 has no such file for a domain group: its
        cgroup.procs costs what the parent's write did. The kernel checks the credentials
        of the file's opener, so a task already in its own user namespace can still join.
        """
        name = "cgroup.procs" if self._unified else "tasks"
        fds: list[int] = []
        try:
            for top in self._tops:
                path = os.path.join(top, name)
                try:
                    fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
                except OSError as e:
                    raise OSError(e.errno, f"opening to join: {e.strerror}", path) from e
            yield fds
        finally:
            for fd in fds:
                os.close(fd)

    def pids(self) -> list[int]:
        """Every process in the group and its sub-groups, sorted; [] once the group is gone."""
        found: set[int] = set()
        for top in self._tops:
            for dirpath, _, _ in os.walk(top):
                with suppress(FileNotFoundError):
                    found.update(int(p) for p in read_file(os.path.join(dirpath, "cgroup.procs")).split())
        return sorted(found)

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process of the group; return once the kernel reports the group frozen.

        TimeoutError, after thawing again, if it does not freeze within timeout.
        """
        if not self._set_frozen(True, timeout):
            self.thaw()
            raise TimeoutError(errno.ETIMEDOUT, f"cgroup {self._rel} did not freeze in {timeout} s")

    def thaw(self, timeout: float = 5.0) -> None:
        """Let the group's processes run again."""
        if not self._set_frozen(False, timeout):
            raise TimeoutError(errno.ETIMEDOUT, f"cgroup {self._rel} did not thaw in {timeout} s")

    def _set_frozen(self, frozen: bool, timeout: float) -> bool:
        if self._unified:
            path, value = self._file("freezer", "cgroup.freeze"), "1" if frozen else "0"
        else:
            path, value = self._file("freezer", "freezer.state"), "FROZEN" if frozen else "THAWED"

        def settled() -> bool:
            if self.frozen() == frozen:
                return True
            if not self._unified:
                # v1 can sit in FREEZING while tasks fork or sleep uninterruptibly; writing
                # FROZEN again retries them (runc does the same).
                write_file(path, value)
            return False

        write_file(path, value)
        return _wait(settled, timeout)

    def frozen(self) -> bool:
        """True while the kernel reports the whole group frozen; False once the group is gone
        (removed behind our back, it holds no process: see pids)."""
        try:
            if self._unified:
                return parse_keyed(read_file(self._file("freezer", "cgroup.events"))).get("frozen") == 1
            return read_file(self._file("freezer", "freezer.state")) == "FROZEN"
        except FileNotFoundError:
            return False

    def stats(self) -> CgroupStats:
        """Current usage and limits; a controller that is not there reads as 0 / unlimited."""
        if self._unified:
            cpu = parse_keyed(self._read_opt("cpu", "cpu.stat")).get("usage_usec", 0) * 1000
            usage, limit = self._read_opt("memory", "memory.current"), self._read_opt("memory", "memory.max")
        else:
            cpu = int(self._read_opt("cpuacct", "cpuacct.usage") or 0)
            usage = self._read_opt("memory", "memory.usage_in_bytes")
            limit = self._read_opt("memory", "memory.limit_in_bytes")
        return CgroupStats(
            cpu_usage_ns=cpu,
            memory_usage=int(usage or 0),
            memory_limit=parse_limit(limit),
            pids_current=int(self._read_opt("pids", "pids.current") or 0),
            pids_limit=parse_limit(self._read_opt("pids", "pids.max")),
        )

    def oom_killed(self) -> int:
        """How many processes the OOM killer has killed in this group."""
        text = self._read_opt("memory", "memory.events" if self._unified else "memory.oom_control")
        return parse_keyed(text).get("oom_kill", 0)

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill what still runs in the group and remove its directories, deepest first.

        Idempotent: directories already gone are fine. The shared parents of a nested name are
        removed only once no other group uses them; zerovisor/ itself always stays.
        """
        deadline = time.monotonic() + timeout
        self._kill_all(deadline)
        for top in self._tops:
            # Sub-groups the container made itself must go before its own directory.
            for dirpath, _, _ in os.walk(top, topdown=False):
                self._rmdir(dirpath, deadline)
        parts = self._rel.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            for mount in self._mounts:
                try:
                    os.rmdir(os.path.join(mount, PREFIX, *parts[:depth]))
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                        raise
        log.debug("destroyed cgroup %s", self._rel)

    def _kill_all(self, deadline: float) -> None:
        kill = os.path.join(self._dirs[UNIFIED], "cgroup.kill") if self._unified else ""
        while pids := self.pids():
            if kill and os.path.exists(kill):
                # cgroup.kill (5.14+) also catches tasks forked while we signal.
                write_file(kill, "1")
            else:
                for pid in pids:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if "freezer" in self._dirs:
                # A task frozen by the v1 freezer does not act on SIGKILL until thawed.
                with suppress(FileNotFoundError):
                    self._set("freezer", "freezer.state", "THAWED")
            if time.monotonic() >= deadline:
                raise TimeoutError(errno.EBUSY, f"cgroup {self._rel}: processes {pids} survived SIGKILL")
            time.sleep(0.005)

    def _rmdir(self, path: str, deadline: float) -> None:
        # The last task can still be leaving the group just after cgroup.procs reads empty.
        while True:
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)
