"""Set-up of the sentry service: its kernel state, its event publisher, its syscall supervisor,
and its domains."""

from __future__ import annotations

import logging

from common.events import Publisher, Subscriber
from common.service import ServiceContext
from services.sentry.control.lifecycle import Lifecycle
from services.sentry.control.proc import Proc
from services.sentry.gofer_client import AsyncGoferChannel
from services.sentry.kernel import Kernel
from services.sentry.supervisor import Supervisor

log = logging.getLogger(__name__)


def setup(ctx: ServiceContext) -> None:
    """Publish container events, follow the platform's task exits, serve trapped syscalls,
    register Lifecycle and Proc."""
    publisher = Publisher(ctx.run_dir.events_endpoint)
    kernel = Kernel(ctx.run_dir, publisher)
    kernel.shutdown = ctx.loop.stop
    gofer = AsyncGoferChannel(str(ctx.run_dir.socket_path("gofer")), ctx.loop.add_reader, ctx.loop.remove_reader)
    supervisor = Supervisor(gofer, ctx.loop.add_event_reader, ctx.loop.remove_reader)
    kernel.supervisor = supervisor
    tasks = Subscriber(ctx.run_dir.task_events_endpoint, ["task."])

    def on_task_event() -> None:
        for topic, env in tasks.drain():
            if topic.endswith(".exit"):
                kernel.on_task_exit(env["body"])

    ctx.loop.add_socket(tasks.sock, on_task_event)
    ctx.loop.add_tick(gofer.tick)
    ctx.system.details = lambda: {"syscalls": {cid: dict(c.syscalls) for cid, c in kernel.containers.items()}}
    ctx.loop.add_cleanup(tasks.close)
    ctx.loop.add_cleanup(publisher.close)
    ctx.loop.add_cleanup(supervisor.close)
    ctx.loop.add_cleanup(gofer.close)
    ctx.registry.register(Lifecycle(kernel))
    ctx.registry.register(Proc(kernel))
