"""Decoding a trapped syscall for `--strace` (python-ptrace's syscall tables), like runsc --strace.

Only called when strace is on for the container: it reads string arguments from the task's
memory, which costs a few microseconds a call.
"""

from __future__ import annotations

from ptrace.syscall.names import SYSCALL_NAMES
from ptrace.syscall.prototypes import SYSCALL_PROTOTYPES

from services.sentry.taskmem import TaskMemory

#: Argument types shown as the string they point to.
_STRING_TYPES = frozenset({"const char *", "char *", "const char __user *", "char __user *"})
#: Argument names that hold a path or a name even when typed otherwise.
_STRING_NAMES = frozenset({"filename", "pathname", "oldname", "newname", "path", "name", "target", "linkpath"})


def describe_call(mem: TaskMemory, pid: int, nr: int, args: tuple[int, ...]) -> str:
    """name(arg, ...) with string arguments read from pid's memory."""
    name = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
    proto = SYSCALL_PROTOTYPES.get(name)
    if proto is None:
        return f"{name}({', '.join(hex(a) for a in args)})"
    parts = []
    for (ctype, argname), value in zip(proto[1], args, strict=False):
        if (ctype in _STRING_TYPES or argname in _STRING_NAMES) and value:
            try:
                parts.append(repr(mem.read_string(pid, value, 256).decode(errors="replace")))
            except Exception:  # noqa: BLE001 - a trace line must never fail the syscall
                parts.append(hex(value))
        elif ctype in ("int", "unsigned int", "umode_t") and argname in ("mode",):
            parts.append(oct(value))
        elif ctype == "int":
            parts.append(str(value - (1 << 32) if value & 0x80000000 else value & 0xFFFFFFFF))
        else:
            parts.append(hex(value) if value > 0xFFFF else str(value))
    return f"{name}({', '.join(parts)})"
