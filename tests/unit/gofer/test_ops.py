"""Every Gofer path operation against real directories, with the errnos Linux gives."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from services.gofer.syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE
from tests.unit.gofer.conftest import Client, Tree


def test_mkdir_rmdir(gofer: Client, tree: Tree) -> None:
    gofer.op("mkdir", "/dir/sub", mode=0o750)
    st = (tree.rootfs / "dir" / "sub").stat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    gofer.op("mkdir", "/dir/sub2/", mode=0o755)
    assert gofer.err("mkdir", "/dir/sub", mode=0o755) == errno.EEXIST
    assert gofer.err("mkdir", "/dir/missing/x", mode=0o755) == errno.ENOENT
    assert gofer.err("mkdir", "/dir/file/x", mode=0o755) == errno.ENOTDIR
    (tree.rootfs / "dir" / "sub" / "f").write_text("")
    assert gofer.err("rmdir", "/dir/sub") == errno.ENOTEMPTY
    assert gofer.err("rmdir", "/dir/file") == errno.ENOTDIR
    (tree.rootfs / "dir" / "sub" / "f").unlink()
    gofer.op("rmdir", "/dir/sub/")
    gofer.op("rmdir", "/dir/sub2")
    assert not (tree.rootfs / "dir" / "sub").exists()
    assert gofer.err("rmdir", "/dir/sub") == errno.ENOENT


@pytest.mark.parametrize(
    ("op", "path", "err"),
    [
        ("mkdir", "/", errno.EEXIST),
        ("mkdir", "/dir/.", errno.EEXIST),
        ("mkdir", "/dir/..", errno.EEXIST),
        ("mkdir", "/data", errno.EEXIST),
        ("rmdir", "/", errno.EBUSY),
        ("rmdir", "/data", errno.EBUSY),
        ("rmdir", "/dir/.", errno.EINVAL),
        ("rmdir", "/dir/..", errno.ENOTEMPTY),
        ("rmdir", "/..", errno.ENOTEMPTY),
        ("unlink", "/", errno.EISDIR),
        ("unlink", "/.", errno.EISDIR),
        ("unlink", "/..", errno.EISDIR),
        ("unlink", "/data/", errno.EISDIR),
        ("symlink", "/dir/..", errno.EEXIST),
        ("mknod", "/.", errno.EEXIST),
    ],
)
def test_dot_names_get_linux_errnos(gofer: Client, op: str, path: str, err: int) -> None:
    assert gofer.err(op, path, mode=0o755, other="x") == err


def test_mknod(gofer: Client, tree: Tree) -> None:
    gofer.op("mknod", "/dir/reg", mode=0o600)
    gofer.op("mknod", "/dir/reg2", mode=stat.S_IFREG | 0o644)
    gofer.op("mknod", "/dir/sock", mode=stat.S_IFSOCK | 0o644)
    assert stat.S_ISREG((tree.rootfs / "dir" / "reg").stat().st_mode)
    assert stat.S_IMODE((tree.rootfs / "dir" / "reg").stat().st_mode) == 0o600
    assert stat.S_ISSOCK((tree.rootfs / "dir" / "sock").lstat().st_mode)
    for kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFDIR):
        assert gofer.err("mknod", "/dir/dev", mode=kind | 0o666, dev=os.makedev(1, 3)) == errno.EPERM
    assert gofer.err("mknod", "/dir/bad", mode=0o170000 | 0o644) == errno.EINVAL
    assert not (tree.rootfs / "dir" / "dev").exists()


def test_unlink(gofer: Client, tree: Tree) -> None:
    gofer.op("unlink", "/dir/file")
    assert not (tree.rootfs / "dir" / "file").exists()
    assert gofer.err("unlink", "/dir/file") == errno.ENOENT
    assert gofer.err("unlink", "/dir") == errno.EISDIR
    (tree.rootfs / "dir" / "f").write_text("")
    assert gofer.err("unlink", "/dir/f/") == errno.ENOTDIR


def test_symlink_target_stored_as_given(gofer: Client, tree: Tree) -> None:
    for target in ("/etc/passwd", "../../../..", str(tree.host / "f"), "no/such"):
        gofer.op("symlink", "/dir/ln", other=target)
        assert os.readlink(tree.rootfs / "dir" / "ln") == target
        gofer.op("unlink", "/dir/ln")
    assert gofer.err("symlink", "/dir/ln", other="") == errno.ENOENT
    assert gofer.err("symlink", "/dir/file", other="x") == errno.EEXIST


def test_link(gofer: Client, tree: Tree) -> None:
    gofer.op("link", "/dir/hard", other="/dir/file")
    assert (tree.rootfs / "dir" / "hard").stat().st_ino == (tree.rootfs / "dir" / "file").stat().st_ino
    os.symlink("file", tree.rootfs / "dir" / "ln")
    gofer.op("link", "/dir/hl-nofollow", other="/dir/ln", follow=False)
    assert os.readlink(tree.rootfs / "dir" / "hl-nofollow") == "file"
    gofer.op("link", "/dir/hl-follow", other="/dir/ln", follow=True)
    assert (tree.rootfs / "dir" / "hl-follow").lstat().st_ino == (tree.rootfs / "dir" / "file").stat().st_ino
    assert gofer.err("link", "/dir/x", other="/dir") == errno.EPERM
    assert gofer.err("link", "/dir/x", other="/dir/missing") == errno.ENOENT
    assert gofer.err("link", "/dir/hard", other="/dir/file") == errno.EEXIST
    assert gofer.err("link", "/data/x", other="/dir/file") == errno.EXDEV
    assert gofer.err("link", "/dir/x", other="/data/d") == errno.EXDEV


def test_rename(gofer: Client, tree: Tree) -> None:
    gofer.op("rename", "/dir/file", other="/dir/moved")
    assert (tree.rootfs / "dir" / "moved").read_text() == "in the rootfs\n"
    (tree.rootfs / "dir" / "other").write_text("other")
    assert gofer.err("rename", "/dir/moved", other="/dir/other", flags=RENAME_NOREPLACE) == errno.EEXIST
    gofer.op("rename", "/dir/moved", other="/dir/other", flags=RENAME_EXCHANGE)
    assert (tree.rootfs / "dir" / "moved").read_text() == "other"
    assert gofer.err("rename", "/dir/moved", other="/dir/x", flags=4) == errno.EINVAL
    assert gofer.err("rename", "/dir/moved", other="/data/x") == errno.EXDEV
    assert gofer.err("rename", "/data/d", other="/dir/x") == errno.EXDEV
    assert gofer.err("rename", "/dir/moved/", other="/dir/x") == errno.ENOTDIR
    assert gofer.err("rename", "/dir", other="/dir/sub") == errno.EINVAL
    gofer.op("rename", "/dir/", other="/dir2")
    assert (tree.rootfs / "dir2" / "moved").exists()


@pytest.mark.parametrize(
    ("old", "new", "flags", "err"),
    [
        ("/", "/x", 0, errno.EBUSY),
        ("/data", "/x", 0, errno.EBUSY),
        ("/x", "/data", 0, errno.EBUSY),
        ("/dir/.", "/x", 0, errno.EBUSY),
        ("/dir/..", "/x", 0, errno.EBUSY),
        ("/dir/file", "/..", 0, errno.EBUSY),
        ("/dir/file", "/.", RENAME_NOREPLACE, errno.EEXIST),
        ("/dir/file", "/data/.", 0, errno.EXDEV),
    ],
)
def test_rename_dot_names(gofer: Client, old: str, new: str, flags: int, err: int) -> None:
    assert gofer.err("rename", old, other=new, flags=flags) == err


def test_chmod(gofer: Client, tree: Tree) -> None:
    gofer.op("chmod", "/dir/file", mode=0o4711)
    assert stat.S_IMODE((tree.rootfs / "dir" / "file").stat().st_mode) == 0o4711
    os.symlink("file", tree.rootfs / "dir" / "ln")
    gofer.op("chmod", "/dir/ln", mode=0o600)
    assert stat.S_IMODE((tree.rootfs / "dir" / "file").stat().st_mode) == 0o600
    assert gofer.err("chmod", "/dir/ln", mode=0o600, follow=False) == errno.EOPNOTSUPP
    gofer.op("chmod", "/dir/file", mode=0o640, follow=False)
    assert gofer.err("chmod", "/dir/missing", mode=0o600) == errno.ENOENT


def test_chown(gofer: Client, tree: Tree) -> None:
    f = tree.rootfs / "dir" / "file"
    gofer.op("chown", "/dir/file", uid=1234, gid=-1)
    assert (f.stat().st_uid, f.stat().st_gid) == (1234, 0)
    gofer.op("chown", "/dir/file", uid=-1, gid=4321)
    assert (f.stat().st_uid, f.stat().st_gid) == (1234, 4321)
    os.symlink("file", tree.rootfs / "dir" / "ln")
    gofer.op("chown", "/dir/ln", uid=7, gid=7, follow=False)
    assert (tree.rootfs / "dir" / "ln").lstat().st_uid == 7 and f.stat().st_uid == 1234
    gofer.op("chown", "/dir/ln", uid=8, gid=8)
    assert f.stat().st_uid == 8


def test_truncate(gofer: Client, tree: Tree) -> None:
    gofer.op("truncate", "/dir/file", length=2)
    assert (tree.rootfs / "dir" / "file").read_bytes() == b"in"
    gofer.op("truncate", "/dir/file", length=10)
    assert (tree.rootfs / "dir" / "file").stat().st_size == 10
    assert gofer.err("truncate", "/dir/file", length=-1) == errno.EINVAL
    assert gofer.err("truncate", "/dir", length=0) == errno.EISDIR
    assert gofer.err("truncate", "/dir/missing", length=0) == errno.ENOENT


def test_utimens(gofer: Client, tree: Tree) -> None:
    f = tree.rootfs / "dir" / "file"
    gofer.op("utimens", "/dir/file", times_ns=[1_000_000_001, 2_000_000_002])
    st = f.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    gofer.op("utimens", "/dir/file", times_ns=None)
    assert f.stat().st_mtime_ns > 2_000_000_002
    os.symlink("file", tree.rootfs / "dir" / "ln")
    gofer.op("utimens", "/dir/ln", times_ns=[5, -1_000_000_000], follow=False)
    assert (tree.rootfs / "dir" / "ln").lstat().st_mtime_ns == -1_000_000_000
    assert f.stat().st_mtime_ns > 2_000_000_002


def test_xattrs(gofer: Client, tree: Tree) -> None:
    f = tree.rootfs / "dir" / "file"
    gofer.op("set_xattr", "/dir/file", name="user.a", value=b"1")
    assert os.getxattr(f, "user.a") == b"1"
    assert gofer.err("set_xattr", "/dir/file", name="user.a", value=b"2", flags=os.XATTR_CREATE) == errno.EEXIST
    os.symlink("file", tree.rootfs / "dir" / "ln")
    gofer.op("set_xattr", "/dir/ln", name="user.b", value=b"2")
    assert os.getxattr(f, "user.b") == b"2"
    # user.* xattrs on a symlink itself: EPERM, as Linux.
    assert gofer.err("set_xattr", "/dir/ln", name="user.c", value=b"3", follow=False) == errno.EPERM
    gofer.op("set_xattr", "/dir/file", name="user.d", value=b"4", follow=False)
    gofer.op("set_xattr", "/dir/.", name="user.e", value=b"5", follow=False)
    assert os.getxattr(tree.rootfs / "dir", "user.e") == b"5"
    gofer.op("remove_xattr", "/dir/file", name="user.a")
    gofer.op("remove_xattr", "/dir/ln", name="user.b")
    gofer.op("remove_xattr", "/dir/file", name="user.d", follow=False)
    assert os.listxattr(f) == []
    assert gofer.err("remove_xattr", "/dir/file", name="user.a") == errno.ENODATA
    assert gofer.err("set_xattr", "/dir/file", name="trusted.x", value=b"") == errno.EPERM
    assert gofer.err("set_xattr", "/dir/file", name="bogus.x", value=b"") == errno.EOPNOTSUPP
    assert gofer.err("set_xattr", "/dir/file", name="", value=b"") == errno.ERANGE
    assert gofer.err("set_xattr", "/dir/file", name="user." + "x" * 300, value=b"") == errno.ERANGE


def test_access(gofer: Client, tree: Tree) -> None:
    f = tree.rootfs / "dir" / "file"
    assert gofer.err("access", "/dir/file", mode=os.F_OK) is None
    assert gofer.err("access", "/dir/missing", mode=os.F_OK) == errno.ENOENT
    assert gofer.err("access", "/dir/file", mode=os.X_OK) == errno.EACCES  # root: no x bit at all
    f.chmod(0o744)
    assert gofer.err("access", "/dir/file", mode=os.X_OK) is None
    assert gofer.err("access", "/dir", mode=os.X_OK) is None
    assert gofer.err("access", "/ro/f", mode=os.W_OK) == errno.EROFS
    assert gofer.err("access", "/ro/f", mode=os.R_OK) is None
    assert gofer.err("access", "/dir/file", mode=8) == errno.EINVAL


def test_exdev_across_mounts(gofer: Client, tree: Tree) -> None:
    assert gofer.err("rename", "/data/d", other="/d") == errno.EXDEV
    assert gofer.err("rename", "/dir/file", other="/data/file") == errno.EXDEV
    assert gofer.err("link", "/data/hl", other="/dir/file") == errno.EXDEV
    assert gofer.err("rename", "/data/d", other="/data/e") is None
    assert (tree.data / "e").exists()


def test_dotdot_stays_in_the_mount_it_starts_in(gofer: Client, tree: Tree) -> None:
    gofer.write_file("/data/../../escaped", b"x")
    assert (tree.data / "escaped").exists()
    assert not (tree.rootfs / "escaped").exists()
    assert not (tree.base / "escaped").exists()


def test_bad_arguments(gofer: Client, tree: Tree) -> None:
    from common.errors import InvalidArgument

    for call in (
        lambda: gofer.op("mkdir", "relative", mode=0o755),
        lambda: gofer.op("symlink", "/dir/ln", other="nul\0"),
        lambda: gofer.op("utimens", "/dir/file", times_ns=[1]),
        lambda: gofer.op("chown", "/dir/file", uid=-2, gid=0),
        lambda: gofer.op("set_xattr", "/dir/file", name="user.\0", value=b""),
        lambda: gofer.op("truncate", "/dir/file", length=1 << 70),
        lambda: gofer.op("utimens", "/dir/file", times_ns=[0, 1 << 70]),
        lambda: gofer.op("set_xattr", "/dir/file", name="user.x", value=b"", flags=1 << 70),
        lambda: gofer.open("/dir/file", 1 << 40),
        lambda: gofer.open("/dir/file", -1),
        lambda: gofer.open("/dir/file", os.O_RDONLY, resolve=-1),
    ):
        with pytest.raises(InvalidArgument):
            call()
    assert sorted(os.listdir(tree.rootfs / "dir")) == ["file"]


def test_no_fd_leaks(gofer: Client, tree: Tree) -> None:
    def fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    before = fds()
    for _ in range(3):
        gofer.op("mkdir", "/dir/d", mode=0o755)
        gofer.op("rename", "/dir/d", other="/dir/e")
        gofer.op("rmdir", "/dir/e")
        gofer.op("chmod", "/dir/file", mode=0o644)
        gofer.op("chown", "/dir/file", uid=0, gid=0)
        gofer.op("utimens", "/dir/file")
        gofer.op("set_xattr", "/dir/file", name="user.x", value=b"1", follow=False)
        gofer.op("truncate", "/dir/file", length=0)
        gofer.op("access", "/dir/file", mode=os.R_OK)
        for name in ("unlink", "rmdir", "chmod", "access"):
            assert gofer.err(name, "/dir/missing/x", mode=0) == errno.ENOENT
        assert gofer.err("rename", "/dir/missing", other="/dir/x") == errno.ENOENT
        assert gofer.err("rename", "/dir/file", other="/data/x") == errno.EXDEV
        assert gofer.err("link", "/dir/x", other="/data/d") == errno.EXDEV
        assert gofer.open_err("/dir/fifo-missing", os.O_WRONLY) == errno.ENOENT
    assert fds() == before
