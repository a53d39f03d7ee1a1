"""python -m bench [--quick] [--runs N] [--warmup N] [--json FILE] [--case NAME]...: measure, print a
table, write the same results as JSON."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from bench.harness import Bench, BenchError, Result, report_json, table, write_json
from bench.zerovisor import compile_bytecode

#: Case modules under bench/cases, in the report's order.
CASES: tuple[str, ...] = ("syscall", "files", "lifecycle", "workload", "memory", "scale")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per case, small loops: checks the harness")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per case (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded runs before them (default 1)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="where the JSON goes")
    parser.add_argument("--case", action="append", choices=CASES, help="only these cases (repeatable)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")

    work = Path(tempfile.mkdtemp(prefix="zv-bench-"))
    bench = Bench(work=work, runs=args.runs, warmup=args.warmup, quick=args.quick)
    results: list[Result] = []
    failed: list[str] = []
    compile_bytecode()
    try:
        for name in args.case or CASES:
            module = importlib.import_module(f"bench.cases.{name}")
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            try:
                results.extend(module.measure(bench))
            except BenchError as exc:
                failed.append(name)
                bench.notes.append(f"{name} failed: {exc}")
            except Exception:  # noqa: BLE001 - one broken case must not hide the others' numbers
                failed.append(name)
                bench.notes.append(f"{name} failed:\n{traceback.format_exc()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results, bench.notes))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, report_json(results, bench.notes, bench.runs, bench.warmup))
    print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
