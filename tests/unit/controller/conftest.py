"""Fixtures shared by the controller's unit tests (a module may define its own of the same name)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.controller.registry import Registry


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle directory with an empty rootfs/ and no config.json yet."""
    path = tmp_path / "bundle"
    (path / "rootfs").mkdir(parents=True)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of its own under tmp_path, closed at teardown."""
    reg = Registry.open(str(tmp_path / "root"))
    yield reg
    reg.close()
