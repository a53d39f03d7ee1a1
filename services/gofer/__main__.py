"""Entry point: `gofer --run-dir DIR` or `python -m services.gofer --run-dir DIR`."""

from __future__ import annotations

from common.service import service_command

main = service_command("gofer", "Run the zerovisor gofer service.")

if __name__ == "__main__":
    main()
