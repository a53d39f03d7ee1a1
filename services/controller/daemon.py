"""Set-up of the controller service: the registry, the way to the sentry, the Containers domain."""

from __future__ import annotations

from common.client import ServiceChannel
from common.events import Subscriber
from common.service import ServiceContext, Setup
from services.controller.containers import SENTRY_TIMEOUT, Containers, record_event
from services.controller.registry import Registry


def make_setup(root: str) -> Setup:
    """The controller's set-up for a registry under root."""

    def setup(ctx: ServiceContext) -> None:
        registry = Registry.open(root)
        containers = Containers(registry, ServiceChannel(ctx.run_dir.socket_path("sentry"), SENTRY_TIMEOUT))
        events = Subscriber(ctx.run_dir.events_endpoint, ["container."])

        def on_event() -> None:
            for _topic, env in events.drain():
                record_event(registry, env["body"])

        ctx.loop.add_socket(events.sock, on_event)
        ctx.loop.add_cleanup(events.close)
        ctx.loop.add_cleanup(registry.close)
        ctx.registry.register(containers)

    return setup
