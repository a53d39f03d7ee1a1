"""Path resolution inside one mount: openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).

Every path the gofer acts on is resolved by the kernel relative to a mount's root fd with
RESOLVE_IN_ROOT: "..", absolute symlinks and escaping relative symlinks stay inside that
root, as they would for a process chrooted there, and magic links (/proc/PID/root, /proc/PID/fd/N,
/proc/self/cwd, ...) fail with ELOOP. A plain openat(dirfd, path) escapes in every one of those
cases, so nothing here or in ops.py ever hands a multi-component path to an *at call.

Operations on a directory entry (mkdir, unlink, rename, ...) resolve the parent directory
in root and pass the kernel only the last component (``open_parent``). That component is
never "", "." or "..": ``rmdir(rootfd, "..")`` would act on the host directory above the
rootfs. Each such name gets the errno Linux gives for it instead (``DotErrnos``).
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from services.gofer.syscalls import (
    RESOLVE_BENEATH,
    RESOLVE_CACHED,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_XDEV,
    openat2,
)

#: What every resolution uses.
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
#: openat2 answers EAGAIN (and, with scoped lookups, EXDEV) when a rename or mount raced
#: with a ".." step; the lookup is simply retried this many times.
RETRIES = 16

_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class DotErrnos(NamedTuple):
    """The errno an entry operation gets for a last component that is not a name."""

    #: The mount root itself: the path was "/" or a mount point ("/data").
    root: int
    #: ".".
    dot: int
    #: "..".
    dotdot: int


#: filename_create (mkdir, mknod, symlink, link's new name): EEXIST for all three.
CREATE = DotErrnos(errno.EEXIST, errno.EEXIST, errno.EEXIST)
#: rmdir: "/" and mount points are busy, "." is invalid, ".." is not empty.
RMDIR = DotErrnos(errno.EBUSY, errno.EINVAL, errno.ENOTEMPTY)
#: unlink: a directory every time.
UNLINK = DotErrnos(errno.EISDIR, errno.EISDIR, errno.EISDIR)
#: rename, either side.
RENAME = DotErrnos(errno.EBUSY, errno.EBUSY, errno.EBUSY)
#: rename's new name with RENAME_NOREPLACE: it exists.
RENAME_NOREPLACE_NEW = DotErrnos(errno.EEXIST, errno.EEXIST, errno.EEXIST)


def open_in(mount_fd: int, rel: str, flags: int, mode: int = 0, resolve: int = IN_ROOT) -> int:
    """Open rel (relative to the mount root; "" is the root) inside the mount. Caller owns the fd.

    O_CLOEXEC is always added. EAGAIN from a racing rename is retried; so is EXDEV unless
    the caller asked for RESOLVE_BENEATH or RESOLVE_NO_XDEV, where it is the answer. After the
    retries EAGAIN stays EAGAIN (the program may retry) and EXDEV, which open(2) never returns,
    becomes ENOENT: the directory walked through moved out of the root.
    """
    path = rel or "."
    flags |= os.O_CLOEXEC
    exdev_is_answer = resolve & (RESOLVE_BENEATH | RESOLVE_NO_XDEV)
    tries = 1 if resolve & RESOLVE_CACHED else RETRIES
    while True:
        try:
            return openat2(mount_fd, path, flags, mode, resolve)
        except OSError as e:
            tries -= 1
            if e.errno == errno.EAGAIN and tries > 0:
                continue
            if e.errno == errno.EXDEV and not exdev_is_answer:
                if tries > 0:
                    continue
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), rel) from None
            raise


def split(rel: str) -> tuple[str, str, bool]:
    """(parent, last component, had a trailing slash) of a mount-relative path, lexically."""
    stripped = rel.rstrip("/")
    head, _, base = stripped.rpartition("/")
    return head, base, len(stripped) != len(rel)


def check_name(base: str, dots: DotErrnos) -> None:
    """Raise the op's errno if base is "", "." or ".." (not a name an *at call may get)."""
    if base in {"", ".", ".."}:
        err = dots.root if base == "" else dots.dot if base == "." else dots.dotdot
        raise OSError(err, os.strerror(err), base)


def open_parent(mount_fd: int, rel: str, dots: DotErrnos) -> tuple[int, str]:
    """Resolve rel's parent directory in root: (O_PATH dir fd the caller owns, last component).

    The component is a single name, never "", "." or ".." (those raise ``dots``' errno). A
    trailing slash is kept on it ("dir/"): the entry calls (mkdir, unlink, rmdir, rename,
    mknod, symlink, link's new name) never follow their last component, and the kernel then
    gives Linux's errnos for it (ENOTDIR, EISDIR, ...). Calls that would follow it must not
    use this; they open the full path with open_in.
    """
    head, base, slash = split(rel)
    check_name(base, dots)
    fd = open_in(mount_fd, head, _DIR_PATH)
    return fd, base + "/" if slash else base
