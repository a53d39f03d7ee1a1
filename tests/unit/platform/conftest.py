"""Fixtures shared by the platform's unit tests (a module may define its own of the same name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rootfs import make_rootfs


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A fresh busybox rootfs for this test."""
    return make_rootfs(tmp_path / "rootfs")
