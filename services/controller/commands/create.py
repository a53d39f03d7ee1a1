"""create: create a container from an OCI bundle; its program waits for `start`."""

from __future__ import annotations

import os

import click

from services.controller.commands.base import (
    CliContext,
    controller_call_with_fds,
    request_token,
    stdio_fds,
    wait_for_exit,
    write_pid_file,
)


def represent(obj: CliContext, cid: str, pid_file: str) -> None:
    """Leave a child that exits with the container's exit status, and name it in pid_file.

    The container's init is a child of the fork server, not of our caller; this process is
    what the caller (containerd's shim, as a subreaper) can reap instead, as runsc does.
    """
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)  # the caller's pipes must not wait on us
            code = wait_for_exit(obj, cid)
        finally:
            os._exit(code)
    write_pid_file(pid_file, pid)


def create_container(
    obj: CliContext,
    cid: str,
    bundle: str,
    preserve_fds: int,
    console_socket: str | None,
    relay: bool = False,
    strace: bool = False,
) -> int | None:
    """Create container cid; its terminal's pty master goes to console_socket, or, with relay,
    back to the caller (who owns and closes it). None when there is no master to return.
    """
    from common.messages.containers import CreateArgs, CreateResult

    args = CreateArgs(
        id=cid,
        bundle=os.path.abspath(bundle),
        console_socket=bool(console_socket),
        foreground=relay,
        strace=strace,
        token=request_token(),
    )
    _, fds = controller_call_with_fds(obj, "Containers.Create", args, CreateResult, fds=stdio_fds(preserve_fds))
    master = fds[0] if fds else None
    for fd in fds[1:]:
        os.close(fd)
    if master is None or not console_socket:
        return master
    from services.controller.console import send_console

    try:
        send_console(console_socket, master)
    finally:
        os.close(master)  # the receiver holds its own copy now
    return None


def console_socket_option(fn: click.decorators.FC) -> click.decorators.FC:
    """--console-socket, as runc's."""
    return click.option(
        "--console-socket",
        type=click.Path(dir_okay=False),
        help="Send the pty master of a terminal process to the AF_UNIX socket at PATH.",
    )(fn)


@click.command("create")
@click.option("--bundle", "-b", default=".", type=click.Path(file_okay=False), help="Path to the bundle.")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the container's process id to FILE.")
@console_socket_option
@click.option("--preserve-fds", type=click.IntRange(min=0), default=0, help="Pass N more fds (3, 4, ...).")
@click.argument("cid")
@click.pass_obj
def cli(
    obj: CliContext, bundle: str, pid_file: str | None, console_socket: str | None, preserve_fds: int, cid: str
) -> None:
    """Create container CID from the bundle; `start` runs its program."""
    from common.messages.containers import DeleteArgs

    create_container(obj, cid, bundle, preserve_fds, console_socket)
    if pid_file:
        try:
            represent(obj, cid, os.path.abspath(pid_file))
        except BaseException:
            controller_call_with_fds(obj, "Containers.Delete", DeleteArgs(id=cid, force=True))
            raise
