"""run: create and start a container, and (unless detached) wait for it and delete it."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import click

from services.controller.commands.base import CliContext, controller_call, wait_for_exit
from services.controller.commands.create import console_socket_option, create_container, represent


@click.command("run")
@click.option("--bundle", "-b", default=".", type=click.Path(file_okay=False), help="Path to the bundle.")
@click.option("--detach", "-d", is_flag=True, help="Return once the program runs.")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the container's process id to FILE.")
@console_socket_option
@click.option("--preserve-fds", type=click.IntRange(min=0), default=0, help="Pass N more fds (3, 4, ...).")
@click.option("--strace", is_flag=True, help="Log every trapped syscall in the sentry's log, as runsc --strace.")
@click.argument("cid")
@click.pass_obj
def cli(
    obj: CliContext,
    bundle: str,
    detach: bool,
    pid_file: str | None,
    console_socket: str | None,
    preserve_fds: int,
    strace: bool,
    cid: str,
) -> None:
    """Run container CID from the bundle; exit with its exit status (128 + signal when killed)."""
    from common.messages.containers import ContainerState, DeleteArgs, IdArgs, KillArgs

    # In the foreground without a console socket, a terminal is relayed to our own stdio.
    master = create_container(obj, cid, bundle, preserve_fds, console_socket, relay=not detach, strace=strace)
    relay = None
    if master is not None:
        from services.controller.console import TerminalRelay

        relay = TerminalRelay(master)
    try:
        if pid_file:
            represent(obj, cid, os.path.abspath(pid_file))
        if relay is not None:
            relay.start()
        controller_call(obj, "Containers.Start", IdArgs(id=cid), ContainerState)
    except BaseException:
        if relay is not None:
            relay.close()
        controller_call(obj, "Containers.Delete", DeleteArgs(id=cid, force=True))
        raise
    if detach:
        return

    def forward(signo: int, _frame: FrameType | None) -> None:
        # As runc run does: a signal to us is a signal to the container.
        controller_call(obj, "Containers.Kill", KillArgs(id=cid, signo=signo))

    for signo in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signo, forward)
    if relay is not None:
        signal.signal(signal.SIGWINCH, lambda _signo, _frame: relay.resize())
    code = wait_for_exit(obj, cid)
    if relay is not None:
        relay.wait(timeout=5.0)  # the last output may still be on its way
        relay.close()
    controller_call(obj, "Containers.Delete", DeleteArgs(id=cid, force=True))
    sys.exit(code)
