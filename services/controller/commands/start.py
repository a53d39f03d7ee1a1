"""start: run the program of a created container."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, controller_call


@click.command("start")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, cid: str) -> None:
    """Start the program of container CID."""
    from common.messages.containers import ContainerState, IdArgs

    controller_call(obj, "Containers.Start", IdArgs(id=cid), ContainerState)
