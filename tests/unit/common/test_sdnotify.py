"""systemd readiness notification (common.sdnotify) against a socket of our own."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import sdnotify


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.mark.parametrize("value", [None, ""])
def test_no_notify_socket(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_path_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listener: socket.socket) -> None:
    path = tmp_path / "notify.sock"
    listener.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sdnotify.notify("READY=1\nSTATUS=serving\nMAINPID=42") is True
    assert listener.recv(4096) == b"READY=1\nSTATUS=serving\nMAINPID=42"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch, listener: socket.socket) -> None:
    name = f"zerovisor-test-{os.getpid()}-{uuid.uuid4().hex}"
    listener.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert sdnotify.notify("STOPPING=1") is True
    assert listener.recv(4096) == b"STOPPING=1"


def test_dead_socket_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens
    assert path.exists()
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sdnotify.notify("READY=1") is False


def test_missing_socket_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nothing-here"))
    assert sdnotify.notify("READY=1") is False


def test_dead_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"@zerovisor-test-nobody-{uuid.uuid4().hex}")
    assert sdnotify.notify("READY=1") is False
