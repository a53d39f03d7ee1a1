"""A trapped task's memory, as the sentry reads and writes it to answer a call (its credentials
and paths: taskinfo.py).

Memory: `TaskMemory` keeps one fd on /proc/TID/mem per task (opened lazily, O_RDWR|O_CLOEXEC)
and reads and writes it with pread/pwrite: ~2 us a read against ~8 us for process_vm_readv
(KERNEL-FACTS). The pid a notification names is the calling thread's TID; a thread gets its
own fd (the /proc/TID entry of a thread works like a process's). A cached fd keeps pointing at
the mm it was opened on: after execve, exit or pid reuse it reads 0 bytes, and the next access
reopens it once and retries (forget_memory() after a known execve, forget() after an exit,
avoid that round).
Whatever was read from memory is only trustworthy once Listener.id_valid() confirms the
notification is still pending (the pid might have been reused in between). A write confirms
that only when it opens a fresh fd (write's confirm): a cached fd still on the task's mm proves
the task is the one it was opened for, and one whose mm is gone writes nothing.

/proc/PID/mem accesses the task's memory as ptrace does (FOLL_FORCE): it reads and writes
PROT_NONE and read-only pages too, where the task's own system call (copy_to_user) would fail
with EFAULT; only unmapped addresses give EIO here. (process_vm_readv respects protections but
costs ~4x more.) A handler that must refuse a read-only output buffer checks /proc/PID/maps.

Errors: `TaskGone` when the task no longer exists (or has no mm left: a zombie); the others
are OSErrors whose errno is the answer the task gets: `BadAddress` (EFAULT) when the range is
not mapped, `StringTooLong` (ENAMETOOLONG) when no NUL was found in max_len bytes, `NotAPath`
(ENOENT, or ENOTDIR for a pipe or socket) for a cwd or fd without a path in the task's root.

Status: `TaskMemory.status` reads /proc/TID/status through a cached fd as well (taskinfo parses
the credentials out of it). Rendering the file costs ~7.5 us here, and opening and closing it
each time as much again. A cached fd names the task it was opened for: once that one is
reaped, reads fail with ESRCH (never a successor that got its tid), and the next call opens the
file afresh.

Costs measured here: read/write ~1.5 us, read_string ~2.5 us, status ~7.5 us (taskinfo:
task_cwd ~8 us, task_creds ~9 us).

Nothing here is thread-safe: use one TaskMemory per thread.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Final

PAGE_SIZE: Final = mmap.PAGESIZE
_PAGE_MASK: Final = PAGE_SIZE - 1
_MEM_FLAGS: Final = os.O_RDWR | os.O_CLOEXEC
#: Largest read or write TaskMemory does in one call: sizes come from the task's registers, and
#: os.pread allocates what it is asked for. Callers bound sizes by the call's own limits first.
MAX_TRANSFER: Final = 64 << 20
GONE_ERRNOS: Final = frozenset((errno.ENOENT, errno.ESRCH))
#: First read of a /proc status file: every task's fits but one with thousands of groups.
_STATUS_READ: Final = 16384


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

    Owns every fd it opens: forget(pid) closes a task's, close() all. Not thread-safe.
    """

    __slots__ = ("_buf", "_fds", "_status_fds", "_view")

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        #: pid -> its /proc/TID/status fd.
        self._status_fds: dict[int, int] = {}
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
        """Close pid's fds, if any: after it exits."""
        self.forget_memory(pid)
        fd = self._status_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def forget_memory(self, pid: int) -> None:
        """Close pid's mem fd, if any: after it execs (a new mm; its status fd stays valid)."""
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def sweep(self) -> None:
        """Close the fds of tasks that have exited: nothing else would (a dead task makes no
        more calls), and every short-lived process of a container would leave some behind."""
        for pid in self._fds.keys() | self._status_fds.keys():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.forget(pid)

    def close(self) -> None:
        """Close every fd (idempotent; the object stays usable and reopens on demand)."""
        fds, self._fds = self._fds, {}
        status_fds, self._status_fds = self._status_fds, {}
        for fd in (*fds.values(), *status_fds.values()):
            os.close(fd)

    def status(self, pid: int) -> bytes:
        """The whole of /proc/TID/status of task pid; TaskGone if it is gone."""
        fd = self._status_fds.get(pid)
        if fd is not None:
            try:
                return _read_whole(fd)
            except OSError:
                pass  # reaped: the tid may name another task now, which a fresh open reads
            del self._status_fds[pid]
            os.close(fd)
        try:
            fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in GONE_ERRNOS:
                raise TaskGone(pid) from None
            raise
        try:
            text = _read_whole(fd)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, ProcessLookupError):
                raise TaskGone(pid) from None
            raise
        self._status_fds[pid] = fd
        return text

    def _reopen(self, pid: int) -> int:
        self.forget_memory(pid)
        try:
            fd = os.open(f"/proc/{pid}/mem", _MEM_FLAGS)
        except OSError as e:
            if e.errno in GONE_ERRNOS:
                raise TaskGone(pid) from None
            raise
        self._fds[pid] = fd
        return fd

    def _failed(self, pid: int, err: OSError, addr: int, size: int) -> Exception:
        """The exception for an errno of a fresh mem fd."""
        if err.errno in (errno.EIO, errno.EFAULT):
            return BadAddress(addr, size, pid)
        if err.errno in GONE_ERRNOS:
            self.forget(pid)
            return TaskGone(pid)
        return err

    def _gone(self, pid: int) -> TaskGone:
        self.forget(pid)
        return TaskGone(pid)

    def read(self, pid: int, addr: int, size: int) -> bytes:
        """size bytes at addr in pid's memory; all of them, or BadAddress."""
        self._check_range(pid, addr, size)  # before allocating what the task's registers ask
        buffer = bytearray(size)
        self._transfer(pid, addr, size, lambda fd: os.preadv(fd, (buffer,), addr))
        return bytes(buffer)

    def read_into(self, pid: int, addr: int, buffer: bytearray | memoryview) -> None:
        """Fill buffer (writable, C-contiguous) from addr in pid's memory, or BadAddress."""
        self._transfer(pid, addr, len(buffer), lambda fd: os.preadv(fd, (buffer,), addr))

    def write(
        self, pid: int, addr: int, data: bytes | bytearray | memoryview, confirm: Callable[[], None] | None = None
    ) -> None:
        """Write data at addr in pid's memory (as ptrace would: read-only private pages too).

        confirm runs after a fresh mem fd is opened and before anything is written through it;
        it raises (TaskGone) unless pid is still the task that asked (Supervisor.check_alive).
        """
        self._transfer(pid, addr, len(data), lambda fd: os.pwrite(fd, data, addr), confirm)

    def _transfer(
        self, pid: int, addr: int, size: int, move: Callable[[int], int], confirm: Callable[[], None] | None = None
    ) -> None:
        """move(fd) size bytes through pid's cached mem fd; on a short or failed move, once more
        through a fresh one (first access, or a stale fd after exec, exit or pid reuse), after
        confirm() if given."""
        fd = self._fds.get(pid)
        if fd is not None:
            try:
                if move(fd) == size:
                    return
            except (OSError, OverflowError):
                pass
        self._check_range(pid, addr, size)
        fd = self._reopen(pid)
        if confirm is not None:
            confirm()
        try:
            done = move(fd)
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


def _read_whole(fd: int) -> bytes:
    """All of a /proc file from its start (a single_open file renders it anew at offset 0)."""
    size = _STATUS_READ
    while len(text := os.pread(fd, size, 0)) == size:
        size *= 4
    return text
