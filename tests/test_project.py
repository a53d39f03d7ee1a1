"""The project's own promises: README and CI agree, and the code passes ruff and mypy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def test_ci_runs_exactly_the_readme_commands() -> None:
    readme = (REPO / "README.md").read_text()
    commands = ci_commands()
    assert len(commands) == 2
    for command in commands:
        assert f"```sh\n{command}\n```" in readme


def test_ruff() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    if "No module named ruff" in proc.stderr:
        pytest.fail("ruff is missing: it is in the test extra")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
