"""Set-up of the gofer service: its mount table and the Gofer domain."""

from __future__ import annotations

from common.service import ServiceContext
from services.gofer.control import Gofer
from services.gofer.mounts import MountTable


def setup(ctx: ServiceContext) -> None:
    """Register Gofer; every container's mount fds are closed when the loop ends."""
    table = MountTable()
    ctx.registry.register(Gofer(table))
    ctx.loop.add_cleanup(table.close_all)
