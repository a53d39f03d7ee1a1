"""create: create a container from an OCI bundle; its program waits for `start`."""

from __future__ import annotations

import os

import click

from services.controller.commands.base import CliContext, controller_call, stdio_fds, wait_for_exit, write_pid_file


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


@click.command("create")
@click.option("--bundle", "-b", default=".", type=click.Path(file_okay=False), help="Path to the bundle.")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the container's process id to FILE.")
@click.option("--preserve-fds", type=click.IntRange(min=0), default=0, help="Pass N more fds (3, 4, ...).")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, bundle: str, pid_file: str | None, preserve_fds: int, cid: str) -> None:
    """Create container CID from the bundle; `start` runs its program."""
    from common.messages.containers import ContainerState, CreateArgs

    args = CreateArgs(id=cid, bundle=os.path.abspath(bundle))
    controller_call(obj, "Containers.Create", args, ContainerState, fds=stdio_fds(preserve_fds))
    if pid_file:
        represent(obj, cid, os.path.abspath(pid_file))
