"""kill -9 the sentry: its state is rebuilt from the controller and the platform, the listener
fds come back from the platform, and a notification it had received but not answered is
re-issued by the task. And a sentry that stops answering is reported, not waited for forever."""

from __future__ import annotations

import pytest

from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import OPS, kill_during_lifecycle, service_stops_answering, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE = ("sentry",)


def test_workload_survives_sentry_kills(faults: Faults, cbin: CBuild) -> None:
    workload_under_kills(faults, cbin, SERVICE, kills=10)


@pytest.mark.parametrize("op", OPS)
def test_sentry_killed_during(faults: Faults, cbin: CBuild, op: str) -> None:
    kill_during_lifecycle(faults, cbin, SERVICE, op)


def test_sentry_that_stops_answering_is_reported(faults: Faults, cbin: CBuild) -> None:
    service_stops_answering(faults, cbin, "sentry")
