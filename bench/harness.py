"""What every case shares: samples and their summary (Result), repetition with a warm-up
(repeat), the run's context (Bench: options, scratch directory, C helpers, tools found) and
the report (a table on stdout, the same rows as JSON)."""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

C_DIR = Path(__file__).resolve().parent / "c"


class BenchError(Exception):
    """A case could not be measured (a helper failed to build, a command failed)."""


@dataclass
class Result:
    """One measured variant of a case."""

    case: str
    """The case's name, as in the issue's table (e.g. "trapped uname")."""
    variant: str
    """What was measured (e.g. "zerovisor, one CPU", "native", "runc")."""
    unit: str
    """The unit of every sample ("us", "ms", "MB")."""
    samples: list[float]
    """One value per measured run, warm-up runs excluded."""
    baselines: tuple[str, ...] = ()
    """Variants of the same case this one is divided by, in the report's order."""
    target: str = ""
    """The target we hold ourselves to, as text (e.g. "<= 2x C floor")."""
    note: str = ""
    """Anything a reader needs beside the number (e.g. what N was)."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


@dataclass
class Bench:
    """The run's options and shared resources, handed to every case."""

    work: Path
    """A scratch directory of this run's own (bundles, roots, outputs); removed at the end."""
    runs: int
    """How many measured runs each case makes."""
    warmup: int
    """How many runs each case makes first and throws away."""
    quick: bool
    """One run, no warm-up, small loop counts: checks the harness, measures nothing."""
    notes: list[str] = field(default_factory=list)
    """Cases skipped or degraded, and why (a tool not installed); printed under the table."""
    _built: dict[str, Path] = field(default_factory=dict)

    def cbin(self, name: str) -> Path:
        """The static binary of bench/c/<name>.c, compiled once per run."""
        if name not in self._built:
            out = self.work / "bin" / name
            out.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                ["gcc", "-static", "-O2", "-Wall", "-Werror", "-pthread", "-o", str(out), str(C_DIR / f"{name}.c")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0:
                raise BenchError(f"gcc {name}.c failed ({proc.returncode}):\n{proc.stderr}")
            self._built[name] = out
        return self._built[name]

    def tool(self, name: str) -> str | None:
        """The path of an optional baseline tool (runc, proot), or None with a note saying so."""
        path = shutil.which(name)
        if path is None:
            note = f"{name} is not installed: its baselines are skipped (apt-get install {name})"
            if note not in self.notes:
                self.notes.append(note)
        return path

    def loops(self, full: int, quick: int) -> int:
        """A loop count: full normally, quick under --quick."""
        return quick if self.quick else full

    def repeat(self, measure: Callable[[], float]) -> list[float]:
        """measure() warmup times (discarded), then runs times; the kept values."""
        for _ in range(0 if self.quick else self.warmup):
            measure()
        return [measure() for _ in range(1 if self.quick else self.runs)]

    def repeat_in_turn(self, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
        """As repeat for every one of measures, but round by round, each variant once per round
        (the warm-up rounds too): a machine whose speed drifts during the case (a disk that
        trims what the last round deleted, a neighbour) then shifts every variant alike."""
        for _ in range(0 if self.quick else self.warmup):
            for measure in measures.values():
                measure()
        samples: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(1 if self.quick else self.runs):
            for name, measure in measures.items():
                samples[name].append(measure())
        return samples


def wait_exact(proc: subprocess.Popen[str], timeout: float) -> int:
    """proc's exit status, returned as soon as it exits; after timeout seconds, kills it and
    raises BenchError.

    Not Popen.wait(timeout): that polls with sleeps doubling up to 50 ms, so every command it
    times is rounded up to the next of 1, 3, 7, 15, 31, 63, 113... ms (a 20 ms `runc run` reads
    32 ms). A pidfd becomes readable the moment the process exits.
    """
    pidfd = os.pidfd_open(proc.pid)  # a zombie not yet reaped still has one
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(timeout, 0.0) * 1000.0):
            proc.kill()
            proc.wait()
            raise BenchError(f"{proc.args!r} did not exit within {timeout:.3g} s: killed")
    finally:
        os.close(pidfd)
    return proc.wait()


def command(
    argv: list[str],
    log: Path,
    *,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv to its end, stdin from /dev/null, stdout to log and stderr to log + ".err"; the
    result carries both. env is added to ours. Raises BenchError when argv fails and check is set.

    Files, not pipes: a detached container inherits the command's stdio and would keep a pipe
    open after the command returned, so reading it would never end.
    """
    with log.open("w+") as out, log.with_name(log.name + ".err").open("w+") as err:
        full_env = {**os.environ, **env} if env else None
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, text=True, env=full_env
        )
        code = wait_exact(proc, timeout)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(argv, code, out.read(), err.read())
    if check and code != 0:
        raise BenchError(f"{' '.join(argv)} exited {code}:\n{done.stdout}{done.stderr}")
    return done


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock milliseconds fn() took."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def ratios(result: Result, results: list[Result]) -> list[tuple[str, float]]:
    """(baseline variant, median / baseline median) for each baseline present in results."""
    medians = {r.variant: r.median for r in results if r.case == result.case}
    return [(b, result.median / medians[b]) for b in result.baselines if b in medians and medians[b] > 0]


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def table(results: list[Result], notes: list[str]) -> str:
    """The report as a plain-text table, notes underneath."""
    header = ("case", "variant", "median", "min", "max", "unit", "ratio", "target")
    rows = [header]
    for r in results:
        ratio = ", ".join(f"{value:.2f}x {name}" for name, value in ratios(r, results))
        rows.append((r.case, r.variant, _fmt(r.median), _fmt(r.min), _fmt(r.max), r.unit, ratio, r.target))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for r in results:
        if r.note:
            lines.append(f"  {r.case} / {r.variant}: {r.note}")
    lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)


def report_json(results: list[Result], notes: list[str], runs: int, warmup: int) -> dict[str, object]:
    """The report as one JSON object: the machine, the options, every result with its ratios."""
    return {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
        "warmup": warmup,
        "results": [
            {
                **asdict(r),
                "median": r.median,
                "min": r.min,
                "max": r.max,
                "ratios": dict(ratios(r, results)),
            }
            for r in results
        ],
        "notes": notes,
    }


def write_json(path: Path, report: dict[str, object]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
