"""A container's mounts as the gofer sees them, and which one a container path falls under.

At Attach each MountPolicy.source becomes a *detached clone* of its host mount
(open_tree(OPEN_TREE_CLONE), not recursive: submounts under the source are not served; the
directories beneath them are) with MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID, plus
MOUNT_ATTR_RDONLY for a read-only policy. The kernel then enforces the policy with exactly
Linux's semantics and errnos: every write to a read-only mount fails EROFS (after EEXIST or
ENOENT where Linux checks those first, as ``mkdir -p`` relies on), and a device node found in a
rootfs can never be opened (EACCES), so a program cannot reach a host device (or arm a
watchdog) through a node in its image. The clone's root is also a dead end for "..", under
RESOLVE_IN_ROOT's own wall. The clone fd is an O_PATH directory fd; ContainerMounts owns
them all until ``close`` (Detach, or the service's clean-up through MountTable.close_all).
Files opened beneath keep their clone alive after that.

A container path is served by the mount whose destination is its longest prefix, matched on
components, lexically: "." and empty components are skipped, ".." ends the match. The rest is
resolved by openat2(RESOLVE_IN_ROOT) inside that one mount, so ".." and symlinks never leave
the mount a path starts in: each mount is its own root ("/data/../etc" is the data mount's
"etc"). Masked paths (OCI maskedPaths) are matched on the lexically normalised path; see
``MASKED_ERRNO``.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
from dataclasses import dataclass, field

from common.errors import ConflictError, InvalidArgument, NotFound
from common.messages.gofer import AttachArgs, MountPolicy
from services.gofer.syscalls import (
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    mount_setattr,
    open_tree_clone,
)

log = logging.getLogger(__name__)

#: A masked path itself: EACCES, the program may not touch it (runc's /dev/null bind gives it
#: nothing to write to). Anything beneath a masked path behaves as in runc's empty read-only
#: tmpfs: EROFS for a change, ENOENT for a lookup.
MASKED_ERRNO = errno.EACCES
UNDER_MASKED_WRITE_ERRNO = errno.EROFS
UNDER_MASKED_LOOKUP_ERRNO = errno.ENOENT


@dataclass(slots=True, eq=False)
class Mount:
    """One served mount."""

    #: Container path (clean, absolute).
    destination: str
    #: Host directory it comes from.
    source: str
    #: Mounted read-only (enforced by the kernel on fd's mount).
    readonly: bool
    #: O_PATH fd of the root of the detached clone; owned by the ContainerMounts.
    fd: int


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    mount: Mount | None = None


def _clean(path: str, what: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise InvalidArgument(f"{what} {path!r} is not an absolute path")
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/")


def _open_mount(policy: MountPolicy) -> int:
    fd = open_tree_clone(policy.source)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), policy.source)
        want = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (MOUNT_ATTR_RDONLY if policy.readonly else 0)
        mount_setattr(fd, want)
        flags = os.fstatvfs(fd).f_flag
        need = os.ST_NODEV | os.ST_NOSUID | (os.ST_RDONLY if policy.readonly else 0)
        if flags & need != need:  # never seen; the policy must not rest on a silent failure
            raise OSError(errno.EPERM, "mount attributes did not take", policy.source)
    except BaseException:
        os.close(fd)
        raise
    return fd


class ContainerMounts:
    """The mounts and masked paths of one container. Owns the mount fds until close()."""

    def __init__(self, args: AttachArgs, fds: list[int] | None = None) -> None:
        """Open args' mounts; or, given fds (owned from here on, one per mount, in order: the
        clones a gofer opened and donated), use those."""
        self.cid = args.cid
        self.mounts: list[Mount] = []
        self._tree = _Node()
        todo = list(fds) if fds is not None else None
        try:
            if todo is not None and len(todo) != len(args.mounts):
                raise InvalidArgument(f"attach: {len(todo)} mount fds for {len(args.mounts)} mounts")
            if not args.mounts or _clean(args.mounts[0].destination, "destination") != "/":
                raise InvalidArgument("attach: the first mount must be the rootfs, at /")
            masked = {_clean(p, "masked path") for p in args.masked_paths}
            if "/" in masked:
                raise InvalidArgument("attach: cannot mask /")
            self._masked = frozenset(masked)
            for policy in args.mounts:
                dest = _clean(policy.destination, "destination")
                if not policy.source.startswith("/"):
                    raise InvalidArgument(f"attach: source {policy.source!r} is not an absolute path")
                fd = todo.pop(0) if todo is not None else _open_mount(policy)
                mount = Mount(dest, policy.source, policy.readonly, fd)
                self.mounts.append(mount)
                node = self._tree
                for part in dest.split("/"):
                    if part:
                        node = node.children.setdefault(part, _Node())
                node.mount = mount  # a later mount on the same destination shadows the earlier
        except BaseException:
            self.close()
            for fd in todo or ():
                os.close(fd)
            raise

    def close(self) -> None:
        """Close every mount fd (idempotent)."""
        for mount in self.mounts:
            if mount.fd >= 0:
                os.close(mount.fd)
                mount.fd = -1

    def locate(self, path: str, write: bool = True) -> tuple[Mount, str]:
        """(mount, path relative to its root) for a container path; refuses masked paths.

        ``write``: the operation would change something (for the errno under a masked path).
        """
        if path[:1] != "/" or "\0" in path:
            raise InvalidArgument(f"path {path!r} is not an absolute path")
        if self._masked:
            self._check_masked(path, write)
        comps = path.split("/")
        node = self._tree
        best = node.mount
        start = 1
        i = 1
        n = len(comps)
        while i < n:
            c = comps[i]
            i += 1
            if c in {"", "."}:
                continue
            child = node.children.get(c)
            if child is None:
                break
            node = child
            if node.mount is not None:
                best, start = node.mount, i
        while start < n and comps[start] == "":
            start += 1
        assert best is not None  # the root node always holds the rootfs
        return best, "/".join(comps[start:])

    def _check_masked(self, path: str, write: bool) -> None:
        p = posixpath.normpath(path)
        if p[:2] == "//":
            p = "/" + p.lstrip("/")
        masked = self._masked
        if p in masked:
            raise OSError(MASKED_ERRNO, os.strerror(MASKED_ERRNO), path)
        while (i := p.rfind("/")) > 0:
            p = p[:i]
            if p in masked:
                err = UNDER_MASKED_WRITE_ERRNO if write else UNDER_MASKED_LOOKUP_ERRNO
                raise OSError(err, os.strerror(err), path)


class MountTable:
    """Every attached container's mounts, by container id."""

    def __init__(self) -> None:
        self._containers: dict[str, ContainerMounts] = {}

    def attach(self, args: AttachArgs, fds: list[int] | None = None) -> ContainerMounts:
        """Open a container's mounts (or take fds: see ContainerMounts). ConflictError if it is
        attached already."""
        refusal: Exception | None = None
        if not args.cid:
            refusal = InvalidArgument("attach: empty container id")
        elif args.cid in self._containers:
            refusal = ConflictError(f"container {args.cid!r} is already attached")
        if refusal is not None:
            for fd in fds or ():
                os.close(fd)  # taken, as ContainerMounts would have
            raise refusal
        mounts = ContainerMounts(args, fds)
        self._containers[args.cid] = mounts
        log.info("attached %s: %s", args.cid, ", ".join(f"{m.destination}={m.source}" for m in mounts.mounts))
        return mounts

    def detach(self, cid: str) -> None:
        """Close a container's mounts. NotFound if it is not attached."""
        mounts = self._containers.pop(cid, None)
        if mounts is None:
            raise NotFound(f"container {cid!r} is not attached")
        mounts.close()
        log.info("detached %s", cid)

    def attached(self, cid: str) -> bool:
        """Whether cid's mounts are here."""
        return cid in self._containers

    def get(self, cid: str) -> ContainerMounts:
        """The mounts of an attached container, or NotFound."""
        mounts = self._containers.get(cid)
        if mounts is None:
            raise NotFound(f"container {cid!r} is not attached")
        return mounts

    def close_all(self) -> None:
        """Close every container's mounts (the service's clean-up)."""
        for mounts in self._containers.values():
            mounts.close()
        self._containers.clear()
