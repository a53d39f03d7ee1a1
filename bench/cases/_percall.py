"""What the per-call cases (syscall, files) share: CPU placements, running a self-timing C helper
on the host, and a zerovisor sandbox that runs one in a container with its services placed.

Every helper in bench/c that these cases run times its own loop and prints microseconds per
call, so neither process nor container start-up is in the number. On this machine a wake-up on
the other CPU costs tens of microseconds (KERNEL-FACTS, "Cross-CPU wake-ups"), which dwarfs
what a trapped call costs when the program and its supervisor share a CPU; so each per-call
variant runs in two placements: everything pinned to one CPU, and everything left free.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Bench, BenchError
from bench.zerovisor import Zerovisor, bundle, pin

#: How long one self-timing run may take before the case fails (the unpinned variants are slow).
RUN_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the processes of a variant run."""

    name: str
    """"one CPU" or "unpinned", as it appears in variant names."""
    cpu: int
    """The CPU every process of the variant is pinned to; -1 leaves them all free."""

    @property
    def arg(self) -> str:
        """The CPU as the C helpers take it in their argv."""
        return str(self.cpu)

    def variant(self, what: str) -> str:
        """The variant name of what in this placement (e.g. "zerovisor, one CPU")."""
        return f"{what}, {self.name}"


def placements() -> tuple[Placement, Placement]:
    """(one CPU, unpinned). The one CPU is the last we may use: CPU 0 takes more interrupts."""
    return Placement("one CPU", max(os.sched_getaffinity(0))), Placement("unpinned", -1)


def per_call_us(stdout: str, what: str) -> float:
    """The microseconds per call a C helper printed as its last line."""
    lines = stdout.split()
    try:
        return float(lines[-1])
    except (IndexError, ValueError):
        raise BenchError(f"{what} printed no timing: {stdout!r}") from None


@contextlib.contextmanager
def pinned_self(cpu: int) -> Iterator[None]:
    """Pin the calling thread to cpu (nothing for -1) for the block: the processes it spawns
    meanwhile inherit the pin from their first instruction, which a pin by pid after the fact
    cannot give (proot would already be tracing)."""
    if cpu < 0:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_host(argv: Sequence[str | Path], cpu: int = -1) -> float:
    """Run a self-timing helper (or a tool wrapping one) on the host, every process of it pinned
    to cpu (-1: free); the microseconds per call it printed."""
    args = [str(arg) for arg in argv]
    with pinned_self(cpu):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return per_call_us(proc.stdout, args[0])


class Sandbox:
    """zerovisor services on a root of the case's own, and one busybox bundle with the case's
    helpers in its rootfs; run() changes the bundle's program and runs it as a container.

    A context manager: entering starts the services, leaving stops them. `services` names the
    services a trapped call goes through (sentry, and gofer for file calls): for the one-CPU
    placement they are pinned with the program, for the other left free.
    """

    def __init__(self, bench: Bench, name: str, helpers: Sequence[Path], services: Sequence[str]) -> None:
        self.zv = Zerovisor(bench.work / f"{name}-root")
        self.bundle = bench.work / f"{name}-bundle"
        self.rootfs = self.bundle / "rootfs"
        self._helpers = tuple(helpers)
        self._services = tuple(services)
        self._cids = (f"bench-{name}-{n}" for n in itertools.count())

    def __enter__(self) -> Sandbox:
        bundle(self.bundle, ["/bin/true"])
        for helper in self._helpers:
            shutil.copy(helper, self.rootfs / helper.name)
        try:
            self.zv.up()
        except BaseException:
            # __exit__ is not called when __enter__ fails: stop what did start here.
            self.zv.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.zv.down()

    def run(self, args: Sequence[str], placement: Placement, answered_by: str = "") -> float:
        """Run args as a container in placement; the microseconds per call it printed. With
        answered_by, its output must contain that text (proof that the sandbox, not the host
        kernel, answered the calls).

        The program pins itself (its argv carries placement.cpu); the services are pinned here
        and given back their CPUs afterwards, so that the next variant starts from free."""
        config_path = self.bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["args"] = list(args)
        config_path.write_text(json.dumps(config, indent=2))
        pids = [self.zv.pid(service) for service in self._services]
        before = [os.sched_getaffinity(pid) for pid in pids]
        try:
            if placement.cpu >= 0:
                for pid in pids:
                    pin(pid, {placement.cpu})
            proc = self.zv("run", "-b", str(self.bundle), next(self._cids), timeout=RUN_TIMEOUT)
        except BenchError as exc:
            # The run directory goes with the bench's scratch directory: keep what explains it.
            raise BenchError(f"{exc}\n{self._log_tails()}") from exc
        finally:
            for pid, cpus in zip(pids, before, strict=True):
                pin(pid, cpus)
        if answered_by not in proc.stdout:
            raise BenchError(f"container {args[0]} printed {proc.stdout!r}, without {answered_by!r}: not zerovisor's")
        return per_call_us(proc.stdout, f"container {args[0]}")

    def _log_tails(self, lines: int = 15) -> str:
        """The last lines of each involved service's log, for an error message."""
        parts = []
        for service in self._services:
            log = self.zv.root / f"{service}.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
            parts.append(f"--- {log.name}:\n" + "\n".join(text))
        return "\n".join(parts)
