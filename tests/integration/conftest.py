"""Fixtures of the integration tests that drive containers through the controller CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.zerovisor import Zerovisor


@pytest.fixture
def zv(tmp_path: Path) -> Iterator[Zerovisor]:
    """The controller CLI on tmp_path/root; `down` at teardown stops the services it started."""
    z = Zerovisor(tmp_path / "root")
    yield z
    z("down", check=False)
