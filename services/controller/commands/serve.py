"""serve: run the controller service in the foreground (what `up` and systemd start)."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext, run_dir_option


@click.command("serve")
@run_dir_option
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Log to FILE instead of stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, help="Log line format.")
@click.option("--debug", is_flag=True, help="Log at debug level.")
@click.pass_obj
def cli(obj: CliContext, run_dir: str | None, log_file: str | None, log_format: str | None, debug: bool) -> None:
    """Serve the controller's RPC endpoint on the run directory until SIGTERM."""
    from common.service import run_service
    from services.controller.daemon import make_setup

    ctx = obj.with_run_dir(run_dir)
    run_service(
        "controller", make_setup(ctx.root), ctx.run_dir, log_file, log_format or ctx.log_format, debug or ctx.debug
    )
