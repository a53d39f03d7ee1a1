"""The operations on a file's attributes: Chmod, Chown, Truncate, Utimens, SetXattr,
RemoveXattr, Access.

The file is resolved in root to an fd first (O_PATH, with O_NOFOLLOW unless the call follows
a final symlink; O_WRONLY for truncate) and the change is made on that fd: through
AT_EMPTY_PATH (fchownat, utimensat, faccessat2) or through its /proc/self/fd/N magic link
(chmod, setxattr), which the kernel follows to exactly that inode. Never chmod or chown
(parent fd, name) when following: the host kernel would follow a symlink there to a host
path. The nofollow xattr calls name the last component under the resolved parent,
/proc/self/fd/P/name with follow_symlinks=False: that path crosses a magic link, which is safe
only because P was resolved inside the root and the name is one component that is not "."
or "..". The caller (control.py) has already taken on the task's credentials.
"""

from __future__ import annotations

import errno
import os
import stat

from common.errors import InvalidArgument
from common.messages.gofer import TIME_OMIT, PathOpArgs
from services.gofer.mounts import ContainerMounts
from services.gofer.resolve import open_in, split
from services.gofer.syscalls import MAX_ID, faccess_empty, fchown_empty, utimens_empty

_DIR_PATH = os.O_PATH | os.O_DIRECTORY
#: Times are signed 64-bit nanosecond counts.
_NS_LIMIT = 1 << 63
#: Longest xattr name (XATTR_NAME_MAX).
_XATTR_NAME_MAX = 255


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def _proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _open_target(m: ContainerMounts, args: PathOpArgs, write: bool = True) -> int:
    mount, rel = m.locate(args.path, write)
    return open_in(mount.fd, rel, os.O_PATH if args.follow else os.O_PATH | os.O_NOFOLLOW)


def chmod(m: ContainerMounts, args: PathOpArgs) -> None:
    """chmod(2); with follow=False (fchmodat AT_SYMLINK_NOFOLLOW) a symlink gets EOPNOTSUPP."""
    fd = _open_target(m, args)
    try:
        if not args.follow and stat.S_ISLNK(os.fstat(fd).st_mode):
            raise _err(errno.EOPNOTSUPP, args.path)
        os.chmod(_proc(fd), args.mode & 0o7777)
    finally:
        os.close(fd)


def chown(m: ContainerMounts, args: PathOpArgs) -> None:
    """chown(2), or lchown(2) with follow=False; -1 keeps the uid or gid."""
    for value in (args.uid, args.gid):
        if not -1 <= value <= MAX_ID:
            raise InvalidArgument(f"chown: id {value} out of range")
    fd = _open_target(m, args)
    try:
        fchown_empty(fd, args.uid, args.gid)
    finally:
        os.close(fd)


def truncate(m: ContainerMounts, args: PathOpArgs) -> None:
    """truncate(2): always follows. The file is opened for writing (the permission truncate
    needs), without blocking on a FIFO."""
    if args.length < 0:
        raise _err(errno.EINVAL, args.path)
    mount, rel = m.locate(args.path)
    fd = open_in(mount.fd, rel, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _err(errno.EINVAL, args.path)
        os.ftruncate(fd, args.length)
    finally:
        os.close(fd)


def utimens(m: ContainerMounts, args: PathOpArgs) -> None:
    """utimensat(2) with [atime_ns, mtime_ns], or both now when times_ns is None."""
    times = args.times_ns
    if times is not None and (len(times) != 2 or not all(t == TIME_OMIT or -_NS_LIMIT <= t < _NS_LIMIT for t in times)):
        raise InvalidArgument("utimens: times_ns must be [atime_ns, mtime_ns], each a signed 64-bit count")
    fd = _open_target(m, args)
    try:
        utimens_empty(fd, None if times is None else (times[0], times[1]))
    finally:
        os.close(fd)


def _check_xattr_name(args: PathOpArgs) -> None:
    """Linux's ERANGE for a bad length, then the namespaces the gofer serves.

    user.* and system.* (POSIX ACLs) are the kernel's to decide under the task's identity.
    security.* (file capabilities) needs container root, as CAP_SETFCAP does in runc's default
    set; trusted.* needs CAP_SYS_ADMIN, which no container gets: EPERM. Any other prefix is not
    a namespace Linux knows: EOPNOTSUPP.
    """
    name = args.name
    if not name or len(os.fsencode(name)) > _XATTR_NAME_MAX:
        raise _err(errno.ERANGE, args.path)
    if name.startswith(("user.", "system.")):
        return
    if name.startswith("security."):
        if args.creds.uid != 0:
            raise _err(errno.EPERM, args.path)
        return
    raise _err(errno.EPERM if name.startswith("trusted.") else errno.EOPNOTSUPP, args.path)


def _xattr_target(m: ContainerMounts, args: PathOpArgs) -> tuple[int, str, bool]:
    """(fd the caller closes, path naming the file through it, follow_symlinks)."""
    mount, rel = m.locate(args.path)
    if not args.follow:
        head, base, slash = split(rel)
        # "", "." and ".." are directories, and a trailing slash follows anyway: those take the
        # follow path, so no name that could climb out of the parent ever reaches the kernel.
        if not slash and base not in ("", ".", ".."):
            pfd = open_in(mount.fd, head, _DIR_PATH)
            return pfd, f"{_proc(pfd)}/{base}", False
    fd = open_in(mount.fd, rel, os.O_PATH)
    return fd, _proc(fd), True


def set_xattr(m: ContainerMounts, args: PathOpArgs) -> None:
    """setxattr(2)/lsetxattr(2) of args.name = args.value with args.flags (XATTR_CREATE/REPLACE)."""
    _check_xattr_name(args)
    fd, path, follow = _xattr_target(m, args)
    try:
        os.setxattr(path, args.name, args.value, args.flags, follow_symlinks=follow)
    finally:
        os.close(fd)


def remove_xattr(m: ContainerMounts, args: PathOpArgs) -> None:
    """removexattr(2)/lremovexattr(2) of args.name."""
    _check_xattr_name(args)
    fd, path, follow = _xattr_target(m, args)
    try:
        os.removexattr(path, args.name, follow_symlinks=follow)
    finally:
        os.close(fd)


def access(m: ContainerMounts, args: PathOpArgs) -> None:
    """faccessat(2) of args.mode (F_OK, or R_OK|W_OK|X_OK) with the task's fs credentials
    (AT_EACCESS); follow=False checks a final symlink itself. Returns nothing: success means
    allowed. Root passes X_OK on a regular file only if some execute bit is set."""
    if args.mode & ~(os.R_OK | os.W_OK | os.X_OK):
        raise _err(errno.EINVAL, args.path)
    fd = _open_target(m, args, write=False)
    try:
        faccess_empty(fd, args.mode)
    finally:
        os.close(fd)
