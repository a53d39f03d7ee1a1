"""kill -9 the platform: the fork server and the tasks outlive it; the new platform reconnects
to the fork server and takes the listener fds back from the sentry."""

from __future__ import annotations

import pytest

from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import OPS, kill_during_lifecycle, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE = ("platform",)


def test_workload_survives_platform_kills(faults: Faults, cbin: CBuild) -> None:
    workload_under_kills(faults, cbin, SERVICE, kills=10)


@pytest.mark.parametrize("op", OPS)
def test_platform_killed_during(faults: Faults, cbin: CBuild, op: str) -> None:
    kill_during_lifecycle(faults, cbin, SERVICE, op)
