"""The command line and start-up sequence every service shares.

``sentry --run-dir DIR [--log FILE] [--log-format text|json] [--debug]`` (likewise gofer,
platform, and ``controller serve``): configure logging, take the run directory's instance lock
for the service, count the start (``$RUN/<service>.starts``), register the System domain and the
service's own domains, and serve until SIGTERM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import click

from common import log as logconf
from common.errors import ZerovisorError
from common.rpc import Dispatcher, Registry
from common.rundir import DEFAULT_ROOT, InstanceLock, RunDir
from common.server import ServiceLoop
from common.system import System, count_start

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What a service's set-up function gets to register its domains and readers."""

    #: The service's name.
    service: str
    #: Its run directory, already created and locked.
    run_dir: RunDir
    #: The registry to add domains to.
    registry: Registry
    #: The main loop, for services that watch fds of their own.
    loop: ServiceLoop
    #: The System domain, whose status the service may add details to.
    system: System
    #: Debug logging was asked for (passed on to helper processes).
    debug: bool = False


Setup = Callable[[ServiceContext], None]


def run_service(
    service: str, setup: Setup | None, run_dir: str, log_file: str | None, log_format: str, debug: bool
) -> None:
    """Start one service in this process and serve until signalled."""
    logconf.configure(service, log_file, "json" if log_format == "json" else "text", debug)
    rd = RunDir.at(run_dir).ensure()
    lock = InstanceLock(rd, service)
    try:
        restarts = count_start(rd, service) - 1
        registry = Registry()
        dispatcher = Dispatcher(registry)
        system = System(service, str(rd.path), dispatcher, restarts)
        registry.register(system)
        loop = ServiceLoop(service, rd, dispatcher)
        if setup is not None:
            setup(ServiceContext(service, rd, registry, loop, system, debug))
        loop.serve()
    finally:
        lock.release()


def service_options(fn: Callable[..., None]) -> Callable[..., None]:
    """The options every service's command line takes."""
    fn = click.option("--debug", is_flag=True, help="Log at debug level.")(fn)
    fn = click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Log line format."
    )(fn)
    fn = click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Log to FILE instead of stderr.")(fn)
    fn = click.option(
        "--run-dir",
        envvar="ZEROVISOR_RUN_DIR",
        default=DEFAULT_ROOT,
        show_default=True,
        type=click.Path(file_okay=False),
        help="Directory of the services' sockets and locks (mode 0700).",
    )(fn)
    return fn


def service_command(service: str, doc: str, setup: Setup | None = None) -> click.Command:
    """A click command that runs service with setup; the console script of sentry, gofer, platform."""

    @click.command(service, help=doc)
    @service_options
    def main(run_dir: str, log_file: str | None, log_format: str, debug: bool) -> None:
        try:
            run_service(service, setup, run_dir, log_file, log_format, debug)
        except (ZerovisorError, OSError) as e:
            # Logging is set up (or falls back to stderr), so one line says it; exit 1.
            log.error("%s: %s", service, e, exc_info=True)
            raise SystemExit(1) from None

    return main
