"""kill -9 the gofer: stateless but for open mounts, which the sentry re-attaches; calls in
flight fail with EIO or are retried, never hang (the workload's writes are checked on the host)."""

from __future__ import annotations

import pytest

from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import OPS, kill_during_lifecycle, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE = ("gofer",)


def test_workload_survives_gofer_kills(faults: Faults, cbin: CBuild) -> None:
    workload_under_kills(faults, cbin, SERVICE, kills=12)


@pytest.mark.parametrize("op", OPS)
def test_gofer_killed_during(faults: Faults, cbin: CBuild, op: str) -> None:
    kill_during_lifecycle(faults, cbin, SERVICE, op)
