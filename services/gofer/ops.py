"""The operations on names: Open, Mkdir, Mknod, Unlink, Rmdir, Symlink, Link, Rename.

Each takes a container's mounts and the request, resolves its path(s) with resolve.py (inside
one mount, in root), and raises OSError with the errno the program should see. The caller
(control.py) has already taken on the task's credentials. Attribute operations are in attrs.py.

Open is one openat2(2) of the whole path with the program's flags: O_NOFOLLOW already means
"do not follow the last component" there (ELOOP), O_CREAT through a dangling symlink creates
its target inside the root, O_EXCL, O_TRUNC, O_DIRECTORY and O_TMPFILE are the kernel's own.
A program's O_PATH stays O_PATH (its other flags are dropped as open(2) ignores them), never an
fd with more access. The gofer adds O_NOCTTY, and O_NONBLOCK so that a FIFO never blocks
it (O_NONBLOCK is cleared again unless the program asked for it): opening a FIFO for writing
with no reader fails ENXIO, and a read end opened before any writer reads EOF at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator

from common.errors import InvalidArgument
from common.messages.gofer import OpenArgs, PathOpArgs
from services.gofer.mounts import ContainerMounts
from services.gofer.resolve import (
    CREATE,
    RENAME,
    RENAME_NOREPLACE_NEW,
    RMDIR,
    UNLINK,
    DotErrnos,
    check_name,
    open_in,
    open_parent,
    split,
)
from services.gofer.syscalls import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    renameat2,
)

#: open(2) flags the kernel knows (openat2 refuses unknown bits that open(2) ignores).
#: 0o100000 is the kernel's O_LARGEFILE (Python's is 0 on x86_64); openat2 implies it anyway.
_OPEN_FLAGS = (
    os.O_ACCMODE
    | os.O_CREAT
    | os.O_EXCL
    | os.O_NOCTTY
    | os.O_TRUNC
    | os.O_APPEND
    | os.O_NONBLOCK
    | os.O_SYNC
    | os.O_DSYNC
    | os.O_ASYNC
    | os.O_DIRECT
    | 0o100000
    | os.O_DIRECTORY
    | os.O_NOFOLLOW
    | os.O_NOATIME
    | os.O_TMPFILE
)
#: The flags open(2) honours beside O_PATH.
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
#: The file status flags F_SETFL sets, as the program asked for them at open.
_SETFL_FLAGS = os.O_APPEND | os.O_DIRECT | os.O_NOATIME
_DIR_PATH = os.O_PATH | os.O_DIRECTORY
_ALWAYS = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_RENAME_FLAGS = RENAME_NOREPLACE | RENAME_EXCHANGE


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def open_file(m: ContainerMounts, args: OpenArgs) -> int:
    """Open (maybe create or truncate) args.path; the caller owns the returned fd.

    The program's RESOLVE_* flags are honoured but RESOLVE_BENEATH and RESOLVE_IN_ROOT, which
    are relative to its dirfd: the sentry, which joined the path to it, enforces those.
    """
    flags = args.flags
    if not (0 <= flags <= 0xFFFFFFFF and 0 <= args.resolve < 1 << 64):
        raise InvalidArgument(f"open: flags {flags:#x} or resolve {args.resolve:#x} out of range")
    creating = bool(flags & os.O_CREAT) or (flags & os.O_TMPFILE) == os.O_TMPFILE
    mount, rel = m.locate(args.path, write=creating)
    resolve = (args.resolve & ~(RESOLVE_BENEATH | RESOLVE_IN_ROOT)) | _ALWAYS
    if flags & os.O_PATH:
        return open_in(mount.fd, rel, flags & _PATH_FLAGS, 0, resolve)
    nonblock = flags & os.O_NONBLOCK
    flags = (flags & _OPEN_FLAGS) | os.O_NOCTTY | os.O_NONBLOCK
    if not creating:
        fd = open_in(mount.fd, rel, flags, 0, resolve)
    else:
        old = os.umask(0)  # the sentry applied the program's umask to args.mode already
        try:
            fd = open_in(mount.fd, rel, flags, args.mode & 0o7777, resolve)
        finally:
            os.umask(old)
    if not nonblock:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & _SETFL_FLAGS)
        except BaseException:
            os.close(fd)
            raise
    return fd


@contextlib.contextmanager
def _entry(m: ContainerMounts, path: str, dots: DotErrnos) -> Iterator[tuple[int, str]]:
    """(parent dir fd, last component) of path, resolved in its mount; the fd closes after."""
    mount, rel = m.locate(path)
    pfd, base = open_parent(mount.fd, rel, dots)
    try:
        yield pfd, base
    finally:
        os.close(pfd)


@contextlib.contextmanager
def _no_umask() -> Iterator[None]:
    """The gofer's own umask must not touch a mode the program's umask already shaped."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mkdir(m: ContainerMounts, args: PathOpArgs) -> None:
    """mkdir(2) with args.mode (the program's umask already applied)."""
    with _entry(m, args.path, CREATE) as (pfd, base), _no_umask():
        os.mkdir(base, args.mode & 0o7777, dir_fd=pfd)


def mknod(m: ContainerMounts, args: PathOpArgs) -> None:
    """mknod(2) of a regular file, FIFO or socket. Device nodes: EPERM, always."""
    kind = stat.S_IFMT(args.mode)
    if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFDIR):
        raise _err(errno.EPERM, args.path)
    if kind not in (0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
        raise _err(errno.EINVAL, args.path)
    with _entry(m, args.path, CREATE) as (pfd, base), _no_umask():
        os.mknod(base, kind | (args.mode & 0o7777), 0, dir_fd=pfd)


def unlink(m: ContainerMounts, args: PathOpArgs) -> None:
    """unlink(2)."""
    with _entry(m, args.path, UNLINK) as (pfd, base):
        os.unlink(base, dir_fd=pfd)


def rmdir(m: ContainerMounts, args: PathOpArgs) -> None:
    """rmdir(2)."""
    with _entry(m, args.path, RMDIR) as (pfd, base):
        os.rmdir(base, dir_fd=pfd)


def symlink(m: ContainerMounts, args: PathOpArgs) -> None:
    """symlink(2): a link at args.path whose target is args.other, stored as given."""
    with _entry(m, args.path, CREATE) as (pfd, base):
        os.symlink(args.other, base, dir_fd=pfd)


def link(m: ContainerMounts, args: PathOpArgs) -> None:
    """link(2)/linkat(2): a new name args.path for the existing file args.other.

    The existing file is resolved in root (following a final symlink if args.follow) to an
    O_PATH fd and linked through its /proc/self/fd magic link, which names exactly that inode
    (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH). Across mounts the kernel answers EXDEV.
    """
    src_mount, src_rel = m.locate(args.other, write=False)
    m.locate(args.path)  # the new name's policy (EROFS, masked) before the source is opened
    sfd = open_in(src_mount.fd, src_rel, os.O_PATH if args.follow else os.O_PATH | os.O_NOFOLLOW)
    try:
        with _entry(m, args.path, CREATE) as (pfd, base):
            os.link(f"/proc/self/fd/{sfd}", base, dst_dir_fd=pfd, follow_symlinks=True)
    finally:
        os.close(sfd)


def rename(m: ContainerMounts, args: PathOpArgs) -> None:
    """rename(2)/renameat2(2) of args.path to args.other; flags RENAME_NOREPLACE, RENAME_EXCHANGE.

    Errors in Linux's order: the parents' lookups, EBUSY for a mount point or "/", EXDEV
    across mounts, then EBUSY (EEXIST with NOREPLACE on the new side) for "." and "..".
    """
    if args.flags & ~_RENAME_FLAGS:
        raise _err(errno.EINVAL, args.path)
    old_mount, old_rel = m.locate(args.path)
    new_mount, new_rel = m.locate(args.other)
    old_head, old_base, old_slash = split(old_rel)
    new_head, new_base, new_slash = split(new_rel)
    new_dots = RENAME_NOREPLACE_NEW if args.flags & RENAME_NOREPLACE else RENAME
    old_pfd = open_in(old_mount.fd, old_head, _DIR_PATH)
    try:
        new_pfd = open_in(new_mount.fd, new_head, _DIR_PATH)
        try:
            if old_base == "":
                check_name(old_base, RENAME)
            if new_base == "":
                check_name(new_base, new_dots)
            if old_mount is not new_mount:
                raise _err(errno.EXDEV, args.path)
            check_name(old_base, RENAME)
            check_name(new_base, new_dots)
            old_name = old_base + "/" if old_slash else old_base
            new_name = new_base + "/" if new_slash else new_base
            if args.flags:
                renameat2(old_pfd, old_name, new_pfd, new_name, args.flags)
            else:
                os.rename(old_name, new_name, src_dir_fd=old_pfd, dst_dir_fd=new_pfd)
        finally:
            os.close(new_pfd)
    finally:
        os.close(old_pfd)
