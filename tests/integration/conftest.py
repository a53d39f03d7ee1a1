"""Fixtures of the integration tests that drive containers through the controller CLI."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
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


@pytest.fixture
def console_listener() -> Iterator[tuple[str, socket.socket]]:
    """A listening AF_UNIX stream socket at a path short enough for sun_path (108 bytes)."""
    directory = tempfile.mkdtemp(dir="/tmp", prefix="zvc-")
    path = os.path.join(directory, "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(30)
        yield path, listener
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
