"""services.platform.cgroups against this host's real cgroup hierarchies (root only).

Every group gets a unique name and is destroyed by a finalizer, so the tests run in parallel.
On a hybrid host the v2 code paths that need no controller (membership, freezing, cpu.stat,
removal) also run against the unified hierarchy mounted beside the v1 ones.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from common.errors import InvalidArgument, NotFound
from common.messages.spec import Resources
from services.platform.cgroup_files import cpu_weight, swap_max
from services.platform.cgroup_layout import DEFAULT_ROOT, UNIFIED, Layout, detect_layout, parse_mountinfo
from services.platform.cgroups import PREFIX, Cgroup, CgroupStats

MiB = 1 << 20

V2_ONLY_MOUNTINFO = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
"""

HYBRID_MOUNTINFO = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
34 25 0:31 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,relatime shared:17 - cgroup cgroup rw,net_cls,net_prio
35 25 0:32 / /mnt/other\\040cg rw,relatime - cgroup cgroup rw,memory
"""


def _hierarchy_roots() -> list[str]:
    """DEFAULT_ROOT, plus a hybrid host's controller-less v2 mount, where v2 paths can run too."""
    roots = [DEFAULT_ROOT]
    hybrid_v2 = os.path.join(DEFAULT_ROOT, "unified")
    if not detect_layout().unified and detect_layout(hybrid_v2).unified:
        roots.append(hybrid_v2)
    return roots


ROOTS = _hierarchy_roots()

Spawn = Callable[[str], "subprocess.Popen[bytes]"]
MakeCgroup = Callable[..., Cgroup]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """spawn(code) -> a python child running code; killed and reaped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(code: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.fixture
def make_cgroup(spawn: Spawn) -> Iterator[MakeCgroup]:
    """make_cgroup(resources, root=..., name=...) -> a new group, destroyed at teardown.

    Depends on spawn so that destroy() (which thaws and kills) runs before spawn reaps.
    """
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    made: list[Cgroup] = []

    def make(resources: Resources | None = None, root: str = DEFAULT_ROOT, name: str | None = None) -> Cgroup:
        cg = Cgroup.create(name or f"test-{uuid.uuid4().hex}", resources or Resources(), root=root)
        made.append(cg)
        return cg

    yield make
    for cg in made:
        cg.destroy()


def go(proc: subprocess.Popen[bytes]) -> None:
    """Release a child blocked on its first stdin line (so it acts only once inside the group)."""
    assert proc.stdin is not None
    proc.stdin.write(b"\n")
    proc.stdin.flush()


def utime(pid: int) -> int:
    """User CPU time of pid in clock ticks (field 14 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11])


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---- pure functions ----


def test_parse_v2_only_mountinfo() -> None:
    layout = parse_mountinfo(V2_ONLY_MOUNTINFO)
    assert layout.unified
    assert layout.mounts == {UNIFIED: "/sys/fs/cgroup"}


def test_parse_hybrid_mountinfo() -> None:
    layout = parse_mountinfo(HYBRID_MOUNTINFO)
    assert not layout.unified
    assert layout.mounts == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids",
        "freezer": "/sys/fs/cgroup/freezer",
    }
    # The hybrid's v2 mount is a layout of its own when asked for by its mount point.
    assert parse_mountinfo(HYBRID_MOUNTINFO, "/sys/fs/cgroup/unified").unified
    # Mount points are unescaped (\040 is a space).
    assert parse_mountinfo(HYBRID_MOUNTINFO, "/mnt").mounts == {"memory": "/mnt/other cg"}
    assert parse_mountinfo("", "/sys/fs/cgroup") == parse_mountinfo("garbage line\n")


def test_cpu_weight_matches_runc() -> None:
    assert cpu_weight(2) == 1
    assert cpu_weight(1024) == 39
    assert cpu_weight(262144) == 10000


def test_swap_max_matches_runc() -> None:
    assert swap_max(None, None) is None
    assert swap_max(64 * MiB, 0) is None
    assert swap_max(64 * MiB, 96 * MiB) == str(32 * MiB)
    assert swap_max(64 * MiB, 64 * MiB) == "0"
    assert swap_max(64 * MiB, -1) == "max"
    assert swap_max(-1, 96 * MiB) == "max"
    with pytest.raises(InvalidArgument):
        swap_max(None, 96 * MiB)
    with pytest.raises(InvalidArgument):
        swap_max(96 * MiB, 64 * MiB)


@pytest.mark.parametrize("name", ["..", "a/../b", "../escape", "a/.."])
def test_dotdot_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"\.\."):
        Cgroup.create(name, Resources())
    with pytest.raises(InvalidArgument):
        Cgroup.open(name)


# ---- real cgroups ----


def test_create_applies_limits(make_cgroup: MakeCgroup) -> None:
    res = Resources(
        memory_limit=64 * MiB, memory_swap=96 * MiB, cpu_shares=512, cpu_quota=50000, cpu_period=100000, pids_limit=16
    )
    cg = make_cgroup(res)
    paths = cg.paths()
    if cg.unified:
        d = paths[UNIFIED]
        assert read(f"{d}/memory.max") == str(64 * MiB)
        if os.path.exists(f"{d}/memory.swap.max"):
            assert read(f"{d}/memory.swap.max") == str(32 * MiB)
        assert read(f"{d}/cpu.weight") == str(cpu_weight(512))
        assert read(f"{d}/cpu.max") == "50000 100000"
        assert read(f"{d}/pids.max") == "16"
    else:
        assert read(f"{paths['memory']}/memory.limit_in_bytes") == str(64 * MiB)
        if os.path.exists(f"{paths['memory']}/memory.memsw.limit_in_bytes"):
            assert read(f"{paths['memory']}/memory.memsw.limit_in_bytes") == str(96 * MiB)
        assert read(f"{paths['cpu']}/cpu.shares") == "512"
        assert read(f"{paths['cpu']}/cpu.cfs_quota_us") == "50000"
        assert read(f"{paths['cpu']}/cpu.cfs_period_us") == "100000"
        assert read(f"{paths['pids']}/pids.max") == "16"
        assert {"memory", "cpu", "cpuacct", "pids", "freezer"} <= paths.keys()
    for d in paths.values():
        assert d.endswith(f"/{PREFIX}/{cg.name}")
        assert os.path.isdir(d)
    assert Cgroup.open(cg.name).paths() == paths


def test_refused_limit_names_the_file_and_cleans_up(make_cgroup: MakeCgroup) -> None:
    name = f"test-{uuid.uuid4().hex}"
    # The kernel wants a CFS quota of at least 1 ms.
    with pytest.raises(OSError, match=r"cpu\.(cfs_quota_us|max)") as info:
        make_cgroup(Resources(cpu_quota=10, cpu_period=100000), name=name)
    assert info.value.filename is not None
    with pytest.raises(NotFound):
        Cgroup.open(name)


@pytest.mark.parametrize("root", ROOTS)
def test_add_and_pids(make_cgroup: MakeCgroup, spawn: Spawn, root: str) -> None:
    cg = make_cgroup(root=root)
    assert cg.pids() == []
    child = spawn("import time; time.sleep(60)")
    cg.add(child.pid)
    assert cg.pids() == [child.pid]
    other = spawn("import time; time.sleep(60)")
    cg.add(other.pid)
    assert cg.pids() == sorted([child.pid, other.pid])
    with open(f"/proc/{child.pid}/cgroup") as f:
        assert f"/{PREFIX}/{cg.name}" in f.read()


@pytest.mark.parametrize("root", ROOTS)
def test_a_new_task_joins_by_itself_through_the_membership_files(make_cgroup: MakeCgroup, root: str) -> None:
    cg = make_cgroup(root=root)
    code = (
        "import os, sys\n"
        "from services.platform.cgroup_files import join_self\n"
        "fds = [int(a) for a in sys.argv[1:]]\n"
        "join_self(fds)\n"
        "print(sorted(set(fds) & {int(fd) for fd in os.listdir('/proc/self/fd')}), flush=True)\n"
        "sys.stdin.read()\n"
    )
    with cg.membership_files() as fds:
        assert fds and len(fds) == len(set(cg.paths().values()))
        child = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, fds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=fds,
        )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"[]\n"  # it closed every one of them
        for top in set(cg.paths().values()):
            assert str(child.pid) in pathlib.Path(top, "cgroup.procs").read_text().split(), top
        assert cg.pids() == [child.pid]
    finally:
        child.kill()
        child.communicate(timeout=10)


def test_membership_files_of_a_removed_group_name_the_file(make_cgroup: MakeCgroup) -> None:
    cg = make_cgroup()
    cg.destroy()
    with pytest.raises(OSError, match="opening to join") as info, cg.membership_files():
        pass
    assert info.value.filename is not None and info.value.filename.startswith(tuple(cg.paths().values()))


@pytest.mark.parametrize("root", ROOTS)
def test_freeze_stops_a_busy_child(make_cgroup: MakeCgroup, spawn: Spawn, root: str) -> None:
    cg = make_cgroup(root=root)
    child = spawn("while True: pass")
    cg.add(child.pid)
    start = utime(child.pid)
    assert until(lambda: utime(child.pid) > start), "busy child never ran"
    cg.freeze()
    assert cg.frozen()
    before = utime(child.pid)
    time.sleep(0.3)
    assert utime(child.pid) == before
    cg.thaw()
    assert not cg.frozen()
    assert until(lambda: utime(child.pid) > before), "child did not run again after thaw"


@pytest.mark.parametrize("root", ROOTS)
def test_stats_are_plausible(make_cgroup: MakeCgroup, spawn: Spawn, root: str) -> None:
    limited = root == DEFAULT_ROOT
    cg = make_cgroup(Resources(memory_limit=256 * MiB, pids_limit=32) if limited else None, root=root)
    child = spawn("import sys; sys.stdin.readline(); b = bytearray(16 << 20); n = 0\nwhile True: n += 1")
    cg.add(child.pid)
    go(child)
    assert until(lambda: cg.stats().cpu_usage_ns > 10_000_000)
    stats = cg.stats()
    assert isinstance(stats, CgroupStats)
    assert stats.cpu_usage_ns < 3600 * 10**9
    if limited:
        assert until(lambda: cg.stats().memory_usage >= 16 * MiB)
        assert cg.stats().memory_usage < 256 * MiB
        assert stats.memory_limit == 256 * MiB
        assert stats.pids_current == 1
        assert stats.pids_limit == 32
    unlimited = make_cgroup(root=root).stats()
    assert (unlimited.memory_limit, unlimited.pids_limit, unlimited.pids_current) == (None, None, 0)


def test_memory_limit_oom_kills(make_cgroup: MakeCgroup, spawn: Spawn) -> None:
    # memory_swap == memory_limit: no swap to escape into, whatever the host has.
    cg = make_cgroup(Resources(memory_limit=32 * MiB, memory_swap=32 * MiB))
    assert cg.oom_killed() == 0
    child = spawn("import sys; sys.stdin.readline(); b = bytearray(200 << 20); print('survived')")
    cg.add(child.pid)
    go(child)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, out
    assert until(lambda: cg.oom_killed() >= 1)


def test_pids_limit_makes_fork_fail(make_cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = make_cgroup(Resources(pids_limit=4))
    code = """
import os, sys
sys.stdin.readline()
kids = 0
try:
    for _ in range(20):
        if os.fork() == 0:
            os._exit(0)
        kids += 1  # unreaped children stay zombies, and zombies still count against pids.max
except BlockingIOError:
    print("EAGAIN", kids)
else:
    print("forked", kids)
"""
    child = spawn(code)
    cg.add(child.pid)
    go(child)
    out, err = child.communicate(timeout=30)
    assert out.decode().split() == ["EAGAIN", "3"], err


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("frozen", [False, True])
def test_destroy_kills_and_removes_everything(make_cgroup: MakeCgroup, spawn: Spawn, root: str, frozen: bool) -> None:
    top = f"test-{uuid.uuid4().hex}"
    cg = make_cgroup(root=root, name=f"{top}/ctr")
    children = [spawn("import time; time.sleep(60)") for _ in range(3)]
    for child in children:
        cg.add(child.pid)
    if frozen:
        cg.freeze()
    paths = cg.paths()
    cg.destroy(timeout=10)
    for child in children:
        assert child.wait(timeout=10) == -signal.SIGKILL
    for d in paths.values():
        assert not os.path.exists(d)
        assert not os.path.exists(os.path.dirname(d)), "the nested name's parent stayed"
        assert os.path.isdir(os.path.dirname(os.path.dirname(d)))  # the shared zerovisor/ stays
    cg.destroy()  # idempotent
    with pytest.raises(NotFound):
        Cgroup.open(f"{top}/ctr", root=root)


def test_destroy_keeps_a_shared_parent_in_use(make_cgroup: MakeCgroup) -> None:
    top = f"test-{uuid.uuid4().hex}"
    first = make_cgroup(name=f"{top}/a")
    second = make_cgroup(name=f"{top}/b")
    first.destroy()
    assert all(os.path.isdir(d) for d in second.paths().values())
    assert not any(os.path.exists(d) for d in first.paths().values())


def test_v2_limits_are_written_the_runc_way(tmp_path: pathlib.Path) -> None:
    # This host may have no v2 memory/cpu/pids controllers: check the v2 writes on a plain
    # directory tree shaped like a unified hierarchy instead.
    root = tmp_path / "cgroup"
    leaf = root / PREFIX / "ctr"
    leaf.mkdir(parents=True)
    for d in (root, root / PREFIX):
        (d / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
        (d / "cgroup.subtree_control").write_text("cpu\n" if d == root else "")
    files = ("memory.max", "memory.swap.max", "cpu.weight", "cpu.max", "pids.max")
    for f in files:
        (leaf / f).write_text("")
    res = Resources(memory_limit=64 * MiB, memory_swap=96 * MiB, cpu_shares=1024, cpu_quota=-1, pids_limit=-1)
    cg = Cgroup.create("ctr", res, layout=Layout(unified=True, mounts={UNIFIED: str(root)}))
    assert cg.paths() == {UNIFIED: str(leaf)}
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (root / PREFIX / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert {f: (leaf / f).read_text() for f in files} == {
        "memory.max": str(64 * MiB),
        "memory.swap.max": str(32 * MiB),
        "cpu.weight": "39",
        "cpu.max": "max",
        "pids.max": "max",
    }
