"""pause: freeze every process of a container."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, controller_call


@click.command("pause")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, cid: str) -> None:
    """Freeze every process of container CID."""
    from common.messages.containers import ContainerState, IdArgs

    controller_call(obj, "Containers.Pause", IdArgs(id=cid), ContainerState)
