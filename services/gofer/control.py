"""The Gofer domain: Gofer.Attach, Detach, MountFds, Open and the path operations, over the fd channel.

Each call looks up the container's mounts, takes on the caller's file-system credentials
(creds.py), runs the operation (ops.py, attrs.py) and puts the gofer's own identity back. A
failed operation raises OSError, which reaches the client as an error carrying its errno: the
errno the program should see. Open returns the opened file in OpenResult.fds; the dispatcher
sends it as SCM_RIGHTS and closes the gofer's copy.

The sentry runs these same operations itself (services/sentry/directfs.py, gVisor's directfs)
on the mount fds MountFds donates: the gofer still opens every mount and sets its policy on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from common import fdpass
from common.errors import InvalidArgument
from common.messages.gofer import (
    AttachArgs,
    DetachArgs,
    MountFdsArgs,
    MountFdsResult,
    OpenArgs,
    OpenResult,
    PathOpArgs,
)
from services.gofer import attrs, creds, ops
from services.gofer.mounts import ContainerMounts, MountTable

A = TypeVar("A", OpenArgs, PathOpArgs)
R = TypeVar("R")


def _as_caller(table: MountTable, op: Callable[[ContainerMounts, A], R], args: A) -> R:
    mounts = table.get(args.cid)
    caller = args.creds
    creds.validate(caller)
    switch = not creds.is_base(caller)
    if switch:
        creds.become(caller)
    try:
        return op(mounts, args)
    except (ValueError, OverflowError) as e:  # an embedded NUL in a name, a number too big for C
        raise InvalidArgument(f"{args.path!r}: {e}") from None
    finally:
        if switch:
            creds.restore(caller)


class Gofer:
    """The container file server (gVisor's gofer, lisafs's role)."""

    domain = "Gofer"

    def __init__(self, table: MountTable) -> None:
        self._table = table

    def attach(self, args: AttachArgs) -> None:
        """Open a container's rootfs and bind mounts; ConflictError if attached already."""
        self._table.attach(args)

    def detach(self, args: DetachArgs) -> None:
        """Close a container's mounts; NotFound if not attached."""
        self._table.detach(args.cid)

    def mount_fds(self, args: MountFdsArgs) -> MountFdsResult:
        """A dup of each of a container's mount fds, for a sentry that runs these same
        operations itself on them (directfs); NotFound if it is not attached."""
        fds: list[int] = []
        try:
            for mount in self._table.get(args.cid).mounts:
                fds.append(os.dup(mount.fd))
        except BaseException:
            fdpass.close_all(fds)
            raise
        # The Dispatcher sends them and closes ours.
        return MountFdsResult(fds=fds)

    def open(self, args: OpenArgs) -> OpenResult:
        """Open (maybe create or truncate) a file; the result carries its fd."""
        return OpenResult(fds=[_as_caller(self._table, ops.open_file, args)])

    def mkdir(self, args: PathOpArgs) -> None:
        """mkdir(path, mode)."""
        _as_caller(self._table, ops.mkdir, args)

    def mknod(self, args: PathOpArgs) -> None:
        """mknod(path, mode): regular file, FIFO or socket (devices: EPERM)."""
        _as_caller(self._table, ops.mknod, args)

    def unlink(self, args: PathOpArgs) -> None:
        """unlink(path)."""
        _as_caller(self._table, ops.unlink, args)

    def rmdir(self, args: PathOpArgs) -> None:
        """rmdir(path)."""
        _as_caller(self._table, ops.rmdir, args)

    def symlink(self, args: PathOpArgs) -> None:
        """symlink(other, path): other is stored as given."""
        _as_caller(self._table, ops.symlink, args)

    def link(self, args: PathOpArgs) -> None:
        """linkat(other, path, follow ? AT_SYMLINK_FOLLOW : 0)."""
        _as_caller(self._table, ops.link, args)

    def rename(self, args: PathOpArgs) -> None:
        """renameat2(path, other, flags)."""
        _as_caller(self._table, ops.rename, args)

    def chmod(self, args: PathOpArgs) -> None:
        """chmod(path, mode); follow=False: fchmodat(AT_SYMLINK_NOFOLLOW)."""
        _as_caller(self._table, attrs.chmod, args)

    def chown(self, args: PathOpArgs) -> None:
        """chown(path, uid, gid); follow=False: lchown."""
        _as_caller(self._table, attrs.chown, args)

    def truncate(self, args: PathOpArgs) -> None:
        """truncate(path, length)."""
        _as_caller(self._table, attrs.truncate, args)

    def utimens(self, args: PathOpArgs) -> None:
        """utimensat(path, times_ns); follow=False: AT_SYMLINK_NOFOLLOW."""
        _as_caller(self._table, attrs.utimens, args)

    def set_xattr(self, args: PathOpArgs) -> None:
        """setxattr(path, name, value, flags); follow=False: lsetxattr."""
        _as_caller(self._table, attrs.set_xattr, args)

    def remove_xattr(self, args: PathOpArgs) -> None:
        """removexattr(path, name); follow=False: lremovexattr."""
        _as_caller(self._table, attrs.remove_xattr, args)

    def access(self, args: PathOpArgs) -> None:
        """faccessat(path, mode, AT_EACCESS) with the caller's credentials."""
        _as_caller(self._table, attrs.access, args)
