"""Entry point: `gofer --run-dir DIR` or `python -m services.gofer --run-dir DIR`."""

from __future__ import annotations

from common.service import service_command
from services.gofer.server import setup

main = service_command("gofer", "Run the zerovisor gofer service.", setup)

if __name__ == "__main__":
    main()
