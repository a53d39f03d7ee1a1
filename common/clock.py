"""Wall-clock timestamps as the OCI state and the event records spell them."""

from __future__ import annotations

import time


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with nanoseconds, e.g. 2026-11-22T21:03:37.123456789Z.

    Unlike Go's RFC3339Nano the fraction always has nine digits, so that the strings sort in
    time order (the registry orders by them).
    """
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"
