"""Container lifecycle as a user sees it: the wall time of one `controller run` of `true` (create,
start, wait, delete) and of one `controller exec` of `true` into a running container, each
beside runc doing the same to the same bundle, and beside the floor of any Python CLI built on
click (the interpreter's start and click's import, measured the same way). zerovisor's command
server runs the commands (warmed up with the rest); "zerovisor in-process" is the same command
run without it, in its own interpreter, as with a terminal on stdio or ZEROVISOR_CLI_SERVER=0.

What is timed is the whole CLI command, process start-up included, because that is what a
script driving zerovisor waits for. The services are already up: a user's first command pays
for starting them once, which is not what these rows are about.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.cases._containers import SLEEPER, Runc, case_bundle, fresh_id, runc, runc_delete, zerovisor
from bench.harness import Bench, Result, command, timed
from bench.zerovisor import REPO, Zerovisor

RUN = "controller run of true"
EXEC = "controller exec of true"
TARGET = "<= 2x runc now, <= 1x later"
#: zerovisor with every command in its own process: no command server (cmdserver/), as before it.
IN_PROCESS = "zerovisor in-process"
#: The environment that makes a command run in its own process.
NO_SERVER = {"ZEROVISOR_CLI_SERVER": "0"}
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
    results: list[Result] = []
    with zerovisor(bench, "lifecycle") as zv:
        # `controller run` without -d deletes the container after it exits, as `runc run` does.
        runs: dict[str, Callable[[], float]] = {
            FLOOR: lambda: _floor(bench),
            "zerovisor": lambda: timed(lambda: zv("run", "-b", str(true_bundle), fresh_id("run"))),
            IN_PROCESS: lambda: timed(lambda: zv("run", "-b", str(true_bundle), fresh_id("run"), env=NO_SERVER)),
        }
        if rc is not None:
            runs["runc"] = lambda: timed(lambda: rc("run", "--bundle", str(true_bundle), fresh_id("run")))
        results += _results(RUN, bench.repeat_in_turn(runs))
        with _zv_sleeper(zv, sleeper) as zv_cid, _runc_sleeper(rc, sleeper) as runc_cid:
            execs: dict[str, Callable[[], float]] = {
                FLOOR: lambda: _floor(bench),
                "zerovisor": lambda: timed(lambda: zv("exec", zv_cid, "true")),
                IN_PROCESS: lambda: timed(lambda: zv("exec", zv_cid, "true", env=NO_SERVER)),
            }
            if rc is not None:
                execs["runc"] = lambda: timed(lambda: rc("exec", runc_cid, "true"))
            results += _results(EXEC, bench.repeat_in_turn(execs))
    return results


def _results(case: str, samples: dict[str, list[float]]) -> list[Result]:
    """The rows of one case measured in turn: zerovisor's with its ratios to the others."""
    baselines = tuple(variant for variant in samples if variant != "zerovisor")
    return [
        Result(
            case,
            variant,
            "ms",
            values,
            baselines if variant == "zerovisor" else (),
            TARGET if variant == "zerovisor" else "",
        )
        for variant, values in samples.items()
    ]


@contextmanager
def _zv_sleeper(zv: Zerovisor, sleeper: Path) -> Iterator[str]:
    """A detached zerovisor sleeper to exec into, for the body; its id."""
    cid = fresh_id("exec")
    zv("run", "-d", "-b", str(sleeper), cid)
    try:
        yield cid
    finally:
        zv("delete", "--force", cid)


@contextmanager
def _runc_sleeper(rc: Runc | None, sleeper: Path) -> Iterator[str]:
    """A detached runc sleeper (stdio to files, so no console socket), or "" without runc."""
    if rc is None:
        yield ""
        return
    cid = fresh_id("exec")
    try:
        rc("run", "--detach", "--bundle", str(sleeper), cid)
        yield cid
    finally:
        runc_delete(rc, [cid])
