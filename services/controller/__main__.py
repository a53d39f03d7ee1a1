"""Entry point: `controller ...` or `python -m services.controller ...`."""

from __future__ import annotations

from services.controller.cli import main

if __name__ == "__main__":
    main()
