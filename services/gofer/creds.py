"""Acting as the caller: the file-system identity of the calling thread.

Each operation runs with the task's fsuid, fsgid and supplementary groups (``become``) and puts
the gofer's own back afterwards (``restore``), so the host kernel makes every permission
decision as it would for the task, and new files and directories are owned by the task.
All three are per-thread: setfsuid/setfsgid are, and the groups are set with the raw syscall
(glibc's setgroups signals every thread to change theirs). The gofer serves one request at a
time on its main thread, so nothing else runs under a borrowed identity.

When the fsuid leaves 0 the kernel drops the file-system capabilities (CAP_CHOWN,
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID, CAP_MKNOD, ...) from the
effective set, and raises them again when it returns to 0. So container root (fsuid 0) acts
with full file-system capabilities inside the container's mounts, as root does in a runc
container; the mount fds and openat2(RESOLVE_IN_ROOT) keep it there. The capabilities that
are not file-system ones (CAP_SYS_ADMIN, CAP_SETFCAP) stay; the operations that would use
them (trusted.* and security.* xattrs, device nodes, whiteouts) are refused by ops.py and
attrs.py. Changing the fsuid also makes the process non-dumpable, which the gofer does not mind.

Cost: each switch is a system call through ctypes (about 1.5 us here), so only the ids that
differ from the gofer's own are switched, and setfsuid/setfsgid, which cannot report failure,
are verified with a second call only where they could fail: outside the initial user namespace
(an unmapped id is silently ignored) or without CAP_SETUID/CAP_SETGID. Putting the gofer's own
ids back cannot fail (they are its effective ids).
"""

from __future__ import annotations

import errno
import os

from common.errors import InvalidArgument
from common.messages.gofer import Creds
from services.gofer.syscalls import MAX_ID, NGROUPS_MAX, fsgid, fsuid, setfsgid, setfsuid, setgroups_thread

#: The gofer's own identity, put back after every operation.
_BASE_UID = os.geteuid()
_BASE_GID = os.getegid()
_BASE_GROUPS = os.getgroups()

_CAP_SETGID = 6
_CAP_SETUID = 7
_FULL_MAP = ["0", "0", "4294967295"]


def _switches_always_work() -> bool:
    """Initial user namespace (every id valid) and CAP_SETUID + CAP_SETGID in effect."""
    try:
        with open("/proc/self/uid_map") as u, open("/proc/self/gid_map") as g:
            if u.read().split() != _FULL_MAP or g.read().split() != _FULL_MAP:
                return False
        with open("/proc/self/status") as f:
            caps = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(caps >> _CAP_SETUID & 1 and caps >> _CAP_SETGID & 1)


_TRUSTED = _switches_always_work()


def validate(creds: Creds) -> None:
    """Refuse ids the kernel would read as "no change" or reject (a malformed request)."""
    if not (0 <= creds.uid <= MAX_ID and 0 <= creds.gid <= MAX_ID):
        raise InvalidArgument(f"creds: uid {creds.uid} / gid {creds.gid} out of range")
    if len(creds.groups) > NGROUPS_MAX or not all(0 <= g <= MAX_ID for g in creds.groups):
        raise InvalidArgument("creds: bad supplementary groups")


def is_base(creds: Creds) -> bool:
    """True when creds are the gofer's own (nothing to switch)."""
    return creds.uid == _BASE_UID and creds.gid == _BASE_GID and creds.groups == _BASE_GROUPS


def become(creds: Creds) -> None:
    """Take on creds (validated) in this thread. On failure the gofer's identity is back and
    OSError raised: the operation must not run. Groups and fsgid first, fsuid last."""
    try:
        if creds.groups != _BASE_GROUPS:
            setgroups_thread(creds.groups)
        if creds.gid != _BASE_GID:
            setfsgid(creds.gid)
            if not _TRUSTED and fsgid() != creds.gid:
                raise OSError(errno.EPERM, f"cannot take on fsgid {creds.gid}")
        if creds.uid != _BASE_UID:
            setfsuid(creds.uid)
            if not _TRUSTED and fsuid() != creds.uid:
                raise OSError(errno.EPERM, f"cannot take on fsuid {creds.uid}")
    except BaseException:
        restore()
        raise


def restore(creds: Creds | None = None) -> None:
    """Put the gofer's own identity back in this thread: what ``become(creds)`` changed, or all."""
    if creds is None or creds.uid != _BASE_UID:
        setfsuid(_BASE_UID)
    if creds is None or creds.gid != _BASE_GID:
        setfsgid(_BASE_GID)
    if creds is None or creds.groups != _BASE_GROUPS:
        setgroups_thread(_BASE_GROUPS)
