"""Entry point: `platform --run-dir DIR` or `python -m services.platform --run-dir DIR`."""

from __future__ import annotations

from common.service import service_command

main = service_command("platform", "Run the zerovisor platform service.")

if __name__ == "__main__":
    main()
