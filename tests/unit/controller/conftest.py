"""Fixtures shared by the controller's unit tests (a module may define its own of the same name)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle directory with an empty rootfs/ and no config.json yet."""
    path = tmp_path / "bundle"
    (path / "rootfs").mkdir(parents=True)
    return path
