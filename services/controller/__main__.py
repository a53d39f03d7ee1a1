"""Entry point: `controller ...` (the console script) or `python -m services.controller ...`.

A warm command server runs the command when it can (cmdserver/): then this process imports
only the client and stands for the worker. Otherwise the command runs here.
It sets the collector's pace before the CLI's first import: click and the command modules are
tens of thousands of objects, made once and kept to the end, and with the default threshold
the collector walks them again and again while they are made (~3 ms of a ~60 ms `exec`).
"""

from __future__ import annotations

import gc
import os
import sys

#: Allocations between two young-generation collections in the CLI (the default is 700). A
#: command that runs for long (`run`, `events`) still collects: only less often.
CLI_GC_THRESHOLD = 50_000


def main() -> None:
    """Console-script entry point."""
    from services.controller.cmdserver.client import run_via_server

    status = run_via_server(sys.argv)
    if status is not None:
        # The client holds nothing that needs finalizing, and the interpreter's teardown of
        # its modules is ~3 ms of a ~15 ms client here.
        sys.stderr.flush()
        os._exit(status)
    gc.set_threshold(CLI_GC_THRESHOLD)
    from services.controller.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
