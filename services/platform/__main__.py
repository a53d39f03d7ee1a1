"""Entry point: `platform --run-dir DIR` or `python -m services.platform --run-dir DIR`."""

from __future__ import annotations

from common.service import service_command
from services.platform.server import setup

main = service_command("platform", "Run the zerovisor platform service.", setup)

if __name__ == "__main__":
    main()
