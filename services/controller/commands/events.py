"""events: a container's events as JSON lines, or its resource usage once (--stats)."""

from __future__ import annotations

import json

import click

from services.controller.commands.base import CliContext, controller_call


@click.command("events")
@click.option("--stats", is_flag=True, help="Print resource usage once and exit.")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, stats: bool, cid: str) -> None:
    """Print the events of container CID until it stops."""
    from common.events import Subscriber
    from common.messages.containers import ContainerState, IdArgs
    from common.messages.platform import StatsResult
    from common.rundir import RunDir
    from common.wire import to_wire

    if stats:
        usage = controller_call(obj, "Containers.Stats", IdArgs(id=cid), StatsResult)
        click.echo(json.dumps({"type": "stats", "id": cid, "data": to_wire(usage)}))
        return
    sub = Subscriber(RunDir.at(obj.run_dir).events_endpoint, [f"container.{cid}."])
    try:
        state = controller_call(obj, "Containers.State", IdArgs(id=cid), ContainerState)
        while state.status != "stopped":
            event = sub.recv(timeout=1.0)
            if event is None:
                state = controller_call(obj, "Containers.State", IdArgs(id=cid), ContainerState)
                continue
            _, env = event
            click.echo(json.dumps({"type": env["event"], "id": cid, "time": env.get("time"), "data": env["body"]}))
            if env["event"] in ("exit", "delete"):
                return
    finally:
        sub.close()
