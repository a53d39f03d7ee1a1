"""seccomp user notification: the sentry's side of a listener fd (the hot path of every trapped call).

A sandboxed task that makes a trapped system call (SCMP_ACT_NOTIFY) sleeps in the kernel until
whoever holds the filter's listener fd answers it. `Listener` wraps one such fd and speaks the
ioctls of seccomp_unotify(2): receive a notification, check that it is still valid, answer it
with a value or an errno, let the kernel run the call itself (CONTINUE), or install an fd into
the task (ADDFD, then the answer apart: see install_fd).

Hot path rules kept here: every ioctl reuses a buffer preallocated per Listener, structs are
packed and unpacked in place (struct.pack_into / unpack_from), nothing logs. A Listener is not
thread-safe (its buffers are shared by all calls); use one per thread.

Measured on this machine (Python 3.11, timeit, FIONREAD on a pipe): `fcntl.ioctl` with a mutable
bytearray costs 0.32 us a call against 0.78 us for ctypes `libc.ioctl` (CDLL or PyDLL), so
fcntl.ioctl it is; re-zeroing the 80-byte receive buffer by slice assignment from a constant
costs 0.06 us against 0.36 us for ctypes.memset. fcntl.ioctl releases the GIL while the ioctl
runs, so a NOTIF_RECV that blocks does not stop other threads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Final

#: SECCOMP_IOCTL_NOTIF_RECV: _IOWR('!', 0, struct seccomp_notif).
NOTIF_RECV: Final = 0xC0502100
#: SECCOMP_IOCTL_NOTIF_SEND: _IOWR('!', 1, struct seccomp_notif_resp).
NOTIF_SEND: Final = 0xC0182101
#: SECCOMP_IOCTL_NOTIF_ID_VALID: _IOW('!', 2, __u64).
NOTIF_ID_VALID: Final = 0x40082102
#: SECCOMP_IOCTL_NOTIF_ADDFD: _IOW('!', 3, struct seccomp_notif_addfd).
NOTIF_ADDFD: Final = 0x40182103
#: SECCOMP_IOCTL_NOTIF_SET_FLAGS: _IOW('!', 4, __u64); the flags are passed by value (Linux 6.6).
NOTIF_SET_FLAGS: Final = 0x40082104

#: seccomp_notif_resp.flags: let the kernel run the call as if no filter had trapped it.
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1
#: NOTIF_SET_FLAGS: wake the supervisor on the CPU of the notifying task (fewer cross-CPU wake-ups).
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: Final = 1
#: seccomp_notif_addfd.flags: install at newfd (like dup2) instead of the lowest free number.
SECCOMP_ADDFD_FLAG_SETFD: Final = 1
#: seccomp_notif_addfd.flags: install and answer the call with the new fd number, atomically.
SECCOMP_ADDFD_FLAG_SEND: Final = 2

#: struct seccomp_notif: id, pid, flags, data.nr, data.arch, data.instruction_pointer, data.args[6].
NOTIF_STRUCT: Final = struct.Struct("=QIIiIQ6Q")
#: struct seccomp_notif_resp: id, val, error (-errno or 0), flags.
RESP_STRUCT: Final = struct.Struct("=QqiI")
#: struct seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags.
ADDFD_STRUCT: Final = struct.Struct("=QIIII")
_ID_STRUCT: Final = struct.Struct("=Q")

assert NOTIF_STRUCT.size == 80 and RESP_STRUCT.size == 24 and ADDFD_STRUCT.size == 24

_ZERO_NOTIF: Final = bytes(NOTIF_STRUCT.size)
_ENOENT: Final = errno.ENOENT
_NOTHING_RECEIVED: Final = frozenset((errno.ENOENT, errno.EINTR))
_ioctl = fcntl.ioctl
_unpack_notif = NOTIF_STRUCT.unpack_from
_pack_resp = RESP_STRUCT.pack_into
_pack_addfd = ADDFD_STRUCT.pack_into
_pack_id = _ID_STRUCT.pack_into


def as_int(arg: int) -> int:
    """A system-call argument declared `int` (fd, flags, mode): the low 32 bits, signed.

    The kernel ignores the upper half of the register for such arguments, and so must the
    sentry (AT_FDCWD may arrive as 0xffffff9c or as 0xffffffffffffff9c).
    """
    arg &= 0xFFFFFFFF
    return arg - 0x100000000 if arg & 0x80000000 else arg


def as_long(arg: int) -> int:
    """A system-call argument declared `long` or `off_t`: the 64-bit register, signed."""
    return arg - 0x10000000000000000 if arg & 0x8000000000000000 else arg


class Notification:
    """One trapped system call as the kernel reported it. A new object per recv().

    pid is the calling thread's TID in the receiver's pid namespace (0 if it cannot see it);
    args are the six raw 64-bit argument registers, unsigned (see as_int / as_long).
    """

    __slots__ = ("arch", "args", "id", "instruction_pointer", "nr", "pid")

    def __init__(self, notif_id: int, pid: int, nr: int, arch: int, ip: int, args: tuple[int, ...]) -> None:
        self.id = notif_id
        self.pid = pid
        self.nr = nr
        self.arch = arch
        self.instruction_pointer = ip
        self.args = args

    def __repr__(self) -> str:
        return f"Notification(id={self.id:#x}, pid={self.pid}, nr={self.nr}, args={self.args})"


class Listener:
    """One seccomp listener fd and preallocated buffers for its ioctls.

    The Listener owns the fd from construction on: close() closes it (also on leaving a
    `with` block); detach() gives it up without closing. There is no finalizer: an unclosed
    Listener leaks its fd. If the last copy of a listener fd is closed, every trapped call of
    the filter's tasks fails with ENOSYS for good (KERNEL-FACTS), so the platform keeps one.

    recv() blocks until a notification arrives (the kernel ignores O_NONBLOCK here): call it
    when poll() reports POLLIN on fileno(). POLLHUP means every task of the filter is gone.
    The answer methods return False (or -1) when the kernel says ENOENT, i.e. the task died or
    its call was interrupted meanwhile; that is routine and not an error. Other failures
    (EINVAL, EINPROGRESS for an id not received, EBADF) raise OSError.
    """

    __slots__ = ("_addfd_buf", "_fd", "_id_buf", "_recv_buf", "_recv_view", "_resp_buf")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._recv_buf = bytearray(NOTIF_STRUCT.size)
        self._recv_view = memoryview(self._recv_buf)
        self._resp_buf = bytearray(RESP_STRUCT.size)
        self._addfd_buf = bytearray(ADDFD_STRUCT.size)
        self._id_buf = bytearray(_ID_STRUCT.size)

    def fileno(self) -> int:
        """The listener fd, for poll/epoll registration (-1 once closed or detached)."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the fd (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Give up ownership: the fd, which the caller must now close."""
        fd, self._fd = self._fd, -1
        return fd

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_sync_wakeup(self) -> None:
        """Ask the kernel to wake this supervisor on the notifying task's CPU (Linux 6.6+).

        Meant for a supervisor that blocks in recv(): it trades scheduling freedom for fewer
        cross-CPU wake-ups. Raises OSError (EINVAL) on kernels without it.
        """
        _ioctl(self._fd, NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)

    def recv(self) -> Notification | None:
        """The next notification; None if the kernel says ENOENT (the task died or was
        interrupted before we got it) or the wait was interrupted by a signal (EINTR)."""
        t = self.recv_fields()
        return None if t is None else Notification(t[0], t[1], t[3], t[4], t[5], t[6:])

    def recv_fields(self) -> tuple[int, ...] | None:
        """recv() as struct seccomp_notif's fields, unpacked (id, pid, flags, nr, arch,
        instruction_pointer, then the six args): the supervisor's hot path builds its own
        object from them rather than a Notification too."""
        buf = self._recv_buf
        self._recv_view[:] = _ZERO_NOTIF  # the kernel refuses a buffer that is not all zero
        try:
            _ioctl(self._fd, NOTIF_RECV, buf, True)
        except OSError as e:
            if e.errno in _NOTHING_RECEIVED:
                return None
            raise
        fields: tuple[int, ...] = _unpack_notif(buf)
        return fields

    def id_valid(self, notif_id: int) -> bool:
        """Whether the notification is still pending (its task alive and still waiting).

        Check it after reading the task's memory and before acting on what was read: the pid
        may have been reused, or the task may have been killed, in between.
        """
        _pack_id(self._id_buf, 0, notif_id)
        try:
            _ioctl(self._fd, NOTIF_ID_VALID, self._id_buf, True)
        except OSError as e:
            if e.errno == _ENOENT:
                return False
            raise
        return True

    def respond(self, notif_id: int, val: int = 0, error: int = 0) -> bool:
        """Complete the call: it returns val, or fails with the positive errno `error`.

        False if the task is gone (ENOENT), True when answered.
        """
        buf = self._resp_buf
        _pack_resp(buf, 0, notif_id, val, -error, 0)
        try:
            _ioctl(self._fd, NOTIF_SEND, buf, True)
        except OSError as e:
            if e.errno == _ENOENT:
                return False
            raise
        return True

    def respond_continue(self, notif_id: int) -> bool:
        """Let the kernel run the call itself. Only where the kernel enforces the same decision
        anyway: the task may change the arguments in memory after the sentry looked at them.
        False if the task is gone."""
        buf = self._resp_buf
        _pack_resp(buf, 0, notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        try:
            _ioctl(self._fd, NOTIF_SEND, buf, True)
        except OSError as e:
            if e.errno == _ENOENT:
                return False
            raise
        return True

    def install_fd(self, notif_id: int, srcfd: int, newfd_flags: int = 0) -> int:
        """Install a copy of our srcfd into the task and complete the call with its number: the
        number, or -1 if the task is gone or left the call in between (the fd stays open in it).

        Two ioctls, not one ADDFD with SEND: on Linux 6.18 a supervisor killed inside that
        ioctl, before the task took the fd, leaves the call completed with 0 and no fd
        installed (SEND marks it answered up front; the dying ioctl withdraws only the fd), and
        the program writes to its stdin. Killed between the two, the task waits on, and the
        next supervisor nudges it to make the call again. tests/unit/sentry/test_nudge.py pins
        both. The second wake-up of the task costs ~7 us on one CPU, ~25 us across two.
        """
        newfd = self.add_fd(notif_id, srcfd, newfd_flags, send=False)
        if newfd < 0 or not self.respond(notif_id, newfd):
            return -1
        return newfd

    def add_fd(
        self,
        notif_id: int,
        srcfd: int,
        newfd_flags: int = 0,
        *,
        send: bool,
        target_fd: int | None = None,
    ) -> int:
        """Install a copy of our srcfd into the task; the fd number it got there, or -1 if the
        task is gone (ENOENT).

        newfd_flags may only be O_CLOEXEC. With send the call is completed at the
        same time, returning the new fd number (SECCOMP_ADDFD_FLAG_SEND): no respond() follows (not safe
        against a supervisor killed meanwhile: see install_fd).
        Without send the call is still pending and must be answered. target_fd installs at that
        number, replacing whatever the task had there (SECCOMP_ADDFD_FLAG_SETFD). srcfd stays
        ours: the caller closes it.
        """
        flags = SECCOMP_ADDFD_FLAG_SEND if send else 0
        if target_fd is None:
            target_fd = 0
        else:
            flags |= SECCOMP_ADDFD_FLAG_SETFD
        buf = self._addfd_buf
        _pack_addfd(buf, 0, notif_id, flags, srcfd, target_fd, newfd_flags)
        try:
            newfd: int = _ioctl(self._fd, NOTIF_ADDFD, buf, True)
        except OSError as e:
            if e.errno == _ENOENT:
                return -1
            raise
        return newfd
