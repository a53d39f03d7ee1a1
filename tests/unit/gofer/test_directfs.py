"""services.sentry.directfs: the sentry runs these operations itself on the mount fds a gofer donated, with
the gofer's policy and errnos, and closes what it holds."""

from __future__ import annotations

import errno
import os

from common.messages.gofer import MountFdsArgs, OpenArgs, PathOpArgs
from services.gofer.control import Gofer
from services.gofer.mounts import MountTable
from services.sentry.directfs import DirectFs
from tests.conftest import open_fds
from tests.unit.gofer.conftest import CID, ROOT, Tree, attach_args

WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def test_file_calls_run_on_the_donated_mounts(table: MountTable, tree: Tree) -> None:
    before = open_fds()
    gofer = Gofer(table)
    args = attach_args(tree)
    gofer.attach(args)
    direct = DirectFs()
    direct.adopt(args, gofer.mount_fds(MountFdsArgs(cid=CID)).fds)
    table.close_all()  # the gofer went away: the donated clones stay open
    assert direct.serves(CID) and not direct.serves("other")

    result, fds, err = direct.call(
        "Gofer.Open", OpenArgs(cid=CID, path="/dir/new", flags=WRITE, mode=0o600, creds=ROOT)
    )
    assert (result, err, len(fds)) == ({}, 0, 1)
    os.write(fds[0], b"written\n")
    os.close(fds[0])
    assert (tree.rootfs / "dir" / "new").read_text() == "written\n"

    # The policy is the gofer's: a read-only mount refuses writes, a masked path is refused.
    _, fds, err = direct.call("Gofer.Open", OpenArgs(cid=CID, path="/ro/x", flags=WRITE, creds=ROOT))
    assert (fds, err) == ([], errno.EROFS)
    _, _, err = direct.call("Gofer.Mkdir", PathOpArgs(cid=CID, path="/masked", creds=ROOT, mode=0o755))
    assert err == errno.EACCES
    assert direct.call("Gofer.Nonesuch", None)[2] == errno.ENOSYS

    direct.drop(CID)
    assert not direct.serves(CID)
    direct.close()
    assert open_fds() == before
