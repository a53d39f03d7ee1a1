"""Set-up of the controller service: the registry, the way to the sentry, the Containers and Proc
domains."""

from __future__ import annotations

import logging

from common.client import ServiceChannel
from common.errors import ZerovisorError
from common.events import Subscriber
from common.service import ServiceContext, Setup
from services.controller.containers import SENTRY_TIMEOUT, Containers, record_event
from services.controller.proc import Proc, process_exit
from services.controller.reconcile import delete_orphans, settle_creating
from services.controller.registry import Registry
from services.controller.waiters import Waiters

log = logging.getLogger(__name__)


def make_setup(root: str) -> Setup:
    """The controller's set-up for a registry under root."""

    def setup(ctx: ServiceContext) -> None:
        registry = Registry.open(root)
        # One connection to the sentry for every domain: the loop serves one request at a time.
        sentry = ServiceChannel(ctx.run_dir.socket_path("sentry"), SENTRY_TIMEOUT)
        containers = Containers(registry, sentry)
        exits = Waiters(process_exit(sentry))
        events = Subscriber(ctx.run_dir.events_endpoint, ["container.", "process."])

        def deleted(cid: str) -> None:
            # Nobody will report the exits of a deleted container's processes any more.
            gone = f"container {cid!r} was deleted while waited on"
            exits.cancel(lambda key: key[0] == cid, gone)
            containers.waiters.cancel(lambda key: key == cid, gone)

        def on_event() -> None:
            for topic, env in events.drain():
                body = env["body"]
                if topic.startswith("process."):
                    exits.happened((body["cid"], body["pid"]))
                    continue
                record_event(registry, body)
                cid = body["cid"]
                if topic.endswith(".delete"):
                    deleted(cid)
                elif topic.endswith(".exit"):
                    containers.waiters.happened(cid)

        def on_sentry_back() -> None:
            recovered = ctx.system.recovered
            recovered["orphans"] = recovered.get("orphans", 0) + delete_orphans(registry, sentry)

        try:
            ctx.system.recovered.update(containers=len(registry.list()), creating=settle_creating(registry, sentry))
            on_sentry_back()
        except ZerovisorError as e:
            log.warning("reconciling with the sentry at start: %s", e)  # again when it is back
            sentry.mark_lost()
        sentry.on_reconnect = on_sentry_back
        ctx.loop.add_socket(events.sock, on_event)
        ctx.loop.add_tick(exits.poll)
        ctx.loop.add_tick(containers.waiters.poll)
        ctx.loop.add_cleanup(events.close)
        ctx.loop.add_cleanup(registry.close)
        ctx.registry.register(containers)
        ctx.registry.register(Proc(registry, sentry, exits))

    return setup
