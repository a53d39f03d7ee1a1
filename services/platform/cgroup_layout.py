"""Cgroup hierarchy discovery: which layout this host has and where each controller is mounted.

A host has one of two layouts:

- cgroup v2: one unified hierarchy mounted at the root;
- cgroup v1, alone or hybrid (v2 mounted beside the v1 hierarchies, usually at
  ``<root>/unified``, carrying no controller we need): one mount per controller hierarchy,
  co-mounted controllers ("cpu,cpuacct") sharing one.

The layout comes from /proc/self/mountinfo, never from guessing at directory names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: Where the hierarchies are mounted unless a caller says otherwise.
DEFAULT_ROOT = "/sys/fs/cgroup"
#: The v1 hierarchies a container joins.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
#: Key of the one directory in `Cgroup.paths()` on v2 (runc's convention).
UNIFIED = ""


@dataclass(frozen=True)
class Layout:
    """Where the cgroup hierarchies are mounted."""

    #: True when one cgroup v2 hierarchy is mounted at the root.
    unified: bool
    #: Controller -> mount point; on v2 the only key is UNIFIED.
    mounts: dict[str, str]


def parse_mountinfo(text: str, root: str = DEFAULT_ROOT) -> Layout:
    """The layout a /proc/PID/mountinfo text describes for the hierarchies under root.

    A cgroup2 mount at root means v2. Otherwise each v1 ("cgroup") mount below root is listed
    under every controller of its super options, so co-mounted controllers ("cpu,cpuacct")
    share a mount point, and a cgroup2 mount elsewhere (hybrid) is ignored.
    """
    root = os.path.normpath(root)
    mounts: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        # Optional fields (shared:N, master:N) vary in number: find the "-" separator.
        if "-" not in fields[5:] or len(fields) < fields.index("-", 5) + 4:
            continue
        sep = fields.index("-", 5)
        # Mount points escape space, tab, newline and backslash as \ooo.
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        if fields[sep + 1] == "cgroup2" and mountpoint == root:
            return Layout(unified=True, mounts={UNIFIED: root})
        if fields[sep + 1] == "cgroup" and mountpoint.startswith(root + "/"):
            for opt in fields[sep + 3].split(","):
                mounts.setdefault(opt, mountpoint)
    return Layout(unified=False, mounts={c: m for c, m in mounts.items() if c in V1_CONTROLLERS})


def detect_layout(root: str = DEFAULT_ROOT) -> Layout:
    """The layout of this host's hierarchies under root, from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return parse_mountinfo(f.read(), root)
