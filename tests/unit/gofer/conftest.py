"""Fixtures of the gofer's unit tests: a real rootfs, bind mounts and a host sentinel under tmp_path.

The operations run in this process (root is needed: the mounts are detached mount clones and
the operations switch fs credentials). Layout under tmp_path:

    rootfs/          the container's "/"; etc/passwd, dir/file, host/f (a decoy: what "../host/f"
                     means inside the root), data/ and ro/ (mount points), proc/ (empty)
    data/            bind-mounted read-write at /data
    ro/              bind-mounted read-only at /ro, holds f
    host/            the sentinel OUTSIDE every mount: must never change
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.messages.gofer import AttachArgs, Creds, MountPolicy, OpenArgs, PathOpArgs
from services.gofer.control import Gofer
from services.gofer.mounts import MountTable

if os.geteuid() != 0:
    pytest.skip("the gofer needs root (mount clones, fs credentials)", allow_module_level=True)

ROOT = Creds(uid=0, gid=0)
USER = Creds(uid=1000, gid=1000)
CID = "c1"
MASKED = ["/masked", "/proc/kcore"]


def write(path: Path, data: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    path.chmod(mode)
    return path


@dataclass
class Tree:
    """The directories of one test."""

    base: Path
    rootfs: Path
    data: Path
    ro: Path
    host: Path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    rootfs, data, ro, host = (tmp_path / n for n in ("rootfs", "data", "ro", "host"))
    write(rootfs / "etc" / "passwd", "root:x:0:0::/root:/bin/sh\n")
    write(rootfs / "dir" / "file", "in the rootfs\n")
    write(rootfs / "host" / "f", "decoy\n")
    write(rootfs / "masked" / "inside", "hidden\n")
    for d in ("data", "ro", "proc", "tmp"):
        (rootfs / d).mkdir()
    (rootfs / "tmp").chmod(0o1777)
    write(data / "d", "data\n")
    write(ro / "f", "read-only\n")
    write(host / "f", "SECRET\n", 0o644)
    write(host / "sub" / "g", "SECRET 2\n", 0o600)
    os.symlink("f", host / "link")
    os.setxattr(host / "f", "user.k", b"v")
    return Tree(tmp_path, rootfs, data, ro, host)


class Client:
    """Calls the Gofer domain in-process, as the dispatcher would."""

    def __init__(self, gofer: Gofer, cid: str = CID) -> None:
        self.gofer = gofer
        self.cid = cid

    def op(self, method: str, path: str, /, creds: Creds = ROOT, **kw: Any) -> None:
        getattr(self.gofer, method)(PathOpArgs(cid=self.cid, path=path, creds=creds, **kw))

    def err(self, method: str, path: str, /, creds: Creds = ROOT, **kw: Any) -> int | None:
        """The errno the method fails with, or None if it succeeds."""
        try:
            self.op(method, path, creds=creds, **kw)
        except OSError as e:
            return e.errno
        return None

    def open(self, path: str, flags: int, mode: int = 0, creds: Creds = ROOT, resolve: int = 0) -> int:
        result = self.gofer.open(
            OpenArgs(cid=self.cid, path=path, flags=flags, mode=mode, creds=creds, resolve=resolve)
        )
        assert len(result.fds) == 1
        return result.fds[0]

    def open_err(self, path: str, flags: int, mode: int = 0o644, creds: Creds = ROOT, resolve: int = 0) -> int | None:
        try:
            fd = self.open(path, flags, mode, creds, resolve)
        except OSError as e:
            return e.errno
        os.close(fd)
        return None

    def write_file(self, path: str, data: bytes, creds: Creds = ROOT, flags: int = 0) -> None:
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o644, creds)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def attach_args(tree: Tree, cid: str = CID) -> AttachArgs:
    return AttachArgs(
        cid=cid,
        mounts=[
            MountPolicy(destination="/", source=str(tree.rootfs)),
            MountPolicy(destination="/data", source=str(tree.data)),
            MountPolicy(destination="/ro", source=str(tree.ro), readonly=True),
        ],
        masked_paths=MASKED,
    )


@pytest.fixture
def table() -> Iterator[MountTable]:
    t = MountTable()
    yield t
    t.close_all()


@pytest.fixture
def gofer(table: MountTable, tree: Tree) -> Client:
    g = Gofer(table)
    g.attach(attach_args(tree))
    return Client(g)


Snapshot = dict[str, tuple[Any, ...]]


def snapshot(root: Path) -> Snapshot:
    """Everything observable about a tree: type, mode, owner, size, times, links, content, xattrs."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if os.path.islink(p):
                content: Any = os.readlink(p)
                xattrs: dict[str, bytes] = {}
            else:
                content = Path(p).read_bytes() if os.path.isfile(p) else sorted(os.listdir(p))
                xattrs = {n: os.getxattr(p, n) for n in os.listxattr(p)}
            out[os.path.relpath(p, root)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_nlink,
                st.st_ino,
                content,
                xattrs,
            )
    return out


class Sentinel:
    """The host tree outside the rootfs, and the rootfs's neighbours, frozen at creation."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.before = snapshot(tree.host)
        self.neighbours = sorted(os.listdir(tree.base))

    def check(self) -> None:
        assert sorted(os.listdir(self.tree.base)) == self.neighbours
        assert snapshot(self.tree.host) == self.before


@pytest.fixture
def sentinel(tree: Tree) -> Iterator[Sentinel]:
    s = Sentinel(tree)
    yield s
    s.check()


def fs_ids() -> tuple[str, str, str]:
    """This thread's Uid, Gid and Groups lines from /proc."""
    lines = Path("/proc/thread-self/status").read_text().splitlines()
    pick = {ln.split(":", 1)[0]: ln.split(":", 1)[1].split() for ln in lines}
    return pick["Uid"][3], pick["Gid"][3], " ".join(pick["Groups"])
