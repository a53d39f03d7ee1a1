"""The sentry's view of a container's mount table: which paths the gofer serves.

The rootfs and the bind mounts are the gofer's: the program sees them read-only, and every
write there is done by the gofer. Every other mount (proc, sysfs, the /dev tmpfs, devpts,
mqueue, /dev/shm and other tmpfs) belongs to the kernel: a write there is continued, since the
kernel enforces the same policy on its own mounts, and a path swapped after the check can only
reach a read-only view.

Classification is lexical (longest mount destination that prefixes the normalised path); the
gofer resolves the real path inside the mount with RESOLVE_IN_ROOT, so a symlink or ".." never
leaves it.
"""

from __future__ import annotations

import errno
import os
import posixpath

from common.messages.gofer import AttachArgs, MountPolicy
from common.messages.spec import ContainerSpec
from common.openat2 import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    openat2,
)
from services.sentry.taskmem import TaskGone

#: AT_FDCWD as the kernel passes it in a 64-bit argument register (an int, sign-extended).
AT_FDCWD = -100

#: The openat2 RESOLVE_* flags that restrict how a program's path may be walked.
SCOPING_FLAGS = RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_IN_ROOT


def attach_args(cid: str, spec: ContainerSpec) -> AttachArgs:
    """What the gofer must open for spec: the rootfs, then the bind mounts, with their policy."""
    mounts = [MountPolicy(destination="/", source=spec.rootfs, readonly=spec.rootfs_readonly)]
    for m in spec.mounts:
        if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            mounts.append(MountPolicy(destination=m.destination, source=m.source, readonly="ro" in m.options))
    return AttachArgs(cid=cid, mounts=mounts, masked_paths=list(spec.masked_paths))


class MountTable:
    """Container path -> whether the gofer serves it."""

    __slots__ = ("_gofer", "_kernel")

    def __init__(self, spec: ContainerSpec) -> None:
        gofer = {"/"}
        kernel = set()
        for m in spec.mounts:
            dest = posixpath.normpath(m.destination)
            if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
                gofer.add(dest)
                kernel.discard(dest)
            else:
                kernel.add(dest)
                gofer.discard(dest)
        self._kernel = frozenset(kernel)
        self._gofer = frozenset(gofer)

    def served_by_gofer(self, path: str) -> bool:
        """True when the mount that holds path (absolute container path) is the gofer's."""
        probe = posixpath.normpath(path)
        if probe.startswith("//"):
            probe = probe[1:]
        while True:
            if probe in self._kernel:
                return False
            if probe in self._gofer:
                return True
            probe = posixpath.dirname(probe)


def join(base: str, path: str) -> str:
    """path taken relative to base (a canonical container path), nothing resolved yet."""
    if path.startswith("/"):
        return path
    return base.rstrip("/") + "/" + path


def resolve_in_task(pid: int, path: str, follow: bool) -> str:
    """The container path the task's kernel would reach for path (absolute), as the gofer names it.

    The parent directory is resolved by the kernel in the task's own view (openat2 under
    /proc/PID/root with RESOLVE_IN_ROOT), so symlinks, ".." and mount points count exactly as
    they do for the task; with follow, a final symlink too. What does not resolve (a missing
    directory, a magic link) is left as it is: the gofer or the kernel then answers for it. The
    result only names the mount and the path: the gofer resolves it again, confined to the mount.
    """
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    parent, _, last = stripped.rpartition("/")
    trailing = "/" if path.endswith("/") else ""
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise TaskGone(pid) from None
    try:
        if follow and last not in (".", ".."):
            resolved = _resolved(root, stripped, os.O_PATH)
            if resolved is not None:
                return resolved
        where = _resolved(root, parent or "/", os.O_PATH | os.O_DIRECTORY)
        if where is None:
            return path
        return where.rstrip("/") + "/" + last + trailing
    finally:
        os.close(root)


def _resolved(root: int, path: str, flags: int) -> str | None:
    try:
        fd = openat2(root, path, flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError:
        return None
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    # A file on one of the task's mounts reads as its container path; anything else (a deleted
    # directory, a mount outside its view) is not a path to act on.
    return name if name.startswith("/") and not name.endswith(" (deleted)") else None


def resolve_scoped(pid: int, dirfd: int, path: str, follow: bool, resolve: int) -> str:
    """As resolve_in_task, for an openat2 whose RESOLVE_* flags restrict the walk: the kernel
    walks path from the task's own dirfd (or cwd, or root) with the program's flags, so EXDEV,
    ELOOP and the rest are raised exactly where the task's openat2 would raise them.

    A relative walk without BENEATH or IN_ROOT that climbs above the task's root by ".." is the
    one case told apart from the task's kernel: the sentry is not chrooted there, so the walk
    fails (ENOENT or EXDEV) where the task's would stay at its root.
    """
    flags = resolve & SCOPING_FLAGS
    if path.startswith("/") and not flags & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
        base, flags = f"/proc/{pid}/root", flags | RESOLVE_IN_ROOT  # the task's root is its "/"
    elif dirfd == AT_FDCWD:
        base = f"/proc/{pid}/cwd"
    else:
        base = f"/proc/{pid}/fd/{dirfd}"
    try:
        start = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            raise TaskGone(pid) from None
        raise OSError(errno.EBADF, "not an open fd of the task", dirfd) from None
    try:
        stripped = path.rstrip("/")
        parent, _, last = stripped.rpartition("/")
        if follow and last not in (".", ".."):
            try:
                return _walked(start, stripped, os.O_PATH, flags)
            except FileNotFoundError:
                pass  # the file is to be created: its parent must still pass
        if not stripped:
            return "/" if path.startswith("/") else _walked(start, ".", os.O_PATH, flags)
        try:
            where = _walked(start, parent or "/" if path.startswith("/") else parent or ".", _DIR, flags)
        except FileNotFoundError:
            # Nothing more to check here: a missing directory, or a /proc/self link that names
            # the sentry rather than the task. The path as written is left to the mount's owner.
            return join(_walked(start, ".", _DIR, 0), path.lstrip("/"))
        return where.rstrip("/") + "/" + last + ("/" if path.endswith("/") else "")
    finally:
        os.close(start)


_DIR = os.O_PATH | os.O_DIRECTORY


def _walked(start: int, path: str, oflags: int, resolve: int) -> str:
    """The container path openat2 reaches from start, raising its errno."""
    fd = openat2(start, path, oflags | os.O_CLOEXEC, 0, resolve)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
