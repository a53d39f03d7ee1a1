"""uname, sethostname, sysinfo: answered from the container's view, not the host's.

uname reports the container's hostname and the configured kernel release; sysinfo reports the
container's memory limit as its total RAM and the limit less its cgroup's usage as free;
sethostname changes what uname reports, for a task with CAP_SYS_ADMIN, as in a UTS namespace
of its own.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from pathlib import Path

from services.sentry.supervisor import Call, Handler, Supervisor

#: Each struct utsname field is a NUL-terminated char[65].
_UTS_FIELD = 65
_HOST_UNAME = os.uname()
#: struct sysinfo on x86_64 (112 bytes): uptime, loads[3], totalram, freeram, sharedram,
#: bufferram, totalswap, freeswap, procs, pad, totalhigh, freehigh, mem_unit.
_SYSINFO = struct.Struct("=q3Q6QHH4xQQI")
_SYSINFO_SIZE = 112
_CAP_SYS_ADMIN = 21
_libc = ctypes.CDLL(None, use_errno=True)


def _field(text: str) -> bytes:
    return text.encode()[: _UTS_FIELD - 1].ljust(_UTS_FIELD, b"\0")


@functools.lru_cache(maxsize=256)
def _utsname(hostname: str, release: str) -> bytes:
    """struct utsname as a container sees it; cached, because uname is called in loops and the
    hot path should not build it every time."""
    return b"".join(
        _field(value)
        for value in (_HOST_UNAME.sysname, hostname, release, _HOST_UNAME.version, _HOST_UNAME.machine, "(none)")
    )


def _uname(sv: Supervisor, call: Call) -> None:
    w = call.w
    sv.write_answer(call, call.args[0], _utsname(w.hostname, w.release))
    sv.reply(call, 0)


def _has_cap(pid: int, cap: int) -> bool:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _sethostname(sv: Supervisor, call: Call) -> None:
    length = call.args[1]
    if length > _UTS_FIELD - 1:
        sv.fail(call, errno.EINVAL)
        return
    if not _has_cap(call.pid, _CAP_SYS_ADMIN):
        sv.fail(call, errno.EPERM)
        return
    name = sv.mem.read(call.pid, call.args[0], length) if length else b""
    sv.check_alive(call)
    hostname = name.split(b"\0", 1)[0].decode(errors="replace")
    if call.w.hostname_file is not None:
        _keep(call.w.hostname_file, hostname)  # before the task sees it set
    call.w.hostname = hostname
    sv.reply(call, 0)


def _keep(path: Path, hostname: str) -> None:
    """Write hostname to path atomically (a restarted sentry reads it whole or not at all)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(hostname)
    os.replace(tmp, path)


def _sysinfo(sv: Supervisor, call: Call) -> None:
    buf = ctypes.create_string_buffer(_SYSINFO_SIZE)
    if _libc.sysinfo(buf) != 0:
        sv.fail(call, ctypes.get_errno())
        return
    values = list(_SYSINFO.unpack_from(buf.raw))
    limit = call.w.memory_limit
    unit = values[-1] or 1
    if limit is not None:
        total = limit // unit
        used = _memory_usage(call.pid) // unit
        values[4] = min(values[4], total)  # totalram
        values[5] = max(min(values[5], total - used), 0)  # freeram
        values[6:10] = [0, 0, 0, 0]  # sharedram, bufferram, totalswap, freeswap: the host's mean nothing here
    packed = _SYSINFO.pack(*values)
    sv.write_answer(call, call.args[0], packed + buf.raw[len(packed) :])
    sv.reply(call, 0)


def _memory_usage(pid: int) -> int:
    """Bytes the task's memory cgroup uses (v1 memory.usage_in_bytes or v2 memory.current), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates = [f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"]
        elif controllers == "":
            candidates = [f"/sys/fs/cgroup{path}/memory.current", f"/sys/fs/cgroup/unified{path}/memory.current"]
        else:
            continue
        for candidate in candidates:
            try:
                with open(candidate) as f:
                    return int(f.read())
            except (OSError, ValueError):
                continue
    return 0


HANDLERS: dict[str, Handler] = {
    "uname": _uname,
    "sethostname": _sethostname,
    "sysinfo": _sysinfo,
}
