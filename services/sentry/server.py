"""Set-up of the sentry service: its kernel state, its event publisher, its syscall supervisor,
and its domains."""

from __future__ import annotations

import contextlib
import logging
import time

from common import wire
from common.errors import ServiceUnavailable
from common.events import Publisher, Subscriber
from common.messages.platform import TaskExit
from common.service import ServiceContext
from services.sentry.control.lifecycle import Lifecycle
from services.sentry.control.proc import Proc
from services.sentry.directfs import DirectFs
from services.sentry.directfs import enabled as directfs_enabled
from services.sentry.gofer_client import AsyncGoferChannel
from services.sentry.kernel import Kernel
from services.sentry.restore import catch_up, reattach, restore
from services.sentry.supervisor import Supervisor

log = logging.getLogger(__name__)

#: How often the sentry closes the memory fds of exited tasks and catches up with the
#: platform's exits, seconds.
SWEEP_INTERVAL = 2.0


def setup(ctx: ServiceContext) -> None:
    """Publish container events, follow the platform's task exits, serve trapped syscalls,
    register Lifecycle and Proc."""
    publisher = Publisher(ctx.run_dir.events_endpoint)
    kernel = Kernel(ctx.run_dir, publisher)
    kernel.shutdown = ctx.loop.stop
    gofer = AsyncGoferChannel(str(ctx.run_dir.socket_path("gofer")), ctx.loop.add_reader, ctx.loop.remove_reader)
    direct = DirectFs() if directfs_enabled() else None  # the supervisor's from here on
    supervisor = Supervisor(gofer, ctx.loop.add_event_reader, ctx.loop.remove_reader, direct)
    kernel.supervisor = supervisor
    tasks = Subscriber(ctx.run_dir.task_events_endpoint, ["task."])

    def on_task_event() -> None:
        for topic, env in tasks.drain():
            if topic.endswith(".exit"):
                kernel.on_task_exit(wire.from_wire(TaskExit, env["body"]))

    def rebuild() -> None:
        ctx.system.recovered.update(restore(kernel))

    def on_platform_back() -> None:
        if kernel.restored:
            catch_up(kernel)

    last_sweep = time.monotonic()

    def housekeeping() -> None:
        nonlocal last_sweep
        if time.monotonic() - last_sweep < SWEEP_INTERVAL:
            return
        last_sweep = time.monotonic()
        supervisor.mem.sweep()
        if not kernel.containers and kernel.restored:
            return
        with contextlib.suppress(ServiceUnavailable):
            if not kernel.restored:
                rebuild()
            elif not kernel.platform.reconnects():
                # An exit the platform published while our subscription was reconnecting is
                # lost to PUB/SUB; the platform keeps it, so ask now and then.
                catch_up(kernel)

    kernel.rebuild = rebuild
    kernel.platform.on_reconnect = on_platform_back

    def on_gofer_back() -> None:
        recovered = ctx.system.recovered
        recovered["mounts"] = recovered.get("mounts", 0) + reattach(kernel)

    kernel.gofer.on_reconnect = on_gofer_back
    gofer.on_connect = kernel.gofer.connect
    gofer.on_detached = on_gofer_back
    with contextlib.suppress(ServiceUnavailable):
        rebuild()  # else on the first call or tick that finds the platform up
    ctx.loop.add_socket(tasks.sock, on_task_event)
    ctx.loop.add_tick(gofer.tick)
    ctx.loop.add_tick(kernel.send_reaps)  # before housekeeping's catch-up, which would list them
    ctx.loop.add_tick(housekeeping)
    ctx.system.details = lambda: {"syscalls": {cid: dict(c.syscalls) for cid, c in kernel.containers.items()}}
    ctx.loop.add_cleanup(tasks.close)
    ctx.loop.add_cleanup(publisher.close)
    ctx.loop.add_cleanup(supervisor.close)
    ctx.loop.add_cleanup(gofer.close)
    ctx.registry.register(Lifecycle(kernel))
    ctx.registry.register(Proc(kernel))
