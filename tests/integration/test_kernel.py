"""The application kernel end to end: trapped syscalls answered by the sentry, writes done by the gofer.

Real programs in a real busybox rootfs: a shell script that builds a tree must leave exactly
what the same script leaves when run natively (chroot) in a copy of the rootfs; read-only
mounts refuse writes; uname answers from the config; the sentry's counts and strace log
follow a static C program's trapped calls.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from common.messages.spec import DEFAULT_CAPABILITIES
from services.controller.oci import default_config
from tests.cbuild import CBuild, cbin_fixture, install_into  # noqa: F401 - the cbin fixture
from tests.integration.zerovisor import Zerovisor, sh
from tests.rootfs import make_bundle, make_rootfs

pytestmark = pytest.mark.integration

#: Docker's (and runc's) default capabilities: what a root program needs to chown, mknod and write.
DOCKER_CAPS = DEFAULT_CAPABILITIES

#: Builds, renames, chmods, links and deletes a tree under /work; the same in a container and natively.
TREE_SCRIPT = r"""
set -e
export TZ=UTC
umask 022
mkdir -p /work/a/b/c /work/d/e /work/rmme/sub
cd /work
echo hello > a/f1
echo more >> a/f1
printf 'line1\nline2\n' > a/b/f2
seq 1 500 > a/b/c/big
printf '%s' tail >> a/b/c/big
cp a/f1 d/copy
cp -p a/b/f2 d/e/f2p
cp -a a/b d/b_copy
mv a/b/f2 a/b/f2moved
mv d/e d/e2
mkdir x
mv x a/x_moved
mv a/b/c/big a/big_moved
umask 027
mkdir m027
echo masked > m027/file
mkfifo m027/fifo
mknod m027/fifo2 p
umask 022
chmod 0600 a/f1
chmod 0755 d/copy
chmod 0700 a/b/c
chmod 0751 d
chmod 1777 a/x_moved
chmod 0444 m027/file
ln a/b/f2moved hard1
ln hard1 d/hard2
ln hard1 hard3
ln -s a/b/f2moved rel_link
ln -s /work/a/f1 abs_link
ln -s ../../d a/b/up
ln -s nowhere dangling
echo gone > tmpfile
rm tmpfile
rm d/hard2
rm -r d/b_copy/c
rmdir rmme/sub
rmdir rmme
echo overwrite > d/copy
: > a/emptied
truncate -s 12345 sparse
truncate -s 3 a/big_moved
chown 65534:65534 d/copy
chown -h 65534:65534 rel_link
chgrp 65534 a/b
mv hard3 a/hard3_moved
mv a/x_moved d/e2/x_again
mv -f d/copy a/emptied
touch new_empty
touch -d '2001-02-03 04:05:06' a/f1 hard1
touch -h -d '2002-03-04 05:06:07' abs_link
echo done
"""
#: Paths whose mtime the script sets (the others differ between two runs).
FIXED_MTIMES = {"a/f1", "hard1", "a/b/f2moved", "a/hard3_moved", "abs_link"}


def config_of(bundle: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    return config


def write_config(bundle: Path, config: dict[str, Any]) -> Path:
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def with_caps(bundle: Path, caps: Sequence[str]) -> Path:
    config = config_of(bundle)
    config["process"]["capabilities"] = {key: list(caps) for key in ("bounding", "effective", "permitted")}
    return write_config(bundle, config)


def tree(root: Path, mtimes: Collection[str] = ()) -> dict[str, tuple[object, ...]]:
    """rel path -> (type, mode, uid, gid, size or target, contents, nlink, mtime if in mtimes)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = (st.st_size, path.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            nlink = None if stat.S_ISDIR(st.st_mode) else st.st_nlink
            mtime = st.st_mtime_ns if rel in mtimes else None
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail, nlink, mtime)
    return out


def hard_links(root: Path) -> set[frozenset[str]]:
    """The groups of paths that name the same inode (non-directories with more than one link)."""
    groups: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = Path(dirpath, name).lstat()
            if st.st_nlink > 1:
                groups.setdefault(st.st_ino, set()).add(str(Path(dirpath, name).relative_to(root)))
    return {frozenset(g) for g in groups.values()}


def same_as_native(zv: Zerovisor, tmp_path: Path, script: str) -> dict[str, tuple[object, ...]]:
    """Run script (which prints "done") in a container and natively (chroot into a fresh copy of
    the rootfs); assert that both leave the same /work tree and return the native one."""
    bundle = with_caps(sh(tmp_path, script), DOCKER_CAPS)
    out = zv("run", "-b", str(bundle), "tree", timeout=180)
    assert out.stdout == "done\n", out

    native = make_rootfs(tmp_path / "native")
    proc = subprocess.run(
        [shutil.which("chroot") or "/usr/sbin/chroot", str(native), "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/bin:/usr/bin:/sbin", "HOME": "/root"},
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "done\n"), proc

    # The files are on the host, in the bundle's rootfs: the program's own view is read-only,
    # so the gofer wrote them.
    inside, outside = bundle / "rootfs" / "work", native / "work"
    got, want = tree(inside, FIXED_MTIMES), tree(outside, FIXED_MTIMES)
    assert got.keys() == want.keys(), (got.keys() - want.keys(), want.keys() - got.keys())  # (inside only, native only)
    for rel in want:
        assert got[rel] == want[rel], rel
    assert hard_links(inside) == hard_links(outside)
    return want


def test_tree_script_matches_native_run(zv: Zerovisor, tmp_path: Path) -> None:
    want = same_as_native(zv, tmp_path, TREE_SCRIPT)
    assert (tmp_path / "bundle" / "rootfs" / "work" / "a" / "f1").read_text() == "hello\nmore\n"
    # What the native run made, so that equal trees cannot be equally empty.
    assert len(want) == 25
    assert want["a/emptied"][1:4] == (0o755, 65534, 65534) and want["m027/fifo"][1] == 0o640


def test_dotdot_after_a_symlink_matches_native_run(zv: Zerovisor, tmp_path: Path) -> None:
    """`..` after a symlink is the parent of the symlink's target, not of the symlink."""
    script = """set -e
mkdir -p /work/a/b/c /work/d
cd /work
ln -s ../../d a/b/up
echo via > a/b/up/../via_dotdot
ln -s /work/a/b/c abs_dir_link
mkdir abs_dir_link/../made_via_link
cd -P a/b/up/..
echo cwd > from_cwd
echo done
"""
    want = same_as_native(zv, tmp_path, script)
    assert {"via_dotdot", "a/b/made_via_link", "from_cwd"} <= want.keys()


def test_read_only_bind_mount_refuses_writes(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    ro, rw = tmp_path / "ro_src", tmp_path / "rw_src"
    ro.mkdir()
    rw.mkdir()
    (ro / "existing").write_text("read me\n")
    (rw / "kept").write_text("kept\n")
    ro_before = tree(ro, {"existing"})
    script = r"""
exec 2>&1
cat /ro/existing
echo x > /ro/f; echo "create=$?"
echo x >> /ro/existing; echo "append=$?"
mkdir /ro/d; echo "mkdir=$?"
rm /ro/existing; echo "rm=$?"
chmod 600 /ro/existing; echo "chmod=$?"
touch /ro/existing; echo "touch=$?"
ln -s x /ro/sl; echo "symlink=$?"
mv /ro/existing /ro/moved; echo "mv=$?"
mkfifo /ro/fifo; echo "mkfifo=$?"
truncate -s 0 /ro/existing; echo "truncate=$?"
echo hi > /rw/f && mkdir /rw/d && echo more >> /rw/f && chmod 600 /rw/f && mv /rw/f /rw/d/g && echo rw-ok
/native_write /etc/passwd /rw/kept
"""
    bundle = sh(tmp_path, script)
    install_into(bundle / "rootfs", cbin("native_write"))
    for name in ("ro", "rw"):
        (bundle / "rootfs" / name).mkdir()
    config = config_of(bundle)
    config["mounts"] = [
        *default_config()["mounts"],
        {"destination": "/ro", "type": "bind", "source": str(ro), "options": ["bind", "ro"]},
        {"destination": "/rw", "type": "bind", "source": str(rw), "options": ["bind", "rw"]},
    ]
    write_config(bundle, config)
    out = zv("run", "-b", str(bundle), "mounts", timeout=120).stdout
    lines = out.splitlines()
    assert lines[0] == "read me", out
    refused = ("create", "append", "mkdir", "rm", "chmod", "touch", "symlink", "mv", "mkfifo", "truncate")
    for op in refused:
        rc = next((line for line in lines if line.startswith(f"{op}=")), None)
        assert rc is not None and rc != f"{op}=0", (op, out)
    assert "can't create /ro/f: Read-only file system" in out
    assert "mkdir: can't create directory '/ro/d': Read-only file system" in out
    assert out.count("Read-only file system") >= len(refused), out
    assert tree(ro, {"existing"}) == ro_before
    # The rw mount works, and what it wrote is on the host.
    assert "rw-ok" in lines, out
    g = rw / "d" / "g"
    assert g.read_text() == "hi\nmore\n" and stat.S_IMODE(g.stat().st_mode) == 0o600
    # Calls the filter does not trap hit the kernel's read-only view, rootfs and mounts alike.
    for path in ("/etc/passwd", "/rw/kept"):
        for call in ("fchmod", "fchown", "fsetxattr"):
            assert f"{call} {path} {os.strerror(30)}" in lines, out  # EROFS
    assert stat.S_IMODE((rw / "kept").stat().st_mode) == 0o644


def test_symlinks_lead_into_bind_mounts(zv: Zerovisor, tmp_path: Path) -> None:
    """A symlink in the rootfs that names a bind mount leads into it (to EROFS for a read-only
    one), and one in a bind mount that leaves it leads back into the rootfs, as in Linux."""
    ro, rw = tmp_path / "ro_src", tmp_path / "rw_src"
    ro.mkdir()
    rw.mkdir()
    (rw / "out").symlink_to("../work")
    script = r"""
exec 2>&1
mkdir /work
ln -s /ro /work/toro; echo x > /work/toro/f; echo "ro=$?"
ln -s /rw /work/torw; echo via > /work/torw/f; echo "rw=$?"; cat /rw/f
echo back > /rw/out/f; echo "out=$?"; cat /work/f
"""
    bundle = sh(tmp_path, script)
    for name in ("ro", "rw"):
        (bundle / "rootfs" / name).mkdir()
    config = config_of(bundle)
    config["mounts"] = [
        *default_config()["mounts"],
        {"destination": "/ro", "type": "bind", "source": str(ro), "options": ["bind", "ro"]},
        {"destination": "/rw", "type": "bind", "source": str(rw), "options": ["bind", "rw"]},
    ]
    write_config(bundle, config)
    out = zv("run", "-b", str(bundle), "links", timeout=120).stdout
    assert out.splitlines() == [
        "sh: can't create /work/toro/f: Read-only file system",
        "ro=1",
        "rw=0",
        "via",
        "out=0",
        "back",
    ], out
    assert (rw / "f").read_text() == "via\n" and (bundle / "rootfs" / "work" / "f").read_text() == "back\n"
    assert list(ro.iterdir()) == [] and list((bundle / "rootfs" / "ro").iterdir()) == []


@pytest.mark.parametrize("release", [None, "5.15.0-zerovisor"])
def test_uname_shows_the_configured_hostname_and_release(zv: Zerovisor, tmp_path: Path, release: str | None) -> None:
    bundle = sh(tmp_path, "uname -n; uname -r; hostname")
    config = config_of(bundle)
    config["hostname"] = "kernel-host"
    if release is not None:
        config["annotations"] = {"dev.zerovisor.kernel-release": release}
    write_config(bundle, config)
    out = zv("run", "-b", str(bundle), "uname", timeout=120).stdout
    assert out.splitlines() == ["kernel-host", release or "4.4.0", "kernel-host"]


def test_sysinfo_reports_the_memory_limit(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    bundle = sh(tmp_path, "/sysinfo")
    install_into(bundle / "rootfs", cbin("sysinfo"))
    config = config_of(bundle)
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}}
    write_config(bundle, config)
    total, free = map(int, zv("run", "-b", str(bundle), "sysinfo", timeout=120).stdout.split())
    assert total == 64 << 20
    assert 0 < free < total  # the limit less what the container's cgroup uses


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def system_count(zv: Zerovisor, cid: str) -> int:
    stats = json.loads(zv("events", "--stats", cid).stdout)
    assert stats["type"] == "stats" and stats["id"] == cid, stats
    count = stats["data"]["syscalls"].get("system", 0)
    assert isinstance(count, int)
    return count


def test_counts_rise_by_exactly_the_calls_made(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["/uname_loop", "1000", "sync"])
    rootfs = bundle / "rootfs"
    install_into(rootfs, cbin("uname_loop"))
    zv("run", "-d", "-b", str(bundle), "count", timeout=120)
    try:
        wait_for(rootfs / "ready")
        before = system_count(zv, "count")
        (rootfs / "go").touch()
        wait_for(rootfs / "done")
        after = system_count(zv, "count")
        assert after - before == 1000
        status = json.loads(zv("status", "--format", "json").stdout)
        sentry = next(s for s in status if s["service"] == "sentry")
        counts = sentry["details"]["syscalls"]["count"]
        assert counts["system"] == after
        assert counts["open"] >= 2  # /ready and /done
    finally:
        zv("delete", "-f", "count", check=False)


def sentry_log_lines(zv: Zerovisor, *needles: str, timeout: float = 10) -> list[str]:
    """The sentry log's lines that contain every needle (waiting for them to be written)."""
    log = zv.root / "sentry.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        found = [line for line in lines if all(n in line for n in needles)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_strace_logs_trapped_syscalls(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "--strace", "-b", str(sh(tmp_path, "mkdir /traced-dir")), "st1", timeout=120)
    assert (tmp_path / "bundle" / "rootfs" / "traced-dir").is_dir()
    assert sentry_log_lines(zv, "mkdir", "/traced-dir")
    # Per container, by annotation; and off without either.
    bundle = sh(tmp_path, "mkdir /annotated-dir; mkdir /untraced-dir-x", "b2")
    config = config_of(bundle)
    config["annotations"] = {"dev.zerovisor.strace": "true"}
    write_config(bundle, config)
    zv("run", "-b", str(bundle), "st2", timeout=120)
    assert sentry_log_lines(zv, "mkdir", "/annotated-dir")
    zv("run", "-b", str(sh(tmp_path, "mkdir /quiet-dir", "b3")), "st3", timeout=120)
    assert (tmp_path / "b3" / "rootfs" / "quiet-dir").is_dir()
    assert not sentry_log_lines(zv, "/quiet-dir", timeout=1)


def test_trapped_open_for_write_returns_a_working_fd(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["/open_write", "/f"])
    install_into(bundle / "rootfs", cbin("open_write"))
    out = zv("run", "-b", str(bundle), "ow", timeout=120).stdout
    msg = "hello from a trapped open\n"
    assert f"size={len(msg)} mode=640" in out, out
    assert out.endswith(f"read={msg}more\n"), out
    host = bundle / "rootfs" / "f"
    assert host.read_text() == msg + "more\n"
    assert stat.S_IMODE(host.stat().st_mode) == 0o640  # umask 022 keeps 0640


def test_touch_changes_only_the_time_it_names(zv: Zerovisor, tmp_path: Path) -> None:
    # utimensat with UTIME_OMIT for the other time: the gofer must leave that one alone.
    script = "mkdir -p /work; touch -d '2001-01-01 00:00:00' /work/f; touch -a -d '2011-01-01 00:00:00' /work/f"
    bundle = sh(tmp_path, script)
    zv("run", "-b", str(bundle), "touch", timeout=120)
    st = (bundle / "rootfs" / "work" / "f").stat()
    assert time.gmtime(st.st_mtime).tm_year == 2001
    assert time.gmtime(st.st_atime).tm_year == 2011
