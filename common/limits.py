"""rlimit names as OCI and gVisor spell them, and their Linux numbers.

Shared by the controller (config.json validation), the sentry (StartContainerArgs.limits) and
the platform (setrlimit in the container's init), so that all three accept the same names.
"""

from __future__ import annotations

#: OCI rlimit names -> RLIMIT_* numbers (include/uapi/asm-generic/resource.h).
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}
