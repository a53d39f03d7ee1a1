"""Entry point: `controller ...` (the console script) or `python -m services.controller ...`.

It sets the collector's pace before the CLI's first import: click and the command modules are
tens of thousands of objects, made once and kept to the end, and with the default threshold
the collector walks them again and again while they are made (~3 ms of a ~60 ms `exec`).
"""

from __future__ import annotations

import gc

#: Allocations between two young-generation collections in the CLI (the default is 700). A
#: command that runs for long (`run`, `events`) still collects: only less often.
CLI_GC_THRESHOLD = 50_000


def main() -> None:
    """Console-script entry point."""
    gc.set_threshold(CLI_GC_THRESHOLD)
    from services.controller.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
