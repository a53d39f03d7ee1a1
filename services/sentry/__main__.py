"""Entry point: `sentry --run-dir DIR` or `python -m services.sentry --run-dir DIR`."""

from __future__ import annotations

from common.service import service_command
from services.sentry.server import setup

main = service_command("sentry", "Run the zerovisor sentry service.", setup)

if __name__ == "__main__":
    main()
