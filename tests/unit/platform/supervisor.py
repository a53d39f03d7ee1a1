"""A tiny seccomp-notify supervisor for the stub tests: every trapped call is let through.

It answers each notification with SECCOMP_USER_NOTIF_FLAG_CONTINUE and records the call's
number and path argument, read from the task's memory, until the filter's last task is gone
(POLLHUP). Only for single-threaded drivers that reap the container's init themselves.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import time
from typing import Any

NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
#: struct seccomp_notif: id, pid, flags, nr, arch, instruction pointer, args[6].
NOTIF = struct.Struct("=QIIiIQ6Q")
#: struct seccomp_notif_resp: id, val, error, flags.
RESP = struct.Struct("=QqiI")
FLAG_CONTINUE = 1

#: x86_64 numbers of the calls whose path argument is recorded: nr -> (path arg, flags arg).
PATH_ARGS: dict[int, tuple[int, int | None]] = {
    2: (0, 1),  # open
    257: (1, 2),  # openat
    437: (1, None),  # openat2
    85: (0, None),  # creat
    83: (0, None),  # mkdir
    258: (1, None),  # mkdirat
    87: (0, None),  # unlink
    263: (1, None),  # unlinkat
    59: (0, None),  # execve
}


def read_string(pid: int, address: int, limit: int = 4096) -> str | None:
    """The NUL-terminated string at address in pid's memory, or None if unreadable."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = b""
        while len(data) < limit and b"\0" not in data:
            chunk = os.pread(fd, 256, address + len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None if not data else data.decode(errors="replace")
    finally:
        os.close(fd)
    return data.split(b"\0", 1)[0].decode(errors="replace")


def _describe(pid: int, nr: int, args: tuple[int, ...]) -> dict[str, Any]:
    note: dict[str, Any] = {"nr": nr}
    if nr in PATH_ARGS:
        path_arg, flags_arg = PATH_ARGS[nr]
        note["path"] = read_string(pid, args[path_arg])
        if flags_arg is not None:
            note["flags"] = args[flags_arg]
    return note


def serve(listener: int, init_pid: int | None = None, timeout: float = 60.0) -> tuple[list[dict[str, Any]], int]:
    """Let every notification through until POLLHUP; the notifications and the init's wait status.

    The init, when it is our child (init_pid), is reaped on the way: the filter's users drop
    only as its tasks are reaped. Otherwise the status is 0. TimeoutError after timeout s.
    """
    deadline = time.monotonic() + timeout
    notes: list[dict[str, Any]] = []
    status: int | None = None
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no POLLHUP on the listener within {timeout:g} s: {notes}")
        hangup = False
        for _, events in poller.poll(100):
            if events & select.POLLIN:
                _answer(listener, notes)
            elif events & (select.POLLHUP | select.POLLERR):
                hangup = True
        if status is None and init_pid is not None:
            pid, wait_status = os.waitpid(init_pid, os.WNOHANG)
            if pid:
                status = wait_status
        if hangup:
            break
    if status is None:
        status = os.waitpid(init_pid, 0)[1] if init_pid is not None else 0
    return notes, status


def _answer(listener: int, notes: list[dict[str, Any]]) -> None:
    buf = bytearray(NOTIF.size)  # zeroed each time, or the kernel answers EINVAL
    try:
        fcntl.ioctl(listener, NOTIF_RECV, buf)
    except OSError as e:
        if e.errno == errno.ENOENT:  # the task died or was interrupted meanwhile
            return
        raise
    nid, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
    notes.append(_describe(pid, nr, tuple(args)))
    try:
        fcntl.ioctl(listener, NOTIF_SEND, RESP.pack(nid, 0, 0, FLAG_CONTINUE))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
