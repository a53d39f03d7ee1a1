"""list: the containers of this root."""

from __future__ import annotations

import json

import click

from services.controller.commands.base import CliContext, controller_call
from services.controller.commands.state import oci_state


@click.command("list")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Print only the ids.")
@click.pass_obj
def cli(obj: CliContext, fmt: str, quiet: bool) -> None:
    """List containers."""
    from common.messages.containers import ContainerStates, ListArgs

    states = controller_call(obj, "Containers.List", ListArgs(), ContainerStates).containers
    if quiet:
        for s in states:
            click.echo(s.id)
    elif fmt == "json":
        click.echo(json.dumps([oci_state(s) for s in states]))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s.id, str(s.pid), s.status, s.bundle, s.created, s.owner) for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            click.echo("   ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "   " + r[5])
