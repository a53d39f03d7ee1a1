"""kill -9 the gofer: stateless but for open mounts, which the sentry re-attaches; calls in
flight fail with EIO or are retried, never hang (the workload's writes are checked on the host).
With directfs (the default) the sentry answers file calls on the mount fds it holds, so a dead
gofer only delays attaching new containers; the workload runs both ways."""

from __future__ import annotations

import pytest

from services.sentry.directfs import DIRECTFS_ENV
from tests.cbuild import CBuild
from tests.faults.harness import Faults
from tests.faults.scenarios import OPS, kill_during_lifecycle, workload_under_kills

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE = ("gofer",)


@pytest.mark.parametrize("directfs", ["1", "0"], ids=["directfs", "through-the-gofer"])
def test_workload_survives_gofer_kills(
    faults: Faults, cbin: CBuild, directfs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without directfs every file call crosses the gofer, so kills land on calls in flight.
    monkeypatch.setenv(DIRECTFS_ENV, directfs)
    workload_under_kills(faults, cbin, SERVICE, kills=12)


@pytest.mark.parametrize("op", OPS)
def test_gofer_killed_during(faults: Faults, cbin: CBuild, op: str) -> None:
    kill_during_lifecycle(faults, cbin, SERVICE, op)
