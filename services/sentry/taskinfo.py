"""What /proc tells the sentry of a trapped task: its file-system credentials and the container
paths of its cwd and open fds.

Paths: the kernel renders /proc/PID/cwd, /proc/PID/root and /proc/PID/fd/N (d_path) relative
to the root of the mount namespace that holds the file's mount, or to the reader's root when
that mount is reachable from it. For a task that pivot_rooted into its own mount namespace
this gives the container path ("/tmp", not the host's rootfs path): verified empirically on
this kernel (6.18), from the host namespace and from a third one. Files whose mount lives in
the reader's namespace (an fd the gofer opened on the host and donated, or one the task opened
before pivot_root) are rendered as host paths; `task_cwd` and `task_fd_path` translate those
through the task's mount table (same device, mount root a prefix), and strip the root of a
task that chroot()ed. Paths that cannot be expressed inside the task's root raise `NotAPath`,
as do deleted files (" (deleted)" suffix, with no link left) and anonymous files
("pipe:[123]", "socket:[..]", "anon_inode:[eventfd]"). A file on a detached mount (lazy umount)
also renders as an absolute path; it is reported unreachable when the task's root is its
namespace's root (the pivot_root case).
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final, NamedTuple

from services.sentry.taskmem import GONE_ERRNOS, NotAPath, TaskGone, TaskMemory

#: What d_path appends to the name of an unlinked file.
_DELETED: Final = " (deleted)"


def task_creds(memory: TaskMemory, pid: int) -> tuple[int, int, list[int], int]:
    """(fsuid, fsgid, supplementary groups, umask) of the task (thread) pid, from its
    /proc/TID/status. Credentials are per thread: pass the notification's TID. TaskGone if gone."""
    text = memory.status(pid)
    # Every key starts a line (the Name line comes first and escapes newlines).
    uid = _status_field(text, b"\nUid:")
    gid = _status_field(text, b"\nGid:")
    groups = _status_field(text, b"\nGroups:")
    umask = _status_field(text, b"\nUmask:")
    if uid is None or gid is None or groups is None:
        raise TaskGone(pid)  # an empty status: the task went away while we read
    if umask is None:
        raise OSError(errno.ENOTSUP, f"/proc/{pid}/status has no Umask line")
    return int(uid.split()[3]), int(gid.split()[3]), [int(g) for g in groups.split()], int(umask, 8)


def _status_field(text: bytes, key: bytes) -> bytes | None:
    start = text.find(key)
    if start < 0:
        return None
    start += len(key)
    end = text.find(b"\n", start)
    return text[start:end] if end >= 0 else text[start:]


# --- paths -------------------------------------------------------------------------------------

_AT_FDCWD: Final = -100
_STATX_NLINK: Final = 0x4
_STATX_INO: Final = 0x100
_STATX_MNT_ID: Final = 0x1000
_STATX_SIZE: Final = 256
_libc = ctypes.CDLL(None, use_errno=True)
_statx = _libc.statx
_statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
_statx.restype = ctypes.c_int


class _Mount(NamedTuple):
    dev: str  # "major:minor" of the filesystem
    root: str  # the mount's root, relative to the filesystem's root
    point: str  # where it is mounted, relative to the reading process's root


class _Statx(NamedTuple):
    nlink: int
    ino: int
    dev: str
    mnt_id: int


def _stat_link(path: str) -> _Statx:
    """statx through a magic link: the file's link count, inode, device and mount id."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_NLINK | _STATX_INO | _STATX_MNT_ID, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    raw = buf.raw
    return _Statx(
        nlink=int.from_bytes(raw[16:20], "little"),
        ino=int.from_bytes(raw[32:40], "little"),
        dev=f"{int.from_bytes(raw[136:140], 'little')}:{int.from_bytes(raw[140:144], 'little')}",
        mnt_id=int.from_bytes(raw[144:152], "little"),
    )


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \ooo."""
    if "\\" not in field:
        return field
    return field.encode("latin-1").decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def _read_mounts(pid: int | str) -> dict[int, _Mount]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    mounts: dict[int, _Mount] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            mounts[int(fields[0])] = _Mount(fields[2], _unescape(fields[3]), _unescape(fields[4]))
    return mounts


#: Our mount namespace ("mnt:[4026531841]"), read once: a service does not change it (if it
#: does, it calls forget_mount_tables()). readlink costs ~2.5 us where stat costs ~5.5 us.
_own_ns: str | None = None


def _our_mount_namespace() -> str:
    global _own_ns  # noqa: PLW0603
    _own_ns = os.readlink("/proc/self/ns/mnt")
    return _own_ns


def forget_mount_tables() -> None:
    """Drop every cached mount table and our own namespace (after setns or new mounts)."""
    global _own_ns  # noqa: PLW0603
    _own_ns = None
    _tables.clear()


#: Mount tables by (mount namespace, root as readlink shows it): mountinfo lists only what is
#: reachable from the reading task's root. Refreshed whenever the mount id looked for is missing,
#: so the translation of a foreign mount always uses a fresh table. Namespace inode numbers and
#: mount ids are reused once freed: the sentry calls forget_mount_tables() when a container's
#: mount namespace goes away, so that a new one never meets its predecessor's table.
_tables: dict[tuple[str, str], dict[int, _Mount]] = {}
_MAX_TABLES: Final = 256


def _table(key: tuple[str, str], pid: int | str) -> dict[int, _Mount]:
    """Read (again) and cache the mount table of pid (an int or "self")."""
    if len(_tables) >= _MAX_TABLES:
        _tables.clear()
    try:
        table = _read_mounts(pid)
    except OSError as e:
        if isinstance(pid, int):
            raise _task_gone_or(pid, e) from None
        raise
    _tables[key] = table
    return table


def _under(path: str, prefix: str) -> str | None:
    """path relative to prefix as "/..." ("/" for prefix itself), or None if outside it."""
    if prefix == "/":
        return path
    if path == prefix:
        return "/"
    if path.startswith(prefix) and path[len(prefix)] == "/":
        return path[len(prefix) :]
    return None


def _join(base: str, rest: str) -> str:
    if rest == "/":
        return base
    return rest if base == "/" else base + rest


def _task_gone_or(pid: int, err: OSError) -> Exception:
    """TaskGone if pid is gone; EBADF for a missing /proc/PID/fd/N of a live task; else err."""
    if err.errno in GONE_ERRNOS:
        if not os.path.exists(f"/proc/{pid}"):
            return TaskGone(pid)
        if err.filename and "/fd/" in str(err.filename):
            return OSError(errno.EBADF, os.strerror(errno.EBADF), err.filename)
    return err


def _container_path(pid: int, link: str) -> str:
    """What readlink(link) means inside pid's root (see the module docstring)."""
    try:
        raw = os.readlink(link)
        root = os.readlink(f"/proc/{pid}/root")
        task_ns = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError as e:
        raise _task_gone_or(pid, e) from None
    if not raw.startswith("/"):
        raise NotAPath(raw, "anonymous")
    if task_ns == (_own_ns or _our_mount_namespace()):
        # One namespace: raw and root are both relative to our root.
        path = _under(raw, root)
    else:
        path = _foreign_ns_path(pid, link, raw, root, task_ns)
    if path is None:
        raise NotAPath(raw, "unreachable")
    if raw.endswith(_DELETED) and _deleted(pid, link, path):
        raise NotAPath(raw, "deleted")
    return path


def _foreign_ns_path(pid: int, link: str, raw: str, root: str, task_ns: str) -> str | None:
    """The path for a task in another mount namespace than ours."""
    try:
        st = _stat_link(link)
    except OSError as e:
        raise _task_gone_or(pid, e) from None
    key = (task_ns, root)
    # Mounts of the task's namespace: d_path gave the path from that namespace's root.
    table = _tables.get(key)
    if table is None or st.mnt_id not in table:
        table = _table(key, pid)
    if st.mnt_id in table:
        return _under(raw, root)
    own_key = (_own_ns or _our_mount_namespace(), "/")
    own = _tables.get(own_key)
    if own is None or st.mnt_id not in own:
        own = _table(own_key, "self")
    ours = own.get(st.mnt_id)
    if ours is None:
        # Neither ours nor in the task's table: with the task at its namespace's root that is
        # a detached mount or a third namespace; below a chroot it may be the task's own mount
        # that its mountinfo leaves out (mounted above its root).
        return None if root == "/" else _under(raw, root)
    # A mount of our namespace (a file the gofer opened, or one opened before pivot_root):
    # raw is our path; find where the task sees the same directory of the same filesystem.
    rel = _under(raw, ours.point)
    if rel is None:
        return None
    fs_path = _join(ours.root, rel)
    best: tuple[int, int, str] | None = None
    for mount in table.values():  # read just now: the miss above refreshed it
        if mount.dev != ours.dev:
            continue
        inner = _under(fs_path, mount.root)
        if inner is None:
            continue
        rank = (-len(mount.root), len(mount.point), _join(mount.point, inner))
        if best is None or rank < best:
            best = rank
    return None if best is None else best[2]


def _deleted(pid: int, link: str, path: str) -> bool:
    """Whether a path readlink gave with a " (deleted)" suffix names an unlinked file (rather
    than a file really called "... (deleted)")."""
    try:
        st = _stat_link(link)
    except OSError as e:
        raise _task_gone_or(pid, e) from None
    if st.nlink == 0:
        return True
    try:
        named = os.lstat(f"/proc/{pid}/root{path}")
    except OSError:
        return True
    return named.st_ino != st.ino or f"{os.major(named.st_dev)}:{os.minor(named.st_dev)}" != st.dev


def task_cwd(pid: int) -> str:
    """The task's working directory as a path inside its root (the container path).

    NotAPath if it was removed or lies outside the task's root; TaskGone if the task is gone.
    """
    return _container_path(pid, f"/proc/{pid}/cwd")


def task_fd_path(pid: int, fd: int) -> str:
    """The path of the task's open fd inside its root (the container path).

    NotAPath for a pipe, socket or other anonymous file, a deleted file, or one outside the
    task's root; OSError(EBADF) if the task has no such fd; TaskGone if the task is gone.
    """
    return _container_path(pid, f"/proc/{pid}/fd/{fd}")
