"""The controller CLI: every command's --help, lazy imports, formatting, the exit-code edge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.errors import ConflictError, ErrCode, RemoteError, ServiceUnavailable
from services.controller.cli import COMMANDS, cli, cli_error_for
from services.controller.commands.status import format_uptime
from tests.conftest import REPO


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: cli {command}" in result.output


def test_group_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


@pytest.mark.parametrize("argv", [["--help"], ["up", "--help"], ["down", "--help"]])
def test_help_imports_neither_zmq_nor_cbor(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from services.controller.cli import main\n"
        f"sys.argv = ['controller', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('zmq', 'cbor2', 'ptrace', 'seccomp') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.4, "0s"),
        (59.9, "59s"),
        (60, "1m0s"),
        (3599, "59m59s"),
        (3600, "1h0m"),
        (86399, "23h59m"),
        (90061, "1d1h"),
    ],
)
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert format_uptime(seconds) == text


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConflictError("busy"), 1),
        (RemoteError(ErrCode.NOT_FOUND, "no such container"), 3),
        (ServiceUnavailable("no reply"), 3),
    ],
)
def test_exit_codes(exc: ConflictError | RemoteError | ServiceUnavailable, code: int) -> None:
    assert cli_error_for(exc).exit_code == code


def test_errors_leave_through_the_edge_with_their_exit_code(tmp_path: Path) -> None:
    too_long = tmp_path / ("d" * 100)
    result = CliRunner().invoke(cli, ["--root", str(too_long), "up"])
    assert result.exit_code == 1
    assert result.output.startswith("controller: run directory ")
    assert "too long for a Unix socket path" in result.output
    assert not too_long.exists()
