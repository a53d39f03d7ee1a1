"""kill -9 the controller: its registry is in SQLite and clients retry, so nothing is lost. And a
controller that stops answering is reported by the CLI, not waited for."""

from __future__ import annotations

import pytest

from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import OPS, kill_during_lifecycle, service_stops_answering, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE = ("controller",)


def test_workload_survives_controller_kills(faults: Faults, cbin: CBuild) -> None:
    workload_under_kills(faults, cbin, SERVICE, kills=12)


@pytest.mark.parametrize("op", OPS)
def test_controller_killed_during(faults: Faults, cbin: CBuild, op: str) -> None:
    kill_during_lifecycle(faults, cbin, SERVICE, op)


def test_controller_that_stops_answering_is_reported(faults: Faults, cbin: CBuild) -> None:
    service_stops_answering(faults, cbin, "controller")
