"""kill -9 the controller: its registry is in SQLite and clients retry, so nothing is lost."""

from __future__ import annotations

import pytest

from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import OPS, kill_during_lifecycle, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE = ("controller",)


def test_workload_survives_controller_kills(faults: Faults, cbin: CBuild) -> None:
    workload_under_kills(faults, cbin, SERVICE, kills=12)


@pytest.mark.parametrize("op", OPS)
def test_controller_killed_during(faults: Faults, cbin: CBuild, op: str) -> None:
    kill_during_lifecycle(faults, cbin, SERVICE, op)
