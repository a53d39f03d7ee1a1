"""up: start the four services, each as its own detached process."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, run_dir_option


@click.command("up")
@run_dir_option
@click.pass_obj
def cli(obj: CliContext, run_dir: str | None) -> None:
    """Start the services that are not running and wait until all four are ready."""
    from common.rundir import RunDir
    from services.controller.services import ServiceManager

    ctx = obj.with_run_dir(run_dir)
    manager = ServiceManager(RunDir.at(ctx.run_dir), ctx.root, ctx.log_format, ctx.debug)
    for service, pid in manager.start().items():
        click.echo(f"{service} running (pid {pid})")
