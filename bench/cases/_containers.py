"""What the container cases share: fresh container ids, busybox bundles under the run's scratch
directory, zerovisor's services for the length of a case, runc on a root of the bench's own,
and N commands started at once (to start or delete N containers together).

Every case builds its own services and bundles: no case's containers, caches or leftovers can
change another case's numbers.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.harness import Bench, BenchError, command, wait_exact
from bench.zerovisor import REPO, Zerovisor, bundle

#: The program of a container that must stay running while something is measured.
SLEEPER = ["sleep", "1000"]

_ids = itertools.count(1)


def fresh_id(prefix: str) -> str:
    """A container id never used before in this run (runtimes refuse an id that still exists,
    and a just-deleted one could meet leftovers of its predecessor)."""
    return f"{prefix}-{next(_ids)}"


def case_bundle(bench: Bench, case: str, name: str, args: list[str]) -> Path:
    """A busybox bundle running args at <work>/bundles/<case>/<name>, shared by every variant of
    the case so that zerovisor and runc run the very same files."""
    return bundle(bench.work / "bundles" / case / name, args)


@contextmanager
def zerovisor(bench: Bench, case: str) -> Iterator[Zerovisor]:
    """zerovisor's four services on <work>/<case>, up before the body and down after it (down
    also ends every container the body left, through the fork server)."""
    zv = Zerovisor(bench.work / case)
    try:
        zv.up()
        yield zv
    finally:
        zv.down()


class Runc:
    """The runc CLI on a state root of the bench's own (never the host's /run/runc)."""

    def __init__(self, path: str, root: Path) -> None:
        self.path = path
        self.root = root

    def argv(self, *args: str) -> list[str]:
        """`runc --root root *args`."""
        return [self.path, "--root", str(self.root), *args]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `runc *args` to its end; raise BenchError when it fails and check is set."""
        self.root.mkdir(parents=True, exist_ok=True)
        return command(self.argv(*args), self.root.with_suffix(".log"), check=check)


def runc(bench: Bench) -> Runc | None:
    """runc on <work>/runc-root, or None (and a note in the report) when it is not installed.

    runc takes zerovisor's default config unchanged: it is `runc spec`'s own default, with
    terminal false (bundle() sets it) so that runc needs no console socket.
    """
    path = bench.tool("runc")
    return None if path is None else Runc(path, bench.work / "runc-root")


def concurrently(argvs: Sequence[list[str]], logs: Path, cwd: Path | None = None, timeout: float = 300) -> float:
    """Start every argv at once and wait for them all: the milliseconds from the first start to
    the last exit. Each one's output goes to logs/<index>.log; BenchError names those that failed."""
    logs.mkdir(parents=True, exist_ok=True)
    files = [(logs / f"{i}.log").open("w+") for i in range(len(argvs))]
    procs: list[subprocess.Popen[str]] = []
    try:
        start = time.perf_counter()
        for argv, f in zip(argvs, files, strict=True):
            procs.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, text=True)
            )
        # Waiting in order is exact: by the time the last one to exit is waited for, every one
        # before it returns at once.
        codes = [wait_exact(p, start + timeout - time.perf_counter()) for p in procs]
        elapsed = (time.perf_counter() - start) * 1000.0
        failed = []
        for argv, f, code in zip(argvs, files, codes, strict=True):
            if code != 0:
                f.seek(0)
                failed.append(f"{' '.join(argv)} exited {code}:\n{f.read()}")
        if failed:
            raise BenchError("\n".join(failed))
        return elapsed
    finally:
        # After a timeout, none of them may outlive the case.
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()


def zv_start_detached(zv: Zerovisor, bundle_path: Path, ids: Sequence[str]) -> float:
    """`controller run -d` of bundle_path for every id at once; milliseconds until all returned
    (each returns once its container runs)."""
    argvs = [zv.argv("run", "-d", "-b", str(bundle_path), cid) for cid in ids]
    return concurrently(argvs, zv.root.with_name(f"{zv.root.name}-start"), cwd=REPO)


def zv_delete(zv: Zerovisor, ids: Sequence[str]) -> None:
    """`controller delete --force` of every id, all at once (no case times it). Not for finally
    blocks: a failure raises, and `down` ends whatever a failed case left anyway."""
    concurrently(
        [zv.argv("delete", "--force", cid) for cid in ids], zv.root.with_name(f"{zv.root.name}-delete"), cwd=REPO
    )


def zv_running(zv: Zerovisor) -> set[str]:
    """The ids of the containers zerovisor reports running."""
    states = json.loads(zv("list", "--format", "json").stdout)
    return {s["id"] for s in states if s["status"] == "running"}


def runc_start_detached(rc: Runc, bundle_path: Path, ids: Sequence[str]) -> float:
    """`runc run --detach` of bundle_path for every id at once; milliseconds until all returned."""
    argvs = [rc.argv("run", "--detach", "--bundle", str(bundle_path), cid) for cid in ids]
    return concurrently(argvs, rc.root.with_name("runc-start"))


def runc_delete(rc: Runc, ids: Sequence[str]) -> None:
    """`runc delete --force` of every id, one after the other; an id runc does not know is no error:
    this runs in finally blocks, after starts that may have failed halfway, and nothing else
    would end runc's containers (zerovisor's are ended by `down`)."""
    for cid in ids:
        rc("delete", "--force", cid, check=False)
