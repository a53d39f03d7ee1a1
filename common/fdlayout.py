"""Laying out the fds of a freshly forked child before it runs something else.

The platform's exec child (runc's setns process) and the controller's command-server worker
both arrive from a fork holding every fd of their parent, and must go on with exactly the fds
their caller asked for, at the numbers it asked for.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence

#: Above any fd a process can hold (the kernel's fs.nr_open ceiling is 2^30).
FD_LIMIT = 1 << 30


def place_fds(files: Sequence[int], targets: Sequence[int], keep: Sequence[int] = ()) -> list[int]:
    """files[i] becomes fd targets[i] (inheritable); each fd of keep moves above them all
    (close-on-exec); every other fd is closed, files and keep's old numbers among them.

    Returns keep's new numbers, in order. Only for a process that owns nothing else: a Python
    object still wrapping a closed fd must be detached first.
    """
    floor = max([*targets, *files, *keep, 2]) + 1
    # Everything moves above the targets first, so that no dup2 lands on a source.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in files]
    kept = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in keep]
    start = 0
    for fd in sorted([*high, *kept]):
        os.closerange(start, fd)
        start = fd + 1
    # One close_range(2) on Linux: no /proc needed (an exec child is in a container's mounts).
    os.closerange(start, FD_LIMIT)
    for fd, target in zip(high, targets, strict=True):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    return kept
