"""`python -m bench --quick` works: every case module measures something and the report is whole.

--quick measures nothing worth reading (one run, tiny loops, a shared machine); what this test
holds is the harness: the cases run end to end against real services, runc and the C helpers,
the table is printed, and the JSON carries a positive median for every result and a positive
ratio wherever a baseline was measured.

Each case module runs in its own `python -m bench --case NAME`: a result's `case` is a row name
of the issue's table, not the module that produced it, so only a run of one module can show
that this module returned results (a module returning none would pass a run of them all).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import CASES

REPO = Path(__file__).resolve().parent.parent


def run_bench(tmp_path: Path, case: str) -> tuple[int, str, str, dict[str, Any]]:
    """`python -m bench --quick --case case`: its exit code, stdout, stderr and JSON report."""
    report = tmp_path / f"{case}.json"
    out_path, err_path = tmp_path / f"{case}.out", tmp_path / f"{case}.err"
    # Output to files: the cases start detached containers, which inherit stdio and would keep
    # a pipe open if one of them outlived its case.
    with out_path.open("w") as out, err_path.open("w") as err:
        code = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--case", case, "--json", str(report)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=600,
        ).returncode
    parsed = json.loads(report.read_text()) if report.exists() else {}
    return code, out_path.read_text(), err_path.read_text(), parsed


@pytest.mark.integration
def test_quick_run_reports_every_case(tmp_path: Path) -> None:
    for case in CASES:
        code, stdout, stderr, report = run_bench(tmp_path, case)
        context = f"case {case}:\n{stdout}\n{stderr}"
        assert code == 0, context
        lines = stdout.splitlines()
        assert lines and lines[0].split()[:3] == ["case", "variant", "median"], context
        assert set(lines[1].replace(" ", "")) == {"-"}, context

        results = report.get("results")
        assert isinstance(results, list) and results, f"no results: {context}"
        for result in results:
            name = f"{result['case']} / {result['variant']}"
            assert result["samples"] and result["median"] > 0, f"{name}: {result['samples']}"
            assert result["case"] in stdout and result["variant"] in stdout, f"{name} not in the table"
            for baseline, ratio in result["ratios"].items():
                assert ratio > 0, f"{name}: ratio to {baseline} is {ratio}"
