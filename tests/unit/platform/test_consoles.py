"""HeldConsoles: a kept pty master keeps its terminal up until it is released, its process is
gone or its time is over; checked on a pipe, whose reader sees EOF once no writer is left."""

from __future__ import annotations

import os
import time

from services.platform.consoles import HeldConsoles


def writer_held(hold: float = 60.0) -> tuple[HeldConsoles, int]:
    """A pipe's write end kept for pid 7 and our own copy closed; its read end (the caller's)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    consoles = HeldConsoles(hold)
    consoles.keep(7, w)
    os.close(w)
    return consoles, r


def hung_up(r: int) -> bool:
    try:
        return os.read(r, 1) == b""
    except BlockingIOError:
        return False


def test_a_kept_master_stays_open_until_released() -> None:
    consoles, r = writer_held()
    try:
        assert not hung_up(r) and 7 in consoles
        again = consoles.dup(7)
        assert again is not None
        os.close(again)
        consoles.release(7)
        assert hung_up(r) and 7 not in consoles
        consoles.release(7)  # a second release changes nothing
        assert consoles.dup(7) is None
    finally:
        os.close(r)


def test_a_master_nobody_claims_is_dropped_after_its_time() -> None:
    consoles, r = writer_held(hold=5.0)
    try:
        consoles.expire(time.monotonic())
        assert not hung_up(r)
        consoles.expire(time.monotonic() + 5.0)
        assert hung_up(r) and len(consoles) == 0
    finally:
        os.close(r)
