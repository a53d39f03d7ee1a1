"""Gofer.Open against real directories, and the mount policy (read-only, masked) for every call."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

import pytest

from services.gofer.syscalls import RESOLVE_NO_SYMLINKS
from tests.unit.gofer.conftest import Client, Tree


def test_open_create_write_and_read_back(gofer: Client, tree: Tree) -> None:
    fd = gofer.open("/dir/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, b"hello")
        assert os.get_blocking(fd)
        assert fcntl_flags(fd) & os.O_ACCMODE == os.O_WRONLY
    finally:
        os.close(fd)
    p = tree.rootfs / "dir" / "new"
    assert p.read_bytes() == b"hello"
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # the gofer's umask does not apply
    assert gofer.open_err("/dir/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST


def fcntl_flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_open_flags(gofer: Client, tree: Tree) -> None:
    gofer.write_file("/dir/file", b"0123456789")
    fd = gofer.open("/dir/file", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert (tree.rootfs / "dir" / "file").read_bytes() == b""
    fd = gofer.open("/dir/file", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        assert fcntl_flags(fd) & (os.O_APPEND | os.O_NONBLOCK) == os.O_APPEND | os.O_NONBLOCK
    finally:
        os.close(fd)
    assert gofer.open_err("/dir/file", os.O_RDONLY | os.O_DIRECTORY) == errno.ENOTDIR
    assert gofer.open_err("/dir/missing", os.O_WRONLY) == errno.ENOENT
    assert gofer.open_err("/dir", os.O_WRONLY) == errno.EISDIR
    assert gofer.open_err("/", os.O_WRONLY | os.O_CREAT) == errno.EISDIR
    assert gofer.open_err("/dir/file/x", os.O_RDONLY) == errno.ENOTDIR
    assert gofer.open_err("/dir/file", os.O_RDONLY | 0x40000000) is None  # unknown bits ignored
    fd = gofer.open("/dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert "file" in os.listdir(fd)
    finally:
        os.close(fd)


def test_open_nofollow_and_resolve_flags(gofer: Client, tree: Tree) -> None:
    os.symlink("file", tree.rootfs / "dir" / "ln")
    assert gofer.open_err("/dir/ln", os.O_WRONLY | os.O_NOFOLLOW) == errno.ELOOP
    assert gofer.open_err("/dir/ln", os.O_WRONLY) is None
    assert gofer.open_err("/dir/ln", os.O_WRONLY, resolve=RESOLVE_NO_SYMLINKS) == errno.ELOOP
    # O_CREAT through a dangling symlink creates its target (inside the root).
    os.symlink("/dir/target", tree.rootfs / "dir" / "dangling")
    assert gofer.open_err("/dir/dangling", os.O_WRONLY | os.O_CREAT) is None
    assert (tree.rootfs / "dir" / "target").is_file()
    # ... but not with O_EXCL, and O_NOFOLLOW on a symlink is ELOOP.
    assert gofer.open_err("/dir/ln", os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST


def test_open_path_stays_path(gofer: Client) -> None:
    fd = gofer.open("/dir/file", os.O_PATH | os.O_RDWR | os.O_TRUNC)
    try:
        assert fcntl_flags(fd) & os.O_PATH
        with pytest.raises(OSError) as e:
            os.write(fd, b"x")
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)


def test_open_tmpfile(gofer: Client, tree: Tree) -> None:
    before = sorted(os.listdir(tree.rootfs / "dir"))
    fd = gofer.open("/dir", os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"anon")
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert sorted(os.listdir(tree.rootfs / "dir")) == before


def test_open_fifo_never_blocks(gofer: Client, tree: Tree) -> None:
    gofer.op("mknod", "/dir/fifo", mode=stat.S_IFIFO | 0o644)
    assert gofer.open_err("/dir/fifo", os.O_WRONLY) == errno.ENXIO  # no reader
    rfd = gofer.open("/dir/fifo", os.O_RDONLY)
    try:
        assert os.get_blocking(rfd)  # the program asked for a blocking fd
        wfd = gofer.open("/dir/fifo", os.O_WRONLY)
        os.write(wfd, b"through")
        os.close(wfd)
        assert os.read(rfd, 100) == b"through"
    finally:
        os.close(rfd)


def test_open_device_node_refused(gofer: Client, tree: Tree) -> None:
    os.mknod(tree.rootfs / "dir" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert gofer.open_err("/dir/null", os.O_WRONLY) == errno.EACCES
    assert gofer.open_err("/dir/null", os.O_RDONLY) == errno.EACCES


def test_readonly_mount_refuses_writes_with_erofs(gofer: Client, tree: Tree) -> None:
    before = sorted(os.listdir(tree.ro))
    assert gofer.open_err("/ro/f", os.O_WRONLY) == errno.EROFS
    assert gofer.open_err("/ro/f", os.O_RDONLY | os.O_TRUNC) == errno.EROFS
    assert gofer.open_err("/ro/new", os.O_WRONLY | os.O_CREAT) == errno.EROFS
    assert gofer.open_err("/ro", os.O_TMPFILE | os.O_RDWR) == errno.EROFS
    assert gofer.open_err("/ro/f", os.O_RDONLY | os.O_CREAT) is None  # exists: Linux allows it
    assert gofer.open_err("/ro/f", os.O_RDONLY) is None
    assert gofer.err("mkdir", "/ro/d", mode=0o755) == errno.EROFS
    assert gofer.err("mkdir", "/ro/f", mode=0o755) == errno.EEXIST  # mkdir -p relies on this order
    assert gofer.err("mknod", "/ro/n", mode=0o644) == errno.EROFS
    assert gofer.err("unlink", "/ro/f") == errno.EROFS
    assert gofer.err("rmdir", "/ro/f") == errno.EROFS
    assert gofer.err("symlink", "/ro/s", other="f") == errno.EROFS
    assert gofer.err("link", "/ro/h", other="/ro/f") == errno.EROFS
    assert gofer.err("rename", "/ro/f", other="/ro/g") == errno.EROFS
    assert gofer.err("chmod", "/ro/f", mode=0o777) == errno.EROFS
    assert gofer.err("chown", "/ro/f", uid=1, gid=1) == errno.EROFS
    assert gofer.err("truncate", "/ro/f", length=0) == errno.EROFS
    assert gofer.err("utimens", "/ro/f", times_ns=None) == errno.EROFS
    assert gofer.err("set_xattr", "/ro/f", name="user.x", value=b"") == errno.EROFS
    assert gofer.err("set_xattr", "/ro/f", name="user.x", value=b"", follow=False) == errno.EROFS
    assert gofer.err("remove_xattr", "/ro/f", name="user.x") == errno.EROFS
    assert sorted(os.listdir(tree.ro)) == before
    assert (tree.ro / "f").read_text() == "read-only\n"


def test_masked_paths(gofer: Client, tree: Tree) -> None:
    assert gofer.open_err("/masked", os.O_RDONLY) == errno.EACCES
    assert gofer.open_err("/masked/inside", os.O_WRONLY) == errno.ENOENT
    assert gofer.open_err("/masked/inside", os.O_WRONLY | os.O_CREAT) == errno.EROFS
    assert gofer.open_err("/dir/../masked/inside", os.O_WRONLY | os.O_TRUNC) == errno.ENOENT
    assert gofer.err("unlink", "/masked/inside") == errno.EROFS
    assert gofer.err("rmdir", "/masked") == errno.EACCES
    assert gofer.err("rename", "/masked", other="/x") == errno.EACCES
    assert gofer.err("rename", "/dir/file", other="/masked/f") == errno.EROFS
    assert gofer.err("link", "/dir/x", other="/masked/inside") == errno.ENOENT
    assert gofer.err("chmod", "/masked", mode=0o777) == errno.EACCES
    assert gofer.err("access", "/masked/inside", mode=os.F_OK) == errno.ENOENT
    assert gofer.err("mkdir", "/proc/kcore", mode=0o755) == errno.EACCES
    assert (tree.rootfs / "masked" / "inside").read_text() == "hidden\n"
