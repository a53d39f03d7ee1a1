"""Container lifecycle as a user sees it: the wall time of one `controller run` of `true` (create,
start, wait, delete) and of one `controller exec` of `true` into a running container, each
beside runc doing the same to the same bundle, and beside the floor of any Python CLI built on
click (the interpreter's start and click's import, measured the same way).

What is timed is the whole CLI command, process start-up included, because that is what a
script driving zerovisor waits for. The services are already up: a user's first command pays
for starting them once, which is not what these rows are about.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.cases._containers import SLEEPER, Runc, case_bundle, fresh_id, runc, runc_delete, zerovisor
from bench.harness import Bench, Result, command, timed
from bench.zerovisor import REPO, Zerovisor

RUN = "controller run of true"
EXEC = "controller exec of true"
TARGET = "<= 2x runc now, <= 1x later"
#: The start of any Python command line on click here: the interpreter and `import click`, which
#: every `controller` command pays before it does anything of its own.
FLOOR = "python+click"


def _floor(bench: Bench) -> float:
    """Milliseconds of one `python -c "import click"`, run and waited for as the commands are."""
    return timed(lambda: command([sys.executable, "-c", "import click"], bench.work / "floor.log", cwd=REPO))


def measure(bench: Bench) -> list[Result]:
    """Run and exec of `true`: zerovisor, and runc beside it when runc is installed."""
    true_bundle = case_bundle(bench, "lifecycle", "true", ["true"])
    sleeper = case_bundle(bench, "lifecycle", "sleeper", SLEEPER)
    rc = runc(bench)
    baselines = (FLOOR, "runc") if rc is not None else (FLOOR,)
    results: list[Result] = [Result(RUN, FLOOR, "ms", bench.repeat(lambda: _floor(bench)))]
    with zerovisor(bench, "lifecycle") as zv:
        # `controller run` without -d deletes the container after it exits, as `runc run` does.
        samples = bench.repeat(lambda: timed(lambda: zv("run", "-b", str(true_bundle), fresh_id("run"))))
        results.append(Result(RUN, "zerovisor", "ms", samples, baselines, TARGET))
        if rc is not None:
            samples = bench.repeat(lambda: timed(lambda: rc("run", "--bundle", str(true_bundle), fresh_id("run"))))
            results.append(Result(RUN, "runc", "ms", samples))

        results.append(Result(EXEC, FLOOR, "ms", bench.repeat(lambda: _floor(bench))))
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
