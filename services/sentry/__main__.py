"""Entry point: `sentry --run-dir DIR` or `python -m services.sentry --run-dir DIR`."""

from __future__ import annotations

from common.service import service_command

main = service_command("sentry", "Run the zerovisor sentry service.")

if __name__ == "__main__":
    main()
