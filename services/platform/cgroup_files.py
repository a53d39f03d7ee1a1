"""Cgroup interface files: reading and writing one, parsing their value formats, converting OCI limits.

Limits are converted the way runc converts them, so a config.json means the same thing here as
under runc.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress

from common.errors import InvalidArgument

# v1 reports "no limit" as PAGE_COUNTER_MAX pages, just under 2**63.
_V1_UNLIMITED = 1 << 62


def write_file(path: str, value: str) -> None:
    """Write value to one cgroup file in a single write(2); a refusal names the file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"writing {value!r}: {e.strerror}", path) from e


def join_self(fds: Sequence[int]) -> None:
    """Move the calling process, which must have one thread, into the group of each
    membership file in fds (Cgroup.membership_files, inherited from the parent); then close
    them. Runs in a new task before it does anything else."""
    for fd in fds:
        os.write(fd, b"0")
    for fd in fds:
        os.close(fd)


def read_file(path: str) -> str:
    """One cgroup file's content, without the trailing newline."""
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def parse_keyed(text: str | None) -> dict[str, int]:
    """Parse "key value" lines (cpu.stat, memory.events, cgroup.events, oom_control)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with suppress(ValueError):
            out[key] = int(value)
    return out


def parse_limit(text: str | None) -> int | None:
    """A limit file's value; None for "max", v1's near-2**63 "unlimited" or an absent file."""
    if text is None or text == "max" or int(text) >= _V1_UNLIMITED:
        return None
    return int(text)


def cpu_weight(shares: int) -> int:
    """v1 cpu.shares (2..262144) -> v2 cpu.weight (1..10000), runc's linear mapping."""
    return 1 + ((shares - 2) * 9999) // 262142


def swap_max(memory: int | None, swap: int | None) -> str | None:
    """v2 memory.swap.max for OCI limits (swap counts memory+swap); None leaves it alone.

    runc's ConvertMemorySwapToCgroupV2Value: -1 is unlimited, 0 or None unset.
    """
    if not swap:
        return None
    if swap == -1 or memory == -1:
        return "max"
    if not memory:
        raise InvalidArgument("a memory_swap limit needs a memory_limit")
    if swap < memory:
        raise InvalidArgument(f"memory_swap {swap} is below memory_limit {memory}")
    return str(swap - memory)
