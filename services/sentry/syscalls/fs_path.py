"""The path-changing syscalls: mkdir, mknod, unlink, rmdir, rename, link, symlink, chmod, chown,
truncate, utime(s), utimensat and the path forms of setxattr/removexattr.

On a gofer mount the gofer does the work as the calling task; on a kernel mount (tmpfs, proc,
...) the call is continued. A two-path call across the two kinds fails with EXDEV, as a
rename between file systems does. A call that acts on an fd (an empty path with AT_EMPTY_PATH,
utimensat with a NULL path) is continued: the fd's own mount decides, and the program's view
of a gofer mount is read-only.
"""

from __future__ import annotations

import errno
import stat
import struct
import time
from typing import Any

from common.messages.gofer import TIME_OMIT, PathOpArgs
from services.sentry.seccomp import as_int
from services.sentry.supervisor import Call, Handler, Supervisor
from services.sentry.vfs import AT_FDCWD

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
#: The file-type bits of a mode (stat.S_IFMT is a function).
S_IFMT = 0o170000
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
#: Longest xattr value (XATTR_SIZE_MAX).
XATTR_SIZE_MAX = 65536
_TIMESPECS = struct.Struct("=qqqq")
_UTIMBUF = struct.Struct("=qq")


def _path(sv: Supervisor, call: Call, dirfd: int, addr: int, follow: bool = False) -> str:
    return sv.container_path(call.pid, dirfd, sv.path_arg(call, addr), follow)


def _op(sv: Supervisor, call: Call, method: str, path: str, create_mode: int | None = None, **fields: Any) -> None:
    """One gofer path operation for call, or CONTINUE when path is on a kernel mount.

    create_mode is the mode of a file the call creates, before the task's umask.
    """
    if not call.w.mounts.served_by_gofer(path):
        sv.cont(call)
        return
    creds, umask = sv.creds(call.pid)
    if create_mode is not None:
        fields["mode"] = (create_mode & S_IFMT) | (create_mode & 0o7777 & ~umask)
    sv.gofer_call(call, method, PathOpArgs(cid=call.w.cid, path=path, creds=creds, **fields))


def _two(sv: Supervisor, call: Call, method: str, old: str, new: str, **fields: Any) -> None:
    """A two-path operation (rename, link): both on gofer mounts, both on kernel mounts, or EXDEV."""
    ours = call.w.mounts.served_by_gofer(old), call.w.mounts.served_by_gofer(new)
    if ours == (False, False):
        sv.cont(call)
    elif ours != (True, True):
        sv.fail(call, errno.EXDEV)
    else:
        creds, _ = sv.creds(call.pid)
        sv.gofer_call(call, method, PathOpArgs(cid=call.w.cid, path=old, other=new, creds=creds, **fields))


def _mkdir(sv: Supervisor, call: Call, dirfd: int, addr: int, mode: int) -> None:
    _op(sv, call, "Gofer.Mkdir", _path(sv, call, dirfd, addr), create_mode=mode & 0o7777)


def _mknod(sv: Supervisor, call: Call, dirfd: int, addr: int, mode: int, dev: int) -> None:
    mode &= 0xFFFFFFFF
    if not mode & S_IFMT:
        mode |= stat.S_IFREG  # mknod(2): a zero file type means a regular file
    _op(sv, call, "Gofer.Mknod", _path(sv, call, dirfd, addr), create_mode=mode, dev=dev)


def _unlinkat(sv: Supervisor, call: Call, dirfd: int, addr: int, flags: int) -> None:
    if flags & ~AT_REMOVEDIR:
        sv.fail(call, errno.EINVAL)
        return
    _op(sv, call, "Gofer.Rmdir" if flags & AT_REMOVEDIR else "Gofer.Unlink", _path(sv, call, dirfd, addr))


def _renameat(sv: Supervisor, call: Call, olddfd: int, old: int, newdfd: int, new: int, flags: int) -> None:
    _two(sv, call, "Gofer.Rename", _path(sv, call, olddfd, old), _path(sv, call, newdfd, new), flags=flags)


def _linkat(sv: Supervisor, call: Call, olddfd: int, old: int, newdfd: int, new: int, flags: int) -> None:
    if flags & AT_EMPTY_PATH:
        sv.cont(call)  # links an open fd: its mount decides
        return
    follow = bool(flags & AT_SYMLINK_FOLLOW)
    _two(sv, call, "Gofer.Link", _path(sv, call, newdfd, new), _path(sv, call, olddfd, old, follow), follow=follow)


def _symlinkat(sv: Supervisor, call: Call, target: int, newdfd: int, linkpath: int) -> None:
    text = sv.path_arg(call, target)
    _op(sv, call, "Gofer.Symlink", _path(sv, call, newdfd, linkpath), other=text)


def _chmod(sv: Supervisor, call: Call, dirfd: int, addr: int, mode: int, flags: int) -> None:
    if flags & AT_EMPTY_PATH:
        sv.cont(call)
        return
    _op(
        sv,
        call,
        "Gofer.Chmod",
        _path(sv, call, dirfd, addr, not flags & AT_SYMLINK_NOFOLLOW),
        mode=mode & 0o7777,
        follow=not flags & AT_SYMLINK_NOFOLLOW,
    )


def _chown(sv: Supervisor, call: Call, dirfd: int, addr: int, uid: int, gid: int, flags: int) -> None:
    if flags & AT_EMPTY_PATH:
        sv.cont(call)
        return
    follow = not flags & AT_SYMLINK_NOFOLLOW
    path = _path(sv, call, dirfd, addr, follow)
    _op(sv, call, "Gofer.Chown", path, uid=as_int(uid), gid=as_int(gid), follow=follow)


def _utimens(sv: Supervisor, call: Call, dirfd: int, addr: int, times: list[int] | None, flags: int) -> None:
    if addr == 0 or flags & AT_EMPTY_PATH:
        sv.cont(call)  # futimens: the fd's own mount decides
        return
    follow = not flags & AT_SYMLINK_NOFOLLOW
    _op(sv, call, "Gofer.Utimens", _path(sv, call, dirfd, addr, follow), times_ns=times, follow=follow)


def _timespecs(sv: Supervisor, call: Call, addr: int) -> list[int] | None:
    """utimensat's times: None for now; UTIME_NOW as now, UTIME_OMIT as TIME_OMIT (keep)."""
    if addr == 0:
        return None
    a_sec, a_ns, m_sec, m_ns = _TIMESPECS.unpack(sv.mem.read(call.pid, addr, _TIMESPECS.size))
    now = time.time_ns()
    out = []
    for sec, ns in ((a_sec, a_ns), (m_sec, m_ns)):
        if ns == UTIME_NOW:
            out.append(now)
        elif ns == UTIME_OMIT:
            out.append(TIME_OMIT)
        elif not 0 <= ns < 1_000_000_000:
            raise OSError(errno.EINVAL, "bad timespec")
        else:
            out.append(sec * 1_000_000_000 + ns)
    return out


def _timevals(sv: Supervisor, call: Call, addr: int) -> list[int] | None:
    if addr == 0:
        return None
    a_sec, a_us, m_sec, m_us = _TIMESPECS.unpack(sv.mem.read(call.pid, addr, _TIMESPECS.size))
    if not (0 <= a_us < 1_000_000 and 0 <= m_us < 1_000_000):
        raise OSError(errno.EINVAL, "bad timeval")
    return [a_sec * 1_000_000_000 + a_us * 1000, m_sec * 1_000_000_000 + m_us * 1000]


def _setxattr(sv: Supervisor, call: Call, follow: bool) -> None:
    path, name_addr, value_addr, size, flags = call.args[:5]
    if size > XATTR_SIZE_MAX:
        sv.fail(call, errno.E2BIG)
        return
    name = sv.mem.read_string(call.pid, name_addr, 256).decode(errors="surrogateescape")
    value = sv.mem.read(call.pid, value_addr, size) if size else b""
    target = _path(sv, call, AT_FDCWD, path, follow)
    _op(sv, call, "Gofer.SetXattr", target, name=name, value=value, flags=flags, follow=follow)


def _removexattr(sv: Supervisor, call: Call, follow: bool) -> None:
    name = sv.mem.read_string(call.pid, call.args[1], 256).decode(errors="surrogateescape")
    _op(sv, call, "Gofer.RemoveXattr", _path(sv, call, AT_FDCWD, call.args[0], follow), name=name, follow=follow)


def _utime(sv: Supervisor, call: Call) -> None:
    a = call.args
    times = None
    if a[1]:
        actime, modtime = _UTIMBUF.unpack(sv.mem.read(call.pid, a[1], _UTIMBUF.size))
        times = [actime * 1_000_000_000, modtime * 1_000_000_000]
    _utimens(sv, call, AT_FDCWD, a[0], times, 0)


HANDLERS: dict[str, Handler] = {
    "mkdir": lambda sv, c: _mkdir(sv, c, AT_FDCWD, c.args[0], c.args[1]),
    "mkdirat": lambda sv, c: _mkdir(sv, c, c.args[0], c.args[1], c.args[2]),
    "mknod": lambda sv, c: _mknod(sv, c, AT_FDCWD, c.args[0], c.args[1], c.args[2]),
    "mknodat": lambda sv, c: _mknod(sv, c, c.args[0], c.args[1], c.args[2], c.args[3]),
    "unlink": lambda sv, c: _unlinkat(sv, c, AT_FDCWD, c.args[0], 0),
    "rmdir": lambda sv, c: _unlinkat(sv, c, AT_FDCWD, c.args[0], AT_REMOVEDIR),
    "unlinkat": lambda sv, c: _unlinkat(sv, c, c.args[0], c.args[1], c.args[2]),
    "rename": lambda sv, c: _renameat(sv, c, AT_FDCWD, c.args[0], AT_FDCWD, c.args[1], 0),
    "renameat": lambda sv, c: _renameat(sv, c, c.args[0], c.args[1], c.args[2], c.args[3], 0),
    "renameat2": lambda sv, c: _renameat(sv, c, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4]),
    "link": lambda sv, c: _linkat(sv, c, AT_FDCWD, c.args[0], AT_FDCWD, c.args[1], 0),
    "linkat": lambda sv, c: _linkat(sv, c, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4]),
    "symlink": lambda sv, c: _symlinkat(sv, c, c.args[0], AT_FDCWD, c.args[1]),
    "symlinkat": lambda sv, c: _symlinkat(sv, c, c.args[0], c.args[1], c.args[2]),
    "chmod": lambda sv, c: _chmod(sv, c, AT_FDCWD, c.args[0], c.args[1], 0),
    "fchmodat": lambda sv, c: _chmod(sv, c, c.args[0], c.args[1], c.args[2], 0),
    "fchmodat2": lambda sv, c: _chmod(sv, c, c.args[0], c.args[1], c.args[2], c.args[3]),
    "chown": lambda sv, c: _chown(sv, c, AT_FDCWD, c.args[0], c.args[1], c.args[2], 0),
    "lchown": lambda sv, c: _chown(sv, c, AT_FDCWD, c.args[0], c.args[1], c.args[2], AT_SYMLINK_NOFOLLOW),
    "fchownat": lambda sv, c: _chown(sv, c, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4]),
    "truncate": lambda sv, c: _op(sv, c, "Gofer.Truncate", _path(sv, c, AT_FDCWD, c.args[0], True), length=c.args[1]),
    "utime": _utime,
    "utimes": lambda sv, c: _utimens(sv, c, AT_FDCWD, c.args[0], _timevals(sv, c, c.args[1]), 0),
    "futimesat": lambda sv, c: _utimens(sv, c, c.args[0], c.args[1], _timevals(sv, c, c.args[2]), 0),
    "utimensat": lambda sv, c: _utimens(sv, c, c.args[0], c.args[1], _timespecs(sv, c, c.args[2]), c.args[3]),
    "setxattr": lambda sv, c: _setxattr(sv, c, True),
    "lsetxattr": lambda sv, c: _setxattr(sv, c, False),
    "removexattr": lambda sv, c: _removexattr(sv, c, True),
    "lremovexattr": lambda sv, c: _removexattr(sv, c, False),
}
