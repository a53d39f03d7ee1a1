"""ps: the processes running in a container, as runsc ps shows them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from services.controller.commands.base import CliContext, controller_call

if TYPE_CHECKING:
    from common.messages.proc import Process

#: Columns of the table, as gVisor's ProcessListToTable heads them.
HEADER = ("UID", "PID", "PPID", "C", "TTY", "STIME", "TIME", "CMD")
#: Narrowest column, and the spaces after the widest cell of a column (Go's tabwriter settings
#: in gVisor's ProcessListToTable: minwidth 10, padding 3).
MIN_WIDTH = 10
PADDING = 3


def table(processes: Sequence[Process]) -> str:
    """The processes as gVisor's ProcessListToTable lays them out, without a final newline.

    Every column but the last is as wide as its widest cell plus PADDING, and at least MIN_WIDTH;
    the last (CMD) is not padded, as a tabwriter leaves the text after the last tab.
    """
    rows = [HEADER]
    rows += [(str(p.uid), str(p.pid), str(p.ppid), str(p.c), p.tty, p.stime, p.time, p.cmd) for p in processes]
    widths = [max(MIN_WIDTH, *(len(row[i]) + PADDING for row in rows)) for i in range(len(HEADER) - 1)]
    return "\n".join(
        "".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + row[-1] for row in rows
    )


def pids_json(processes: Sequence[Process]) -> str:
    """Only the pids, as a compact JSON array: what runc ps and runsc ps print for --format json."""
    return json.dumps([p.pid for p in processes], separators=(",", ":"))


def full_json(processes: Sequence[Process]) -> str:
    """Every field of every process, as a JSON array of objects (gVisor's ProcessListToJSON)."""
    return json.dumps([dataclasses.asdict(p) for p in processes], indent=2)


FORMATS = {"table": table, "json": pids_json, "full-json": full_json}


@click.command("ps")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(sorted(FORMATS)),
    default="table",
    show_default=True,
    help="table; json: the pids only, as runc prints them; full-json: every field.",
)
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, fmt: str, cid: str) -> None:
    """Show the processes running in container CID (pids as the container sees them)."""
    from common.messages.proc import PsArgs, PsResult

    result = controller_call(obj, "Proc.Ps", PsArgs(cid=cid), PsResult)
    click.echo(FORMATS[fmt](result.processes))
