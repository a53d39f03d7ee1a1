"""Container lifecycle as a user sees it: the wall time of one `controller run` of `true` (create,
start, wait, delete) and of one `controller exec` of `true` into a running container, each
beside runc doing the same to the same bundle.

What is timed is the whole CLI command, process start-up included, because that is what a
script driving zerovisor waits for. The services are already up: a user's first command pays
for starting them once, which is not what these rows are about.
"""

from __future__ import annotations

from pathlib import Path

from bench.cases._containers import SLEEPER, Runc, case_bundle, fresh_id, runc, runc_delete, zerovisor
from bench.harness import Bench, Result, timed
from bench.zerovisor import Zerovisor

RUN = "controller run of true"
EXEC = "controller exec of true"
TARGET = "<= 2x runc now, <= 1x later"


def measure(bench: Bench) -> list[Result]:
    """Run and exec of `true`: zerovisor, and runc beside it when runc is installed."""
    true_bundle = case_bundle(bench, "lifecycle", "true", ["true"])
    sleeper = case_bundle(bench, "lifecycle", "sleeper", SLEEPER)
    rc = runc(bench)
    baselines = ("runc",) if rc is not None else ()
    results: list[Result] = []
    with zerovisor(bench, "lifecycle") as zv:
        # `controller run` without -d deletes the container after it exits, as `runc run` does.
        samples = bench.repeat(lambda: timed(lambda: zv("run", "-b", str(true_bundle), fresh_id("run"))))
        results.append(Result(RUN, "zerovisor", "ms", samples, baselines, TARGET))
        if rc is not None:
            samples = bench.repeat(lambda: timed(lambda: rc("run", "--bundle", str(true_bundle), fresh_id("run"))))
            results.append(Result(RUN, "runc", "ms", samples))

        results.append(Result(EXEC, "zerovisor", "ms", _zv_exec(bench, zv, sleeper), baselines, TARGET))
        if rc is not None:
            results.append(Result(EXEC, "runc", "ms", _runc_exec(bench, rc, sleeper)))
    return results


def _zv_exec(bench: Bench, zv: Zerovisor, sleeper: Path) -> list[float]:
    """`controller exec CID true` into one detached sleeper, timed each time."""
    cid = fresh_id("exec")
    zv("run", "-d", "-b", str(sleeper), cid)
    samples = bench.repeat(lambda: timed(lambda: zv("exec", cid, "true")))
    zv("delete", "--force", cid)
    return samples


def _runc_exec(bench: Bench, rc: Runc, sleeper: Path) -> list[float]:
    """`runc exec CID true` into one detached sleeper (stdio to files, so no console socket)."""
    cid = fresh_id("exec")
    try:
        rc("run", "--detach", "--bundle", str(sleeper), cid)
        return bench.repeat(lambda: timed(lambda: rc("exec", cid, "true")))
    finally:
        runc_delete(rc, [cid])
