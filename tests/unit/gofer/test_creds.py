"""Operations run as the caller: ownership, permission checks, and the gofer's identity back after."""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from common.errors import InvalidArgument
from common.messages.gofer import Creds
from services.gofer import creds as fscreds
from tests.unit.gofer.conftest import ROOT, USER, Client, Tree, fs_ids, write

OTHER = Creds(uid=2000, gid=2000)


@pytest.fixture
def shared(tree: Tree) -> Tree:
    """rootfs/tmp-like directory everyone may write: rootfs/pub (0777)."""
    pub = tree.rootfs / "pub"
    pub.mkdir()
    pub.chmod(0o777)
    return tree


def test_new_files_and_dirs_belong_to_the_caller(gofer: Client, shared: Tree) -> None:
    pub = shared.rootfs / "pub"
    gofer.write_file("/pub/f", b"x", creds=USER)
    gofer.op("mkdir", "/pub/d", creds=USER, mode=0o755)
    gofer.op("mknod", "/pub/fifo", creds=USER, mode=stat.S_IFIFO | 0o600)
    gofer.op("symlink", "/pub/ln", creds=USER, other="f")
    for name in ("f", "d", "fifo", "ln"):
        st = (pub / name).lstat()
        assert (st.st_uid, st.st_gid) == (1000, 1000), name
    fd = gofer.open("/pub", os.O_TMPFILE | os.O_RDWR, 0o600, creds=USER)
    try:
        assert (os.fstat(fd).st_uid, os.fstat(fd).st_gid) == (1000, 1000)
    finally:
        os.close(fd)


def test_root_owned_file_is_not_writable_by_a_user(gofer: Client, shared: Tree) -> None:
    passwd = shared.rootfs / "etc" / "passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o644
    assert gofer.open_err("/etc/passwd", os.O_WRONLY, creds=USER) == errno.EACCES
    assert gofer.open_err("/etc/passwd", os.O_RDONLY, creds=USER) is None
    assert gofer.err("truncate", "/etc/passwd", creds=USER, length=0) == errno.EACCES
    assert gofer.err("chmod", "/etc/passwd", creds=USER, mode=0o666) == errno.EPERM
    assert gofer.err("chown", "/etc/passwd", creds=USER, uid=1000, gid=-1) == errno.EPERM
    assert gofer.err("utimens", "/etc/passwd", creds=USER, times_ns=[1, 1]) == errno.EPERM
    assert gofer.err("utimens", "/etc/passwd", creds=USER) == errno.EACCES  # "now" needs write access
    assert gofer.err("unlink", "/etc/passwd", creds=USER) == errno.EACCES
    assert gofer.err("mkdir", "/etc/new", creds=USER, mode=0o755) == errno.EACCES
    assert gofer.err("rename", "/etc/passwd", creds=USER, other="/pub/passwd") == errno.EACCES
    assert gofer.err("set_xattr", "/etc/passwd", creds=USER, name="user.x", value=b"") == errno.EACCES
    assert gofer.err("set_xattr", "/pub", creds=USER, name="security.x", value=b"") == errno.EPERM
    assert gofer.err("access", "/etc/passwd", creds=USER, mode=os.W_OK) == errno.EACCES
    assert gofer.err("access", "/etc/passwd", creds=USER, mode=os.R_OK) is None
    assert gofer.err("mknod", "/pub/dev", creds=USER, mode=stat.S_IFCHR | 0o666, dev=os.makedev(1, 3)) == errno.EPERM
    assert passwd.read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o644


def test_container_root_has_full_fs_capabilities(gofer: Client, shared: Tree) -> None:
    secret = write(shared.rootfs / "etc" / "shadow", "s", 0o000)
    os.chown(secret, 1000, 1000)
    assert gofer.open_err("/etc/shadow", os.O_RDWR, creds=ROOT) is None
    gofer.op("chown", "/etc/shadow", creds=ROOT, uid=0, gid=0)
    assert secret.stat().st_uid == 0


def test_owner_may_chmod_and_chgrp_to_own_groups(gofer: Client, shared: Tree) -> None:
    gofer.write_file("/pub/mine", b"", creds=USER)
    gofer.op("chmod", "/pub/mine", creds=USER, mode=0o600)
    assert gofer.err("chown", "/pub/mine", creds=USER, uid=-1, gid=3000) == errno.EPERM
    member = Creds(uid=1000, gid=1000, groups=[3000])
    gofer.op("chown", "/pub/mine", creds=member, uid=-1, gid=3000)
    assert (shared.rootfs / "pub" / "mine").stat().st_gid == 3000
    assert gofer.open_err("/pub/mine", os.O_WRONLY, creds=OTHER) == errno.EACCES


def test_supplementary_groups_grant_access(gofer: Client, shared: Tree) -> None:
    f = write(shared.rootfs / "pub" / "grp", "", 0o660)
    os.chown(f, 0, 3000)
    assert gofer.open_err("/pub/grp", os.O_WRONLY, creds=USER) == errno.EACCES
    assert gofer.open_err("/pub/grp", os.O_WRONLY, creds=Creds(uid=1000, gid=1000, groups=[5, 3000])) is None
    assert gofer.open_err("/pub/grp", os.O_WRONLY, creds=Creds(uid=1000, gid=3000)) is None


def test_sticky_directory_protects_others_files(gofer: Client, shared: Tree) -> None:
    gofer.write_file("/tmp/a", b"", creds=USER)
    assert gofer.err("unlink", "/tmp/a", creds=OTHER) == errno.EPERM
    assert gofer.err("rename", "/tmp/a", creds=OTHER, other="/tmp/b") == errno.EPERM
    gofer.op("unlink", "/tmp/a", creds=USER)


def test_identity_is_restored_after_every_call(gofer: Client, shared: Tree) -> None:
    base = fs_ids()
    gofer.write_file("/pub/f", b"", creds=Creds(uid=1000, gid=1000, groups=[7, 8]))
    assert fs_ids() == base
    assert gofer.err("unlink", "/etc/passwd", creds=USER) == errno.EACCES
    assert fs_ids() == base
    with pytest.raises(OSError):
        gofer.open("/missing/x", os.O_RDONLY, creds=USER)
    assert fs_ids() == base
    with pytest.raises(InvalidArgument):
        gofer.op("symlink", "/pub/x", creds=USER, other="a\0b")
    assert fs_ids() == base


def test_become_is_per_thread(tree: Tree) -> None:
    base = fs_ids()
    seen: list[tuple[str, str, str]] = []
    entered, leave = threading.Event(), threading.Event()

    def worker() -> None:
        fscreds.become(Creds(uid=1000, gid=1001, groups=[5]))
        try:
            seen.append(fs_ids())
            entered.set()
            leave.wait(5)
        finally:
            fscreds.restore()
        seen.append(fs_ids())

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(5)
    assert fs_ids() == base  # this thread is untouched while the other acts as 1000
    leave.set()
    t.join()
    assert seen[0] == ("1000", "1001", "5")
    assert seen[1] == base


@pytest.mark.parametrize(
    "bad",
    [
        Creds(uid=-1, gid=0),
        Creds(uid=0, gid=0xFFFFFFFF),
        Creds(uid=0, gid=0, groups=[-5]),
        Creds(uid=1 << 40, gid=0),
    ],
)
def test_bad_creds_refused(gofer: Client, bad: Creds) -> None:
    base = fs_ids()
    with pytest.raises(InvalidArgument):
        gofer.op("mkdir", "/pub/x", creds=bad, mode=0o755)
    assert fs_ids() == base


def test_verified_switching_where_ids_could_be_ignored(
    gofer: Client, shared: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the initial user namespace each switch is read back; the results are the same."""
    assert fscreds._TRUSTED  # root in the initial namespace, as these tests run
    monkeypatch.setattr(fscreds, "_TRUSTED", False)
    base = fs_ids()
    gofer.write_file("/pub/v", b"", creds=Creds(uid=1000, gid=1001, groups=[3]))
    st = (shared.rootfs / "pub" / "v").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert gofer.open_err("/etc/passwd", os.O_WRONLY, creds=USER) == errno.EACCES
    assert fs_ids() == base
