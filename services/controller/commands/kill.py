"""kill: send a signal to the processes of a container."""

from __future__ import annotations

import signal

import click

from services.controller.commands.base import CliContext, controller_call


def parse_signal(text: str) -> int:
    """A signal from a name (with or without SIG, any case) or a number."""
    if text.isdigit():
        number = int(text)
        if number not in {int(s) for s in signal.valid_signals()}:
            raise click.BadParameter(f"invalid signal {text!r}")
        return number
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise click.BadParameter(f"invalid signal {text!r}") from None


@click.command("kill")
@click.option("--all", "-a", "all_", is_flag=True, help="Signal every process of the container.")
@click.argument("cid")
@click.argument("sig", default="TERM")
@click.pass_obj
def cli(obj: CliContext, all_: bool, cid: str, sig: str) -> None:
    """Send SIG (default TERM) to container CID."""
    from common.messages.containers import KillArgs

    controller_call(obj, "Containers.Kill", KillArgs(id=cid, signo=parse_signal(sig), all=all_))
