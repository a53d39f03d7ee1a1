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

import posixpath

from common.messages.gofer import AttachArgs, MountPolicy
from common.messages.spec import ContainerSpec

#: AT_FDCWD as the kernel passes it in a 64-bit argument register (an int, sign-extended).
AT_FDCWD = -100


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
    """path taken relative to base as one clean absolute container path.

    ".." is folded lexically, so that the sentry's choice of mount and the gofer's agree (the
    gofer never lets ".." leave the mount a path starts in); base, a task's cwd or an open
    directory, is canonical already.
    """
    full = path if path.startswith("/") else base.rstrip("/") + "/" + path
    head, _, last = full.rstrip("/").rpartition("/")
    if last in (".", ".."):
        # rmdir("a/..") must fail as the kernel fails it, not remove "a"'s parent: the final
        # "." or ".." goes to the gofer as it is, which answers with the kernel's errno.
        return _clean(head).rstrip("/") + "/" + last
    clean = _clean(full)
    if path.endswith("/") and clean != "/":
        clean += "/"  # a trailing slash insists on a directory (ENOTDIR otherwise)
    return clean


def _clean(path: str) -> str:
    # normpath keeps a leading "//", which POSIX leaves to the implementation; Linux means "/".
    return "/" + posixpath.normpath("/" + path).lstrip("/")
