"""exec: run a new process in a running container (runc exec, runsc exec).

The request, the client's stdio, every --pass-fd and the --exec-fd file go to the controller in
one call on its fd channel; then Proc.WaitPid answers when the process exits, so this command
never imports ZMQ. A service that restarts meanwhile costs a retry, not the process. With
--detach a child `controller exec` without --detach waits for the process instead, and stands
for it on the host.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import click

from services.controller.commands.base import (
    CliContext,
    controller_call,
    controller_call_with_fds,
    representative_pid,
    request_token,
    write_pid_file,
)
from services.controller.commands.create import console_socket_option

if TYPE_CHECKING:
    from common.messages.proc import ExecRequest, ProcessArgs
    from services.controller.console import TerminalRelay

#: Signals forwarded to the process (to its terminal's foreground group with a terminal).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
#: How long --detach waits for the child to name itself in the pid file (the seed's limit).
DETACH_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Files:
    """The files sent with the request: fds[i] becomes guest fd guest_fds[i]; one more is the
    exec file."""

    #: Our fd numbers, in order.
    fds: list[int]
    #: Guest fd numbers of fds (the exec file has none).
    guest_fds: list[int]


def parse_user(value: str | None) -> tuple[int | None, int | None]:
    """--user UID[:GID] as numbers; click.BadParameter otherwise."""
    if value is None:
        return None, None
    uid, sep, gid = value.partition(":")
    try:
        ids = (int(uid), int(gid) if sep else None)
    except ValueError:
        raise click.BadParameter(f"{value!r}: want UID[:GID] as numbers", param_hint="--user") from None
    if ids[0] < 0 or (ids[1] is not None and ids[1] < 0):
        raise click.BadParameter(f"{value!r}: ids cannot be negative", param_hint="--user")
    return ids


def parse_gids(value: str | None) -> list[int] | None:
    """--additional-gids G,G,... as numbers."""
    if value is None:
        return None
    try:
        gids = [int(g) for g in value.split(",") if g]
    except ValueError:
        raise click.BadParameter(f"{value!r}: want G[,G...] as numbers", param_hint="--additional-gids") from None
    if any(g < 0 for g in gids):
        raise click.BadParameter(f"{value!r}: gids cannot be negative", param_hint="--additional-gids")
    return gids


def parse_pass_fds(values: tuple[str, ...]) -> dict[int, int]:
    """--pass-fd HOST:GUEST entries as guest -> host; each host fd must be open here."""
    passed: dict[int, int] = {}
    for value in values:
        host, sep, guest = value.partition(":")
        try:
            host_fd, guest_fd = int(host), int(guest)
        except ValueError:
            raise click.BadParameter(f"{value!r}: want HOST:GUEST fd numbers", param_hint="--pass-fd") from None
        if not sep or host_fd < 0 or guest_fd < 0:
            raise click.BadParameter(f"{value!r}: want HOST:GUEST, neither negative", param_hint="--pass-fd")
        _check_open(host_fd, "--pass-fd")
        passed[guest_fd] = host_fd
    return passed


def _check_open(fd: int, hint: str) -> None:
    try:
        os.fstat(fd)
    except OSError:
        raise click.BadParameter(f"fd {fd} is not open", param_hint=hint) from None


def files_for(terminal: bool, passed: dict[int, int], exec_fd: int | None) -> Files:
    """Our stdio (unless the process gets a terminal), then --pass-fd, sorted by guest fd, and
    the exec file last."""
    guests = {} if terminal else {0: 0, 1: 1, 2: 2}
    guests.update(passed)
    order = sorted(guests)
    return Files(fds=[guests[g] for g in order] + ([exec_fd] if exec_fd is not None else []), guest_fds=order)


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("--cwd", help="Working directory of the process in the container.")
@click.option("--env", "-e", multiple=True, help="Set KEY=VALUE in the environment (repeatable).")
@click.option("--user", "-u", help="UID[:GID] to run as.")
@click.option("--additional-gids", "-g", help="Supplementary groups G[,G...].")
@click.option("--cap", "-c", "caps", multiple=True, help="Add a capability (repeatable).")
@click.option("--detach", "-d", is_flag=True, help="Return once the process runs.")
@click.option("--process", "-p", "process_file", type=click.Path(dir_okay=False), help="An OCI process.json.")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the pid of the process's representative here.")
@click.option("--internal-pid-file", type=click.Path(dir_okay=False), help="Write the pid inside the container here.")
@console_socket_option
@click.option("--pass-fd", "pass_fds", multiple=True, help="Give our fd HOST to the process as fd GUEST.")
@click.option("--exec-fd", type=click.IntRange(min=0), help="Run the program from our fd FD, not from a path.")
@click.option("--tty", "-t", is_flag=True, help="Give the process a terminal.")
@click.argument("cid")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def cli(
    obj: CliContext,
    cwd: str | None,
    env: tuple[str, ...],
    user: str | None,
    additional_gids: str | None,
    caps: tuple[str, ...],
    detach: bool,
    process_file: str | None,
    pid_file: str | None,
    internal_pid_file: str | None,
    console_socket: str | None,
    pass_fds: tuple[str, ...],
    exec_fd: int | None,
    tty: bool,
    cid: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in running container CID; exit with its exit status (128 + signal when killed)."""
    from common.messages.proc import ExecRequest

    if process_file and command:
        raise click.UsageError("with --process, give only the container id")
    if not process_file and not command:
        raise click.UsageError("give a container id and a command (or --process)")
    process, terminal = _read_process(process_file) if process_file else ("", False)
    terminal = terminal or tty
    if console_socket and not terminal:
        raise click.UsageError("--console-socket needs a terminal (--tty, or terminal in the process file)")
    uid, gid = parse_user(user)
    gids = parse_gids(additional_gids)
    passed = parse_pass_fds(pass_fds)
    if exec_fd is not None:
        _check_open(exec_fd, "--exec-fd")
    if detach:
        sys.exit(_detach(obj, pid_file))
    files = files_for(terminal, passed, exec_fd)
    request = ExecRequest(
        id=cid,
        process=process,
        args=list(command),
        cwd=cwd,
        env=list(env),
        uid=uid,
        gid=gid,
        additional_gids=gids,
        caps=list(caps),
        tty=tty,
        guest_fds=files.guest_fds,
        token=request_token(),
        fds=files.fds,
    )
    sys.exit(_run(obj, request, pid_file, internal_pid_file, console_socket))


#: exec's options that take a value (the token after them is not an option).
_VALUE_OPTIONS = frozenset(
    {"--cwd", "--env", "-e", "--user", "-u", "--additional-gids", "-g", "--cap", "-c", "--process", "-p"}
    | {"--pid-file", "--internal-pid-file", "--console-socket", "--pass-fd", "--exec-fd"}
)


def without_detach(argv: list[str]) -> list[str]:
    """Our command line without --detach/-d among exec's options (a command's own -d stays)."""
    start = argv.index("exec") + 1
    out, i = argv[:start], start
    while i < len(argv):
        token = argv[i]
        if token == "--" or not token.startswith("-"):
            break  # the container id: the command follows
        if token not in ("--detach", "-d"):
            out.append(token)
        if token in _VALUE_OPTIONS and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 1
        i += 1
    return out + argv[i:]


def _read_process(path: str) -> tuple[str, bool]:
    """The text of --process, and whether it asks for a terminal."""
    import json

    try:
        with open(path) as f:
            text = f.read()
        value = json.loads(text)
    except (OSError, ValueError) as e:
        raise click.BadParameter(f"{path}: {e}", param_hint="--process") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{path}: not a JSON object", param_hint="--process")
    return text, value.get("terminal") is True


def _run(
    obj: CliContext,
    request: ExecRequest,
    pid_file: str | None,
    internal_pid_file: str | None,
    console_socket: str | None,
) -> int:
    """Start the process, stand for it until it exits; its exit code.

    Both calls are sent again if a service restarts under them: the request's token makes a
    repeated Exec find the process the first one started, and the sentry keeps the last few exit
    statuses it handed out.
    """
    from common.messages.proc import ExecResult, ProcessArgs, ProcessExit, SignalProcessArgs

    result, fds = controller_call_with_fds(obj, "Proc.Exec", request, ExecResult, request.fds)
    master = fds[0] if fds else None
    relay = None
    try:
        if internal_pid_file:
            write_pid_file(os.path.abspath(internal_pid_file), result.pid)
        # After the internal one: once --pid-file is there, both are (runsc's order).
        if pid_file:
            write_pid_file(os.path.abspath(pid_file), representative_pid())
        cid, pid, foreground = request.id, result.pid, master is not None
        if master is not None:
            relay = _take_terminal(master, console_socket)
            _release_console(obj, ProcessArgs(cid=cid, pid=pid))

        def forward(signo: int, _frame: FrameType | None) -> None:
            args = SignalProcessArgs(cid=cid, pid=pid, signo=signo, foreground=foreground)
            controller_call(obj, "Proc.SignalProcess", args)

        for signo in FORWARDED:
            signal.signal(signo, forward)
        status: ProcessExit
        status, _ = controller_call_with_fds(
            obj, "Proc.WaitPid", ProcessArgs(cid=cid, pid=pid), ProcessExit, wait_forever=True
        )
    finally:
        if master is not None and relay is None:
            os.close(master)  # the console socket's receiver holds its own copy
    if relay is not None:
        relay.wait(timeout=5.0)  # the last output may still be on its way
        relay.close()
    return int(status.exit_code or 0)


def _take_terminal(master: int, console_socket: str | None) -> TerminalRelay | None:
    """Send the pty master to the console socket (None), or relay it to our stdio (the relay,
    running, resized with our window)."""
    from services.controller.console import TerminalRelay, send_console

    if console_socket:
        send_console(console_socket, master)
        return None
    relay = TerminalRelay(master)
    relay.start()
    signal.signal(signal.SIGWINCH, lambda _signo, _frame: relay.resize())
    return relay


def _release_console(obj: CliContext, process: ProcessArgs) -> None:
    """Tell the fork server we hold the pty master, so that it drops the copy it kept in case
    the reply carrying it was lost (until then, our exit would not hang up the terminal)."""
    from common.errors import ErrCode, ZerovisorError, has_code

    try:
        controller_call(obj, "Proc.ReleaseConsole", process)
    except ZerovisorError as e:
        if not has_code(e, ErrCode.NOT_FOUND):
            raise
        # The process, or its container, is gone already, and its terminal with it.


def _detach(obj: CliContext, pid_file: str | None) -> int:
    """Start a child `controller exec` without --detach and return once it names itself in the
    pid file: the child is the host process that stands for the exec'd one."""
    import subprocess
    import tempfile
    import time

    argv = without_detach(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="exec-pid-") as tmp:
        if pid_file is None:
            pid_file = os.path.join(tmp, "pid")
            command_at = argv.index("exec") + 1
            argv[command_at:command_at] = ["--pid-file", pid_file]
        child = subprocess.Popen([sys.executable, "-m", "services.controller", *argv], start_new_session=True)
        deadline = time.monotonic() + DETACH_TIMEOUT
        while time.monotonic() < deadline:
            if child.poll() is not None:
                return child.returncode  # it failed (and said why) or the process already ended
            try:
                with open(pid_file) as f:
                    if f.read().strip() == str(child.pid):
                        return 0
            except FileNotFoundError:
                pass
            time.sleep(0.01)
    child.kill()
    child.wait()
    raise click.ClickException(f"the exec child {child.pid} did not start within {DETACH_TIMEOUT:g} s")
