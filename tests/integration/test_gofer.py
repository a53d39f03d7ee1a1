"""The gofer service alone: Attach, Open (the fd comes back over the fd channel), path
operations and their errnos, malformed requests, Detach."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.client import FdClient
from common.errors import ErrCode, RemoteError
from common.messages.gofer import AttachArgs, Creds, DetachArgs, MountPolicy, OpenArgs, OpenResult, PathOpArgs
from common.messages.system import PingResult
from common.methods import SYSTEM_PING
from common.rundir import RunDir
from tests.conftest import ServiceProcess, settled_fd_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the gofer needs root (mount clones, fs credentials)"),
]

StartService = Callable[[str], ServiceProcess]
ROOT = Creds(uid=0, gid=0)
USER = Creds(uid=1000, gid=1000)


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    rootfs, data, ro = tmp_path / "rootfs", tmp_path / "data", tmp_path / "ro"
    for d in (rootfs / "etc", rootfs / "pub", rootfs / "data", rootfs / "ro", data, ro):
        d.mkdir(parents=True)
    (rootfs / "pub").chmod(0o777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (ro / "f").write_text("read-only\n")
    return {"rootfs": rootfs, "data": data, "ro": ro}


@pytest.fixture
def gofer(start_service: StartService, run_dir: Path) -> Iterator[tuple[ServiceProcess, FdClient]]:
    sp = start_service("gofer")
    with FdClient(RunDir.at(run_dir).socket_path("gofer"), timeout=10) as client:
        yield sp, client


def attach(client: FdClient, dirs: dict[str, Path], cid: str = "c1") -> None:
    args = AttachArgs(
        cid=cid,
        mounts=[
            MountPolicy(destination="/", source=str(dirs["rootfs"])),
            MountPolicy(destination="/data", source=str(dirs["data"])),
            MountPolicy(destination="/ro", source=str(dirs["ro"]), readonly=True),
        ],
        masked_paths=["/etc/shadow"],
    )
    result, fds = client.call("Gofer.Attach", args)
    assert result == {} and fds == []


def op(client: FdClient, method: str, path: str, creds: Creds = ROOT, **kw: Any) -> None:
    _, fds = client.call(method, PathOpArgs(cid="c1", path=path, creds=creds, **kw))
    assert fds == []


def op_errno(client: FdClient, method: str, path: str, creds: Creds = ROOT, **kw: Any) -> int | None:
    try:
        op(client, method, path, creds, **kw)
    except RemoteError as e:
        assert e.remote_code == ErrCode.OS_ERROR
        return e.errno
    return None


def open_fd(client: FdClient, path: str, flags: int, mode: int = 0o644, creds: Creds = ROOT) -> int:
    result, fds = client.call(
        "Gofer.Open", OpenArgs(cid="c1", path=path, flags=flags, mode=mode, creds=creds), OpenResult
    )
    assert isinstance(result, OpenResult) and len(fds) == 1
    return fds[0]


def test_attach_open_write_through_the_fd(gofer: tuple[ServiceProcess, FdClient], dirs: dict[str, Path]) -> None:
    _, client = gofer
    attach(client, dirs)
    fd = open_fd(client, "/pub/hello", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, USER)
    try:
        assert os.write(fd, b"written by the program") == 22
    finally:
        os.close(fd)
    host = dirs["rootfs"] / "pub" / "hello"
    assert host.read_bytes() == b"written by the program"
    st = host.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640)
    # ".." never climbs out of the mount a path starts in.
    fd = open_fd(client, "/data/../../x", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    assert (dirs["data"] / "x").exists()


def test_path_ops_and_their_errnos(gofer: tuple[ServiceProcess, FdClient], dirs: dict[str, Path]) -> None:
    _, client = gofer
    attach(client, dirs)
    op(client, "Gofer.Mkdir", "/pub/d", USER, mode=0o750)
    op(client, "Gofer.Symlink", "/pub/d/ln", USER, other="/etc/passwd")
    op(client, "Gofer.Rename", "/pub/d", USER, other="/pub/e")
    op(client, "Gofer.Chmod", "/pub/e", USER, mode=0o700)
    assert stat.S_IMODE((dirs["rootfs"] / "pub" / "e").stat().st_mode) == 0o700
    assert os.readlink(dirs["rootfs"] / "pub" / "e" / "ln") == "/etc/passwd"
    op(client, "Gofer.Access", "/pub/e/ln", USER, mode=os.R_OK)
    op(client, "Gofer.Unlink", "/pub/e/ln", USER)
    op(client, "Gofer.Rmdir", "/pub/e", USER)
    assert op_errno(client, "Gofer.Mkdir", "/ro/d", mode=0o755) == errno.EROFS
    assert op_errno(client, "Gofer.Truncate", "/ro/f", length=0) == errno.EROFS
    assert op_errno(client, "Gofer.Unlink", "/etc/passwd", USER) == errno.EACCES
    assert op_errno(client, "Gofer.Rmdir", "/..") == errno.ENOTEMPTY
    assert op_errno(client, "Gofer.Rename", "/data", other="/x") == errno.EBUSY
    assert op_errno(client, "Gofer.Link", "/data/x", other="/etc/passwd") == errno.EXDEV
    assert op_errno(client, "Gofer.Mknod", "/pub/dev", mode=stat.S_IFCHR | 0o666, dev=0x103) == errno.EPERM
    assert op_errno(client, "Gofer.Chmod", "/etc/shadow", mode=0o777) == errno.EACCES
    with pytest.raises(RemoteError) as e:
        open_fd(client, "/etc/passwd", os.O_WRONLY, creds=USER)
    assert e.value.errno == errno.EACCES
    with pytest.raises(RemoteError) as e:
        open_fd(client, "/ro/f", os.O_RDWR)
    assert e.value.errno == errno.EROFS
    assert (dirs["ro"] / "f").read_text() == "read-only\n"


def raw_call(client: FdClient, method: str, args: object) -> RemoteError:
    with pytest.raises(RemoteError) as e:
        client.call(method, args)
    return e.value


def test_malformed_requests_keep_the_service_alive(
    gofer: tuple[ServiceProcess, FdClient], dirs: dict[str, Path], run_dir: Path
) -> None:
    sp, client = gofer
    attach(client, dirs)
    good = {"cid": "c1", "path": "/pub/x", "creds": {"uid": 0, "gid": 0, "groups": []}}
    for method, args, code in [
        ("Gofer.Mkdir", {"cid": "c1"}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Mkdir", {**good, "mode": "0755"}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Mkdir", {**good, "bogus": 1}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Mkdir", {**good, "path": "relative"}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Mkdir", {**good, "path": "/pub/nul\0"}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Mkdir", {**good, "creds": {"uid": -1, "gid": 0, "groups": []}}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Mkdir", {**good, "cid": "nope"}, ErrCode.NOT_FOUND),
        ("Gofer.Open", {**good, "flags": 1 << 70}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Attach", {"cid": "c3", "mounts": []}, ErrCode.INVALID_ARGUMENT),
        ("Gofer.Attach", {"cid": "c2", "mounts": [{"destination": "/", "source": "/nonexistent"}]}, ErrCode.OS_ERROR),
        ("Gofer.Detach", {"cid": "nope"}, ErrCode.NOT_FOUND),
        ("Gofer.Nope", {}, ErrCode.UNKNOWN_METHOD),
    ]:
        assert raw_call(client, method, args).remote_code == code, (method, args)
    # Attaching the same container twice is a conflict.
    assert (
        raw_call(
            client,
            "Gofer.Attach",
            AttachArgs(cid="c1", mounts=[MountPolicy(destination="/", source=str(dirs["rootfs"]))]),
        ).remote_code
        == ErrCode.CONFLICT
    )
    # Files sent to a method that takes none are refused and closed.
    r, w = os.pipe()
    try:
        with pytest.raises(RemoteError) as e:
            client.call("Gofer.Mkdir", {**good, "mode": 0o755}, fds=[r])
        assert e.value.remote_code == ErrCode.INVALID_ARGUMENT
    finally:
        os.close(r)
        os.close(w)
    assert sp.ping().pid == sp.pid
    op(client, "Gofer.Mkdir", "/pub/x", mode=0o755)
    assert (dirs["rootfs"] / "pub" / "x").is_dir()


def test_detach_and_no_leaked_fds(gofer: tuple[ServiceProcess, FdClient], dirs: dict[str, Path]) -> None:
    sp, client = gofer
    baseline = settled_fd_count(sp.pid)
    attach(client, dirs)
    for i in range(20):
        fd = open_fd(client, f"/pub/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.close(fd)
        op(client, "Gofer.Truncate", f"/pub/f{i}", length=3)
        op_errno(client, "Gofer.Unlink", "/missing/x")
    _, fds = client.call("Gofer.Detach", DetachArgs(cid="c1"))
    assert fds == []
    with pytest.raises(RemoteError) as e:
        open_fd(client, "/pub/f0", os.O_WRONLY)
    assert e.value.remote_code == ErrCode.NOT_FOUND
    assert settled_fd_count(sp.pid) == baseline
    # Attach again after detach works.
    attach(client, dirs)
    with FdClient(RunDir.at(sp.run_dir).socket_path("gofer")) as other:
        result, _ = other.call(SYSTEM_PING, None, PingResult)
        assert result.service == "gofer"
