"""Starting N containers at once (N = 1, 5, 10, 20): N `controller run -d` started together,
timed until the last one has returned, i.e. until all N run. It shows how start-up time grows
with N: flat would mean the services start containers in parallel, linear that they serialise
them, worse that something contends. runc does the same beside it when installed, which tells
what part of the growth the machine itself (2 CPUs) imposes.
"""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path

from bench.cases._containers import (
    SLEEPER,
    Runc,
    case_bundle,
    fresh_id,
    runc,
    runc_delete,
    runc_start_detached,
    zerovisor,
    zv_delete,
    zv_start_detached,
)
from bench.harness import Bench, Result
from bench.zerovisor import Zerovisor

CASE = "start N containers at once"


def measure(bench: Bench) -> list[Result]:
    """For each N: zerovisor, then runc; baselines are N=1 (growth) and runc at the same N."""
    sizes = (1, 2) if bench.quick else (1, 5, 10, 20)
    sleeper = case_bundle(bench, "scale", "sleeper", SLEEPER)
    rc = runc(bench)
    results: list[Result] = []
    with zerovisor(bench, "scale") as zv:
        for n in sizes:
            # Deleting is not timed; it runs before the next sample so that every sample starts
            # from an empty host.
            samples = bench.repeat(partial(_zv_once, zv, sleeper, n))
            growth = ("N=1",) if n > 1 else ()
            beside = (f"runc N={n}",) if rc is not None else ()
            results.append(Result(CASE, f"N={n}", "ms", samples, growth + beside, note=_per_container(samples, n)))
            if rc is not None:
                samples = bench.repeat(partial(_runc_once, rc, sleeper, n))
                growth = ("runc N=1",) if n > 1 else ()
                results.append(Result(CASE, f"runc N={n}", "ms", samples, growth, note=_per_container(samples, n)))
    return results


def _zv_once(zv: Zerovisor, sleeper: Path, n: int) -> float:
    """n sleepers started at once (ms), then deleted."""
    ids = [fresh_id(f"scale{n}") for _ in range(n)]
    elapsed = zv_start_detached(zv, sleeper, ids)
    zv_delete(zv, ids)
    return elapsed


def _runc_once(rc: Runc, sleeper: Path, n: int) -> float:
    """n sleepers started at once with runc (ms), then deleted."""
    ids = [fresh_id(f"runc{n}") for _ in range(n)]
    try:
        return runc_start_detached(rc, sleeper, ids)
    finally:
        runc_delete(rc, ids)


def _per_container(samples: list[float], n: int) -> str:
    """The median divided by n: what one container costs at this N."""
    return f"{statistics.median(samples) / n:.0f} ms per container"
