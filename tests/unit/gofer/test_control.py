"""services.gofer.control: the Gofer domain as the registry sees it, and its errors."""

from __future__ import annotations

import os

import pytest

from common.errors import ConflictError, NotFound
from common.messages.gofer import DetachArgs, OpenArgs, PathOpArgs
from common.rpc import Registry
from services.gofer.control import Gofer
from services.gofer.mounts import MountTable
from tests.unit.gofer.conftest import ROOT, Tree, attach_args

METHODS = [
    "Access",
    "Attach",
    "Chmod",
    "Chown",
    "Detach",
    "Link",
    "Mkdir",
    "Mknod",
    "MountFds",
    "Open",
    "RemoveXattr",
    "Rename",
    "Rmdir",
    "SetXattr",
    "Symlink",
    "Truncate",
    "Unlink",
    "Utimens",
]


def test_every_method_registers() -> None:
    registry = Registry()
    registry.register(Gofer(MountTable()))
    assert registry.names() == [f"Gofer.{m}" for m in METHODS]


def test_attach_twice_conflicts_and_unknown_container_is_not_found(table: MountTable, tree: Tree) -> None:
    g = Gofer(table)
    g.attach(attach_args(tree))
    with pytest.raises(ConflictError):
        g.attach(attach_args(tree))
    with pytest.raises(NotFound):
        g.mkdir(PathOpArgs(cid="other", path="/x", creds=ROOT, mode=0o755))
    with pytest.raises(NotFound):
        g.open(OpenArgs(cid="other", path="/x", flags=os.O_RDONLY, creds=ROOT))
    g.detach(DetachArgs(cid="c1"))
    with pytest.raises(NotFound):
        g.detach(DetachArgs(cid="c1"))
    with pytest.raises(NotFound):
        g.open(OpenArgs(cid="c1", path="/dir/file", flags=os.O_RDONLY, creds=ROOT))
    g.attach(attach_args(tree))
    result = g.open(OpenArgs(cid="c1", path="/dir/file", flags=os.O_RDONLY, creds=ROOT))
    assert os.read(result.fds[0], 100) == b"in the rootfs\n"
    os.close(result.fds[0])
