"""Fixtures of the fault-injection tests: the seed of the kill schedule (shown on every failure),
a `Faults` harness on a root of the test's own, and a run directory on a tiny tmpfs."""

from __future__ import annotations

import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cbuild import cbin_fixture  # noqa: F401 - the cbin fixture
from tests.faults.harness import SEED_ENV, Faults, draw_seed

SEED_KEY = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed fault test shows the seed that replays its kill schedule."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    seed = item.stash.get(SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(("fault injection", f"replay with {SEED_ENV}={seed}"))


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    """This test's seed: ZEROVISOR_FAULT_SEED if set, else a fresh one (printed, and added to
    the report of a failure)."""
    seed = draw_seed()
    request.node.stash[SEED_KEY] = seed
    print(f"{SEED_ENV}={seed}")
    return seed


@pytest.fixture
def faults(tmp_path: Path, fault_seed: int) -> Iterator[Faults]:
    """The harness on tmp_path/root; at teardown, whatever the test left is stopped."""
    harness = Faults(tmp_path, fault_seed)
    try:
        yield harness
    finally:
        harness.teardown()


#: Size of the tmpfs run directory of the full-disk test.
TMPFS_SIZE = "256k"


@pytest.fixture
def full_faults(tmp_path: Path, fault_seed: int) -> Iterator[Faults]:
    """The harness with its run directory (not its root) on a small tmpfs of its own,
    unmounted at teardown once the services are down."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(run)], check=True, timeout=30
    )
    harness = Faults(tmp_path, fault_seed, run_dir=run)
    try:
        yield harness
    finally:
        try:
            harness.teardown()
        finally:
            if subprocess.run(["umount", str(run)], check=False, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", str(run)], check=False, timeout=30)
