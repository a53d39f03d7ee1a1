"""delete: remove a stopped container."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, controller_call


@click.command("delete")
@click.option("--force", "-f", is_flag=True, help="Kill a running container first; an unknown id is fine.")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, force: bool, cid: str) -> None:
    """Delete container CID."""
    from common.messages.containers import DeleteArgs

    controller_call(obj, "Containers.Delete", DeleteArgs(id=cid, force=force))
