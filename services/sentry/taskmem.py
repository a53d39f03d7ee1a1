"""A trapped task's memory, credentials and paths, as the sentry reads them to answer a call.

Memory: `TaskMemory` keeps one fd on /proc/TID/mem per task (opened lazily, O_RDWR|O_CLOEXEC)
and reads and writes it with pread/pwrite: ~2 us a read against ~8 us for process_vm_readv
(KERNEL-FACTS). The pid a notification names is the calling thread's TID; a thread gets its
own fd (the /proc/TID entry of a thread works like a process's). A cached fd keeps pointing at
the mm it was opened on: after execve, exit or pid reuse it reads 0 bytes, and the next access
reopens it once and retries (forget() after a known execve or exit avoids that round).
Whatever was read from memory is only trustworthy once Listener.id_valid() confirms the
notification is still pending (the pid might have been reused in between).

/proc/PID/mem accesses the task's memory as ptrace does (FOLL_FORCE): it reads and writes
PROT_NONE and read-only pages too, where the task's own system call (copy_to_user) would fail
with EFAULT; only unmapped addresses give EIO here. (process_vm_readv respects protections but
costs ~4x more.) A handler that must refuse a read-only output buffer checks /proc/PID/maps.

Errors: `TaskGone` when the task no longer exists (or has no mm left: a zombie); the others
are OSErrors whose errno is the answer the task gets: `BadAddress` (EFAULT) when the range is
not mapped, `StringTooLong` (ENAMETOOLONG) when no NUL was found in max_len bytes, `NotAPath`
(ENOENT, or ENOTDIR for a pipe or socket) for a cwd or fd without a path in the task's root.

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

Costs measured here: read/write ~1.5 us, read_string ~2.5 us, task_cwd/task_fd_path ~8 us in
our own namespace (three readlinks) plus a statx in another, task_creds ~13 us (the kernel
spends ~11 of them generating /proc/PID/status): call it only for calls that create files.

Nothing here is thread-safe: use one TaskMemory per thread.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from typing import Final, NamedTuple

PAGE_SIZE: Final = mmap.PAGESIZE
_PAGE_MASK: Final = PAGE_SIZE - 1
_MEM_FLAGS: Final = os.O_RDWR | os.O_CLOEXEC
#: Largest read or write TaskMemory does in one call: sizes come from the task's registers, and
#: os.pread allocates what it is asked for. Callers bound sizes by the call's own limits first.
MAX_TRANSFER: Final = 64 << 20
_DELETED: Final = " (deleted)"
_GONE_ERRNOS: Final = frozenset((errno.ENOENT, errno.ESRCH))


class TaskGone(Exception):
    """The task no longer exists (exited, killed, reaped, or a zombie without memory).

    Deliberately not an OSError: there is nobody left to answer.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(f"task {pid} is gone")
        self.pid = pid


class BadAddress(OSError):
    """The task's address range is not mapped: the call fails with EFAULT (errno is EFAULT)."""

    def __init__(self, addr: int, size: int = 0, pid: int = 0) -> None:
        super().__init__(errno.EFAULT, f"bad address {addr:#x} (+{size}) in task {pid}")
        self.addr = addr
        self.size = size
        self.pid = pid


class StringTooLong(OSError):
    """No NUL within max_len bytes: the call fails with ENAMETOOLONG (errno)."""

    def __init__(self, addr: int, max_len: int, pid: int = 0) -> None:
        super().__init__(errno.ENAMETOOLONG, f"no NUL in {max_len} bytes at {addr:#x} in task {pid}")
        self.addr = addr
        self.max_len = max_len
        self.pid = pid


class NotAPath(OSError):
    """A cwd or fd that has no path inside the task's root.

    reason is "anonymous" (pipe, socket, anon inode; errno ENOTDIR, what a *at call given it
    as dirfd says), "deleted" (unlinked, no name left; errno ENOENT) or "unreachable" (outside
    the task's root or in a mount the task cannot see; errno ENOENT); raw is what readlink said.
    """

    def __init__(self, raw: str, reason: str) -> None:
        code = errno.ENOTDIR if reason == "anonymous" else errno.ENOENT
        super().__init__(code, f"{reason}: {raw!r}")
        self.raw = raw
        self.reason = reason


class TaskMemory:
    """Per-task /proc/TID/mem fds and the reads and writes the sentry does through them.

    Owns every fd it opens: forget(pid) closes one, close() all. Not thread-safe.
    """

    __slots__ = ("_buf", "_fds", "_view")

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._buf = bytearray(2 * PAGE_SIZE)
        self._view = memoryview(self._buf)

    def __enter__(self) -> TaskMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """How many tasks have an open mem fd."""
        return len(self._fds)

    def forget(self, pid: int) -> None:
        """Close pid's mem fd, if any: after it execs (new mm) or exits."""
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close every mem fd (idempotent; the object stays usable and reopens on demand)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def _reopen(self, pid: int) -> int:
        self.forget(pid)
        try:
            fd = os.open(f"/proc/{pid}/mem", _MEM_FLAGS)
        except OSError as e:
            if e.errno in _GONE_ERRNOS:
                raise TaskGone(pid) from None
            raise
        self._fds[pid] = fd
        return fd

    def _failed(self, pid: int, err: OSError, addr: int, size: int) -> Exception:
        """The exception for an errno of a fresh mem fd."""
        if err.errno in (errno.EIO, errno.EFAULT):
            return BadAddress(addr, size, pid)
        if err.errno in _GONE_ERRNOS:
            self.forget(pid)
            return TaskGone(pid)
        return err

    def _gone(self, pid: int) -> TaskGone:
        self.forget(pid)
        return TaskGone(pid)

    def read(self, pid: int, addr: int, size: int) -> bytes:
        """size bytes at addr in pid's memory; all of them, or BadAddress."""
        fd = self._fds.get(pid)
        if fd is not None:
            try:
                data = os.pread(fd, size, addr)
            except (OSError, OverflowError, ValueError):
                pass
            else:
                if len(data) == size:
                    return data
        # First access, a stale fd (exec, exit, pid reuse) or a bad address: once more, fresh.
        self._check_range(pid, addr, size)
        fd = self._reopen(pid)
        try:
            data = os.pread(fd, size, addr)
        except OSError as e:
            raise self._failed(pid, e, addr, size) from None
        if len(data) == size:
            return data
        if not data:
            raise self._gone(pid)
        raise BadAddress(addr, size, pid)

    def read_into(self, pid: int, addr: int, buffer: bytearray | memoryview) -> None:
        """Fill buffer (writable, C-contiguous) from addr in pid's memory, or BadAddress."""
        size = len(buffer)
        fd = self._fds.get(pid)
        if fd is not None:
            try:
                if os.preadv(fd, (buffer,), addr) == size:
                    return
            except (OSError, OverflowError):
                pass
        self._check_range(pid, addr, size)
        fd = self._reopen(pid)
        try:
            got = os.preadv(fd, (buffer,), addr)
        except OSError as e:
            raise self._failed(pid, e, addr, size) from None
        if got == size:
            return
        if got == 0:
            raise self._gone(pid)
        raise BadAddress(addr, size, pid)

    def write(self, pid: int, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write data at addr in pid's memory (as ptrace would: read-only private pages too)."""
        size = len(data)
        fd = self._fds.get(pid)
        if fd is not None:
            try:
                if os.pwrite(fd, data, addr) == size:
                    return
            except (OSError, OverflowError):
                pass
        self._check_range(pid, addr, size)
        fd = self._reopen(pid)
        try:
            done = os.pwrite(fd, data, addr)
        except OSError as e:
            raise self._failed(pid, e, addr, size) from None
        if done == size:
            return
        if done == 0:
            raise self._gone(pid)
        raise BadAddress(addr, size, pid)

    def read_string(self, pid: int, addr: int, max_len: int = 4096) -> bytes:
        """The NUL-terminated string at addr, without its NUL.

        Reads page by page, so a string that ends right before an unmapped page is read whole;
        BadAddress if an unreadable page comes before the NUL; StringTooLong if there is no NUL
        in max_len bytes (max_len counts the NUL, like PATH_MAX).
        """
        if len(self._buf) < max_len:
            if max_len > MAX_TRANSFER:
                raise ValueError(f"max_len {max_len} over {MAX_TRANSFER}")
            self._buf = bytearray(max_len)
            self._view = memoryview(self._buf)
        if addr < 0 or addr >= 1 << 63:
            raise BadAddress(addr, max_len, pid)
        buf, view = self._buf, self._view
        fd = self._fds.get(pid)
        fresh = fd is None
        if fd is None:
            fd = self._reopen(pid)
        got = 0
        while got < max_len:
            at = addr + got
            chunk = min(PAGE_SIZE - (at & _PAGE_MASK), max_len - got)
            try:
                n = os.preadv(fd, (view[got : got + chunk],), at)
            except OverflowError:
                raise BadAddress(at, chunk, pid) from None
            except OSError as e:
                if got == 0 and not fresh:
                    fd, fresh = self._reopen(pid), True
                    continue
                raise self._failed(pid, e, at, chunk) from None
            if n == 0:
                if got == 0 and not fresh:
                    fd, fresh = self._reopen(pid), True
                    continue
                raise self._gone(pid)
            end = buf.find(0, got, got + n)
            if end >= 0:
                return bytes(view[:end])
            got += n
        raise StringTooLong(addr, max_len, pid)

    @staticmethod
    def _check_range(pid: int, addr: int, size: int) -> None:
        if size > MAX_TRANSFER or size < 0:
            raise ValueError(f"transfer of {size} bytes (limit {MAX_TRANSFER})")
        if addr < 0 or addr + size > 1 << 63:  # not a user address; os.pread could not even try
            raise BadAddress(addr, size, pid)


# --- credentials -------------------------------------------------------------------------------


def task_creds(pid: int) -> tuple[int, int, list[int], int]:
    """(fsuid, fsgid, supplementary groups, umask) of the task (thread) pid, from one read of
    /proc/PID/status. Credentials are per thread: pass the notification's TID. TaskGone if gone."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in _GONE_ERRNOS:
            raise TaskGone(pid) from None
        raise
    try:
        text = os.read(fd, _STATUS_READ)
        if len(text) == _STATUS_READ:  # thousands of groups: the rest follows (single_open file)
            parts = [text]
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            text = b"".join(parts)
    except ProcessLookupError:
        raise TaskGone(pid) from None
    finally:
        os.close(fd)
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


_STATUS_READ: Final = 16384


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
    if err.errno in _GONE_ERRNOS:
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
