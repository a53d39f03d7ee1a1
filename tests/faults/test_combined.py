"""Faults beyond one service: the workload with no kill at all (the harness's own control),
two services killed at once, and a run directory with no space left."""

from __future__ import annotations

import itertools

import pytest

from common.rundir import SERVICES
from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import full_run_dir, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_workload_without_faults(faults: Faults, cbin: CBuild) -> None:
    """Every check passes when nothing is killed: a failure here is the harness's or a plain bug."""
    workload_under_kills(faults, cbin, (), kills=0)


@pytest.mark.parametrize("pair", list(itertools.combinations(SERVICES, 2)), ids="+".join)
def test_workload_survives_two_services_killed_at_once(faults: Faults, cbin: CBuild, pair: tuple[str, str]) -> None:
    workload_under_kills(faults, cbin, pair, kills=8)


def test_full_run_dir_fails_cleanly(full_faults: Faults, cbin: CBuild) -> None:
    full_run_dir(full_faults, cbin)
