"""events: a container's events as JSON lines, or its resource usage once (--stats)."""

from __future__ import annotations

import json
from typing import Any

import click

from services.controller.commands.base import CliContext, controller_call


def start_record(cid: str, started: dict[str, Any], pid: int) -> dict[str, Any]:
    """The start line: when the request reached the sentry and when the program ran."""
    return {"type": "start", "id": cid, "time": started["request_completed"], "data": {"pid": pid, **started}}


@click.command("events")
@click.option("--stats", is_flag=True, help="Print resource usage once and exit.")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, stats: bool, cid: str) -> None:
    """Print the events of container CID until it stops: its start (if started), then as they come."""
    from common.events import Subscriber
    from common.messages.containers import ContainerState, IdArgs
    from common.messages.lifecycle import ContainerStats
    from common.rundir import RunDir
    from common.wire import to_wire

    def emit(record: dict[str, Any]) -> None:
        click.echo(json.dumps(record))

    if stats:
        usage = controller_call(obj, "Containers.Stats", IdArgs(id=cid), ContainerStats)
        emit({"type": "stats", "id": cid, "data": {**to_wire(usage.cgroup), "syscalls": usage.syscalls}})
        return
    # Subscribe before reading the state, so that nothing falls between the two.
    sub = Subscriber(RunDir.at(obj.run_dir).events_endpoint, [f"container.{cid}."])
    try:
        state = controller_call(obj, "Containers.State", IdArgs(id=cid), ContainerState)
        started = state.started is not None
        if state.started is not None:
            emit(start_record(cid, to_wire(state.started), state.pid))
        while state.status != "stopped":
            event = sub.recv(timeout=1.0)
            if event is None:
                state = controller_call(obj, "Containers.State", IdArgs(id=cid), ContainerState)
                continue
            _, env = event
            body = env["body"]
            if env["event"] == "start":
                if not started and body.get("started"):
                    emit(start_record(cid, body["started"], body.get("pid", 0)))
                started = True
                continue
            body.pop("started", None)
            emit({"type": env["event"], "id": cid, "time": env.get("time"), "data": body})
            if env["event"] in ("exit", "delete"):
                return
    finally:
        sub.close()
