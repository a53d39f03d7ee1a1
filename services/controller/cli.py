"""The `controller` command line: global flags as runc's, commands loaded on first use.

This module is the CLI's edge: it is the one place where errors become exit codes
(1 a local failure, 2 a usage error, 3 a service that failed or could not be reached).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os

import click

from common.errors import RemoteError, ServiceUnavailable, ZerovisorError
from common.rundir import DEFAULT_ROOT
from services.controller.commands.base import CliContext

log = logging.getLogger("controller")

#: Every command, by module name under services/controller/commands/.
COMMANDS: tuple[str, ...] = (
    "create",
    "delete",
    "down",
    "events",
    "exec",
    "kill",
    "list",
    "pause",
    "ps",
    "resume",
    "run",
    "serve",
    "spec",
    "start",
    "state",
    "status",
    "up",
    "wait",
)

#: Exit code for an error the services reported or a service that could not be reached.
EXIT_REMOTE = 3


class CliError(click.ClickException):
    """A local failure on its way out of the CLI (exit code 1)."""

    exit_code = 1

    def show(self, file: object = None) -> None:
        click.echo(f"controller: {self.format_message()}", err=True)


class RemoteCliError(CliError):
    """A failure the services reported, or a service that could not be reached (exit code 3)."""

    exit_code = EXIT_REMOTE


def cli_error_for(exc: ZerovisorError) -> CliError:
    """The CLI error, and so the exit code, that exc maps to."""
    if isinstance(exc, RemoteError | ServiceUnavailable):
        return RemoteCliError(str(exc))
    return CliError(str(exc))


class CommandGroup(click.Group):
    """Loads a command's module only when that command runs (or --help lists it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"services.controller.commands.{cmd_name}")
        command: click.Command = module.cli
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ZerovisorError as e:
            log.error("%s", e)
            raise cli_error_for(e) from None
        except OSError as e:
            log.error("%s", e)
            raise CliError(str(e)) from None


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    default=DEFAULT_ROOT,
    envvar="ZEROVISOR_ROOT",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory of the container registry.",
)
@click.option(
    "--run-dir",
    envvar="ZEROVISOR_RUN_DIR",
    type=click.Path(file_okay=False),
    help="Directory of the services' sockets and logs [default: the --root directory].",
)
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Also log to FILE.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of --log lines.",
)
@click.option("--debug", is_flag=True, help="Log at debug level.")
@click.version_option(package_name="zerovisor", prog_name="controller")
@click.pass_context
def cli(ctx: click.Context, root: str, run_dir: str | None, log_file: str | None, log_format: str, debug: bool) -> None:
    """zerovisor: run untrusted programs in application-kernel sandboxes."""
    if log_file or debug:
        from common import log as logconf

        logconf.configure("controller", log_file, "json" if log_format == "json" else "text", debug)
    else:
        logging.getLogger().setLevel(logging.CRITICAL)
    root = os.path.abspath(root)
    ctx.obj = CliContext(
        root=root,
        run_dir=os.path.abspath(run_dir) if run_dir else root,
        log_format=log_format,
        debug=debug,
    )


def main() -> None:
    """Run the command sys.argv names and exit with its code (services/controller/__main__.py
    sets up the process first)."""
    try:
        cli(prog_name="controller")
    finally:
        # The interpreter's last collection at exit walks every object the imports made: ~5 ms
        # of a ~60 ms `exec` on this machine. Frozen, they are skipped; the CLI owns nothing
        # that needs that collection (its sockets and files close as their references go).
        gc.freeze()
