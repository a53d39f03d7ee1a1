"""The escape corpus: no path a program can name makes the gofer touch anything outside its mounts.

The sentinel tree tmp_path/host (files, a private sub-directory, a symlink, an xattr) sits
right beside the rootfs, so "../host" from the rootfs names it, and an absolute symlink names it
by its host path. After every test it must be byte-identical: content, modes, owners, times,
link counts, xattrs, listings, and the rootfs's neighbours. Where a path resolves inside the
root instead, the decoy rootfs/host/f shows it did.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from common.messages.gofer import AttachArgs, MountPolicy
from services.gofer.control import Gofer
from services.gofer.mounts import MountTable
from services.gofer.syscalls import RENAME_EXCHANGE, renameat2
from tests.unit.gofer.conftest import ROOT, USER, Client, Sentinel, Tree, snapshot

#: Every write-ish call, with arguments, to aim at each escaping path.
CALLS: list[tuple[str, dict[str, object]]] = [
    ("mkdir", {"mode": 0o777}),
    ("mknod", {"mode": 0o666}),
    ("unlink", {}),
    ("rmdir", {}),
    ("symlink", {"other": "/etc/passwd"}),
    ("link", {"other": "/dir/file"}),
    ("rename", {"other": "/dir/renamed"}),
    ("chmod", {"mode": 0o777}),
    ("chmod", {"mode": 0o777, "follow": False}),
    ("chown", {"uid": 4242, "gid": 4242}),
    ("chown", {"uid": 4242, "gid": 4242, "follow": False}),
    ("truncate", {"length": 0}),
    ("utimens", {"times_ns": [0, 0]}),
    ("utimens", {"times_ns": [0, 0], "follow": False}),
    ("set_xattr", {"name": "user.k", "value": b"pwned"}),
    ("set_xattr", {"name": "user.k", "value": b"pwned", "follow": False}),
    ("remove_xattr", {"name": "user.k"}),
    ("remove_xattr", {"name": "user.k", "follow": False}),
]
OPEN_FLAGS = [
    os.O_WRONLY | os.O_TRUNC,
    os.O_WRONLY | os.O_CREAT,
    os.O_RDWR | os.O_CREAT | os.O_EXCL,
    os.O_WRONLY | os.O_APPEND,
    os.O_TMPFILE | os.O_RDWR,
    os.O_PATH,
]


def escaping_paths(tree: Tree) -> list[str]:
    """Container paths that would name the sentinel if resolved as a host path or from the rootfs."""
    host = str(tree.host)
    rel_up = "/".join([".."] * (host.count("/") + 2))
    return [
        "/../host/f",
        "/../../../../../../host/f",
        f"/{rel_up}{host}/f",
        f"/{rel_up}{host}/sub/g",
        f"/{rel_up}{host}",
        f"{host}/f",
        "/dir/../../host/f",
        "/data/../host/f",
        "/data/../../host/sub/g",
        "/ro/../../host/f",
        "/abs",  # -> host/f, absolute
        "/absdir/f",  # -> host, absolute
        "/absdir/sub/g",
        "/absdir/",
        "/absdir",
        "/rel",  # -> ../host/f
        "/reldir/f",  # -> ../host
        "/reldir/link",
        "/chain/f",  # -> /absdir (a symlink to a symlink)
        "/up/host/f",  # -> ../../../..
        "/data/absdir/f",  # a symlink inside the data mount, to the host path
        "/data/up/host/f",
        "/proc/self/root" + host + "/f",
        "/proc/self/cwd/../host/f",
        "/selfroot/" + host + "/f",  # -> /proc/self/root
        "/",
        "/.",
        "/..",
        "/../",
        "/data/..",
        "/data/.",
        "/ro/..",
    ]


@pytest.fixture
def links(tree: Tree) -> Tree:
    """Symlinks that point out of the root, by absolute host path and by climbing."""
    host = str(tree.host)
    r = tree.rootfs
    os.symlink(f"{host}/f", r / "abs")
    os.symlink(host, r / "absdir")
    os.symlink("../host/f", r / "rel")
    os.symlink("../host", r / "reldir")
    os.symlink("/absdir", r / "chain")
    os.symlink("../../../..", r / "up")
    os.symlink("/proc/self/root", r / "selfroot")
    os.symlink(host, tree.data / "absdir")
    os.symlink("../../../..", tree.data / "up")
    return tree


@pytest.mark.parametrize(("method", "kw"), CALLS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CALLS)])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "user"])
def test_path_ops_never_leave_the_root(
    gofer: Client, links: Tree, sentinel: Sentinel, method: str, kw: dict[str, object], as_user: bool
) -> None:
    creds = USER if as_user else ROOT
    for path in escaping_paths(links):
        gofer.err(method, path, creds=creds, **kw)
        # The escaping path as the *other* argument too (link source, rename target).
        if method in ("link", "rename"):
            gofer.err(method, "/dir/file", creds=creds, **{**kw, "other": path})
            gofer.err(method, path, creds=creds, **{**kw, "other": path})
        sentinel.check()


@pytest.mark.parametrize("flags", OPEN_FLAGS)
def test_open_never_leaves_the_root(gofer: Client, links: Tree, sentinel: Sentinel, flags: int) -> None:
    for path in escaping_paths(links):
        try:
            fd = gofer.open(path, flags, 0o666)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            # Whatever it opened is in one of the container's mounts, never the sentinel.
            assert (st.st_dev, st.st_ino) not in {(s.st_dev, s.st_ino) for s in host_stats(links)}
            if flags & os.O_ACCMODE and not flags & os.O_PATH:
                os.write(fd, b"pwned")
        finally:
            os.close(fd)
        sentinel.check()


def host_stats(tree: Tree) -> list[os.stat_result]:
    return [os.lstat(p) for p in [tree.host, *tree.host.rglob("*")]]


def test_escaping_symlinks_resolve_inside_the_root(gofer: Client, links: Tree, sentinel: Sentinel) -> None:
    decoy = links.rootfs / "host" / "f"
    gofer.op("chmod", "/rel", mode=0o600)
    assert stat.S_IMODE(decoy.stat().st_mode) == 0o600
    gofer.op("truncate", "/reldir/f", length=1)
    gofer.op("set_xattr", "/../../host/f", name="user.k", value=b"inside")
    assert decoy.read_bytes() == b"d"
    assert os.getxattr(decoy, "user.k") == b"inside"
    # An absolute symlink is followed from the container's "/": rootfs/<host path>, not there.
    assert gofer.err("chmod", "/abs", mode=0o777) == errno.ENOENT
    assert gofer.err("chown", "/absdir/f", uid=1, gid=1) == errno.ENOENT
    assert gofer.err("truncate", "/chain/f", length=0) == errno.ENOENT
    assert gofer.err("utimens", "/abs", times_ns=[0, 0]) == errno.ENOENT
    assert gofer.err("set_xattr", "/abs", name="user.k", value=b"x") == errno.ENOENT
    # ... and the same file made to exist inside the root is what gets changed.
    inside = links.rootfs / str(links.host).lstrip("/") / "f"
    inside.parent.mkdir(parents=True)
    inside.write_text("inside")
    gofer.op("chmod", "/abs", mode=0o640)
    assert stat.S_IMODE(inside.stat().st_mode) == 0o640
    # The symlinks themselves (nofollow) are what lchown and lutimes change.
    gofer.op("chown", "/abs", uid=99, gid=99, follow=False)
    assert (links.rootfs / "abs").lstat().st_uid == 99
    # Creation through an escaping dangling symlink lands inside.
    os.symlink(f"{links.host}/new", links.rootfs / "dangling")
    fd = gofer.open("/dangling", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    assert (inside.parent / "new").exists()


def test_hardlink_of_an_outside_file_through_a_symlink(gofer: Client, links: Tree, sentinel: Sentinel) -> None:
    assert gofer.err("link", "/hl", other="/abs", follow=True) == errno.ENOENT
    gofer.op("link", "/hl", other="/abs", follow=False)  # links the symlink itself
    assert os.readlink(links.rootfs / "hl") == f"{links.host}/f"
    gofer.op("link", "/hl2", other="/rel", follow=True)  # ../host/f: the decoy
    assert (links.rootfs / "hl2").stat().st_ino == (links.rootfs / "host" / "f").stat().st_ino
    assert os.stat(links.host / "f").st_nlink == 1


@pytest.mark.parametrize(
    ("method", "path", "err"),
    [
        ("rmdir", "/..", errno.ENOTEMPTY),
        ("rmdir", "/.", errno.EINVAL),
        ("rmdir", "/", errno.EBUSY),
        ("rmdir", "/../", errno.ENOTEMPTY),
        ("rmdir", "/data/..", errno.ENOTEMPTY),
        ("rmdir", "/up/..", errno.ENOTEMPTY),
        ("unlink", "/..", errno.EISDIR),
        ("unlink", "/.", errno.EISDIR),
        ("unlink", "/", errno.EISDIR),
        ("rename", "/..", errno.EBUSY),
        ("rename", "/.", errno.EBUSY),
        ("rename", "/", errno.EBUSY),
        ("mkdir", "/..", errno.EEXIST),
    ],
)
def test_dot_names_of_the_root(
    gofer: Client, links: Tree, sentinel: Sentinel, method: str, path: str, err: int
) -> None:
    before = snapshot(links.rootfs)
    assert gofer.err(method, path, other="/moved", mode=0o755) == err
    assert snapshot(links.rootfs) == before
    assert gofer.err("rename", "/dir", other=path) in (errno.EBUSY, errno.EXDEV)


def test_rmdir_of_dotdot_with_an_empty_root(table: MountTable, tmp_path: Path) -> None:
    """rmdir(rootfd, "..") on an empty rootfs would remove the rootfs itself from the host."""
    empty, sentinel = tmp_path / "emptyroot", tmp_path / "keep"
    empty.mkdir()
    sentinel.mkdir()
    g = Gofer(table)
    g.attach(AttachArgs(cid="e", mounts=[MountPolicy(destination="/", source=str(empty))]))
    c = Client(g, "e")
    for path in ("/..", "/../", "/./..", "/../..", "/.", "/", "//"):
        assert c.err("rmdir", path) in (errno.ENOTEMPTY, errno.EINVAL, errno.EBUSY)
        assert c.err("unlink", path) == errno.EISDIR
        assert c.err("rename", path, other="/x") == errno.EBUSY
    assert empty.is_dir() and sentinel.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["emptyroot", "keep"]


def test_magic_links_are_refused(table: MountTable, tree: Tree, sentinel: Sentinel) -> None:
    """Even a mount that is procfs itself: /proc/self/root and /proc/self/cwd are ELOOP."""
    g = Gofer(table)
    g.attach(
        AttachArgs(
            cid="p",
            mounts=[
                MountPolicy(destination="/", source=str(tree.rootfs)),
                MountPolicy(destination="/proc", source="/proc"),
            ],
        )
    )
    c = Client(g, "p")
    host = str(tree.host)
    for path in (
        f"/proc/self/root{host}/f",
        f"/proc/thread-self/root{host}/f",
        f"/proc/{os.getpid()}/root{host}/f",
        f"/proc/self/cwd{host}/f",
        "/proc/self/fd/0",
        "/proc/self/exe",
    ):
        assert c.open_err(path, os.O_WRONLY) == errno.ELOOP, path
        assert c.err("chmod", path, mode=0o777) == errno.ELOOP, path
        assert c.err("truncate", path, length=0) == errno.ELOOP, path
    sentinel.check()


def test_device_nodes_in_the_image_cannot_be_opened(gofer: Client, tree: Tree) -> None:
    # /dev/sda-like: a block device node planted in the rootfs image.
    dev = os.stat("/").st_dev
    os.mknod(tree.rootfs / "disk", stat.S_IFBLK | 0o666, dev)
    for flags in (os.O_RDONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        assert gofer.open_err("/disk", flags) == errno.EACCES
    assert gofer.err("truncate", "/disk", length=0) == errno.EACCES


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_component_swapped_during_the_call(gofer: Client, tree: Tree, sentinel: Sentinel, target: str) -> None:
    """A thread flips rootfs/a between a real directory and a symlink out of the root, atomically
    (RENAME_EXCHANGE), while every operation runs on /a/... in a loop."""
    r = tree.rootfs
    (r / "a").mkdir()
    (r / "a" / "f").write_text("mine")
    os.symlink(str(tree.host) if target == "absolute" else "../host", r / "a-link")
    rootfd = os.open(r, os.O_PATH | os.O_DIRECTORY)
    stop = threading.Event()
    flips = 0

    def flipper() -> None:
        nonlocal flips
        while not stop.is_set():
            renameat2(rootfd, "a", rootfd, "a-link", RENAME_EXCHANGE)
            flips += 1

    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    try:
        for i in range(2000):
            gofer.err("chmod", "/a/f", mode=0o600 if i % 2 else 0o644)
            gofer.err("chown", "/a/f", uid=i % 3, gid=i % 3)
            gofer.err("truncate", "/a/f", length=i % 5)
            gofer.err("utimens", "/a/f", times_ns=[i, i])
            gofer.err("set_xattr", "/a/f", name="user.k", value=b"pwned", follow=bool(i % 2))
            gofer.err("remove_xattr", "/a/sub/g", name="user.k")
            gofer.err("unlink", "/a/link")
            gofer.err("rename", "/a/f", other="/a/g")
            gofer.err("rename", "/a/g", other="/a/f")
            gofer.err("mkdir", "/a/sub", mode=0o777)
            gofer.err("rmdir", "/a/sub")
            gofer.err("link", "/hl", other="/a/f")
            gofer.err("unlink", "/hl")
            gofer.open_err("/a/f", os.O_WRONLY | os.O_TRUNC | os.O_CREAT)
            gofer.open_err("/a/sub/g", os.O_WRONLY | os.O_TRUNC)
    finally:
        stop.set()
        t.join()
        os.close(rootfd)
    assert flips > 100
    sentinel.check()


def test_sentinel_is_really_watched(tree: Tree) -> None:
    """The snapshot notices the smallest change (so the tests above would catch an escape)."""
    s = Sentinel(tree)
    os.utime(tree.host / "sub" / "g", ns=(1, 1))
    with pytest.raises(AssertionError):
        s.check()
    s = Sentinel(tree)
    subprocess.run(["chmod", "g+w", str(tree.host / "f")], check=True)
    with pytest.raises(AssertionError):
        s.check()
