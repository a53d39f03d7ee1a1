"""services.gofer.mounts: mount clones, longest-prefix lookup, masked paths, the table."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import ConflictError, InvalidArgument, NotFound
from common.messages.gofer import AttachArgs, MountPolicy
from services.gofer.mounts import ContainerMounts, MountTable
from tests.unit.gofer.conftest import Tree, attach_args


@pytest.fixture
def mounts(tree: Tree) -> Iterator[ContainerMounts]:
    m = ContainerMounts(attach_args(tree))
    yield m
    m.close()


@pytest.mark.parametrize(
    ("path", "dest", "rel"),
    [
        ("/", "/", ""),
        ("/etc/passwd", "/", "etc/passwd"),
        ("/data", "/data", ""),
        ("/data/", "/data", ""),
        ("/data/d", "/data", "d"),
        ("//data//d/", "/data", "d/"),
        ("/./data/./d", "/data", "./d"),
        ("/data/.", "/data", "."),
        ("/data/..", "/data", ".."),
        ("/data/../etc", "/data", "../etc"),
        ("/datafile", "/", "datafile"),
        ("/../data/d", "/", "../data/d"),
        ("/ro/f", "/ro", "f"),
        ("/dir/../ro/f", "/", "dir/../ro/f"),
    ],
)
def test_locate_longest_prefix_on_components_without_resolving_dotdot(
    mounts: ContainerMounts, path: str, dest: str, rel: str
) -> None:
    mount, got = mounts.locate(path)
    assert (mount.destination, got) == (dest, rel)


def test_nested_mount_wins_and_later_mount_shadows(tree: Tree, tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    args = AttachArgs(
        cid="n",
        mounts=[
            MountPolicy(destination="/", source=str(tree.rootfs)),
            MountPolicy(destination="/data", source=str(tree.data)),
            MountPolicy(destination="/data/sub/inner", source=str(inner)),
            MountPolicy(destination="/data", source=str(tree.ro)),
        ],
    )
    m = ContainerMounts(args)
    try:
        assert m.locate("/data/sub/inner/x")[0].source == str(inner)
        assert m.locate("/data/sub/x")[0].source == str(tree.ro)
    finally:
        m.close()


@pytest.mark.parametrize(
    ("path", "write", "err"),
    [
        ("/masked", True, errno.EACCES),
        ("/masked/", False, errno.EACCES),
        ("/masked/inside", True, errno.EROFS),
        ("/masked/inside", False, errno.ENOENT),
        ("/dir/../masked/x", True, errno.EROFS),
        ("//proc/./kcore", False, errno.EACCES),
        ("/data/../masked", True, errno.EACCES),
    ],
)
def test_masked_paths_lexically(mounts: ContainerMounts, path: str, write: bool, err: int) -> None:
    with pytest.raises(OSError) as e:
        mounts.locate(path, write)
    assert e.value.errno == err


@pytest.mark.parametrize("path", ["/maskedx", "/proc/kcorex", "/proc", "/dir/masked"])
def test_not_masked(mounts: ContainerMounts, path: str) -> None:
    mounts.locate(path)


@pytest.mark.parametrize("path", ["", "relative", "/nul\0byte"])
def test_locate_refuses_non_absolute(mounts: ContainerMounts, path: str) -> None:
    with pytest.raises(InvalidArgument):
        mounts.locate(path)


def test_mount_clones_are_nodev_nosuid_and_readonly_as_asked(mounts: ContainerMounts) -> None:
    by_dest = {m.destination: m for m in mounts.mounts}
    for dest, m in by_dest.items():
        flags = os.fstatvfs(m.fd).f_flag
        assert flags & os.ST_NODEV and flags & os.ST_NOSUID
        assert bool(flags & os.ST_RDONLY) == (dest == "/ro")
    # The host directories themselves stay as they were.
    assert not os.statvfs(by_dest["/ro"].source).f_flag & os.ST_RDONLY


def test_close_is_idempotent_and_closes_every_fd(tree: Tree) -> None:
    m = ContainerMounts(attach_args(tree))
    fds = [mt.fd for mt in m.mounts]
    m.close()
    m.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


@pytest.mark.parametrize(
    "mounts_",
    [
        [],
        [MountPolicy(destination="/data", source="/tmp")],
        [MountPolicy(destination="relative", source="/tmp")],
        [MountPolicy(destination="/", source="relative")],
    ],
)
def test_attach_validates(mounts_: list[MountPolicy]) -> None:
    with pytest.raises(InvalidArgument):
        ContainerMounts(AttachArgs(cid="x", mounts=mounts_))


def test_attach_refuses_masking_root(tree: Tree) -> None:
    with pytest.raises(InvalidArgument):
        ContainerMounts(AttachArgs(cid="x", mounts=attach_args(tree).mounts, masked_paths=["/"]))


def test_attach_failure_closes_what_it_opened(tree: Tree, tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    args = AttachArgs(
        cid="x",
        mounts=[
            MountPolicy(destination="/", source=str(tree.rootfs)),
            MountPolicy(destination="/missing", source=str(tmp_path / "missing")),
        ],
    )
    with pytest.raises(OSError) as e:
        ContainerMounts(args)
    assert e.value.errno == errno.ENOENT
    (tmp_path / "file").write_text("")
    args = AttachArgs(cid="x", mounts=[MountPolicy(destination="/", source=str(tmp_path / "file"))])
    with pytest.raises(OSError) as e:
        ContainerMounts(args)
    assert e.value.errno == errno.ENOTDIR
    assert set(os.listdir("/proc/self/fd")) == before


def test_table_attach_conflict_detach_notfound(tree: Tree) -> None:
    table = MountTable()
    try:
        table.attach(attach_args(tree))
        with pytest.raises(ConflictError):
            table.attach(attach_args(tree))
        assert table.get("c1").cid == "c1"
        table.detach("c1")
        with pytest.raises(NotFound):
            table.detach("c1")
        with pytest.raises(NotFound):
            table.get("c1")
        with pytest.raises(InvalidArgument):
            table.attach(attach_args(tree, cid=""))
        table.attach(attach_args(tree, cid="a"))
        table.attach(attach_args(tree, cid="b"))
    finally:
        table.close_all()
    with pytest.raises(NotFound):
        table.get("a")
