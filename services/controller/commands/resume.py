"""resume: thaw every process of a container."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, controller_call


@click.command("resume")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, cid: str) -> None:
    """Thaw every process of container CID."""
    from common.messages.containers import ContainerState, IdArgs

    controller_call(obj, "Containers.Resume", IdArgs(id=cid), ContainerState)
