"""down: stop the four services."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, run_dir_option


@click.command("down")
@run_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@click.pass_obj
def cli(obj: CliContext, run_dir: str | None, timeout: float) -> None:
    """Stop every running service: SIGTERM, then SIGKILL after --timeout."""
    from common.rundir import SERVICES, RunDir
    from services.controller.services import ServiceManager

    ctx = obj.with_run_dir(run_dir)
    rd = RunDir.at(ctx.run_dir)
    for service, pid in ServiceManager(rd, ctx.root).stop(timeout).items():
        click.echo(f"{service} stopped (pid {pid})")
    # The next `up` is a first start again: its services report no restarts.
    for service in SERVICES:
        rd.starts_path(service).unlink(missing_ok=True)
