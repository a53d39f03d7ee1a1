"""status: show the four services of a run directory."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import click

from services.controller.commands.base import CliContext, run_dir_option


def format_uptime(seconds: float | None) -> str:
    """Uptime as runc-style short text: 42s, 5m3s, 2h7m, 3d4h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def format_recovered(recovered: dict[str, int]) -> str:
    """What a service took over from its previous instance, as "containers=2 listeners=3", or "-"."""
    return " ".join(f"{kind}={count}" for kind, count in recovered.items()) or "-"


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns, three spaces apart.

    The last column is not padded, so no line ends in blanks however wide that column gets.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["   ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]) for r in rows]


@click.command("status")
@run_dir_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def cli(obj: CliContext, run_dir: str | None, fmt: str) -> None:
    """Show each service's pid, uptime, restarts, state and what it recovered when it restarted."""
    from common.rundir import RunDir
    from services.controller.services import ServiceManager

    ctx = obj.with_run_dir(run_dir)
    states = ServiceManager(RunDir.at(ctx.run_dir), ctx.root).probe()
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(s) for s in states], indent=2))
        return
    rows = [("SERVICE", "PID", "UPTIME", "RESTARTS", "STATE", "RECOVERED")]
    rows += [
        (
            s.service,
            str(s.pid or "-"),
            format_uptime(s.uptime),
            "-" if s.restarts is None else str(s.restarts),
            s.state,
            format_recovered(s.recovered),
        )
        for s in states
    ]
    for line in format_table(rows):
        click.echo(line)
