"""wait: wait for a container to stop and exit with its exit status."""

from __future__ import annotations

import sys

import click

from services.controller.commands.base import CliContext, wait_for_exit


@click.command("wait")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, cid: str) -> None:
    """Wait until container CID stops; exit with its status (128 + signal when killed)."""
    sys.exit(wait_for_exit(obj, cid))
