"""What the CLI halves of the commands share. Imports click only; the rest lazily."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import click

if TYPE_CHECKING:
    from common.client import FdClient

F = TypeVar("F", bound=Callable[..., object])
R = TypeVar("R")

#: How long a CLI call to the controller may take (creating a container mounts and forks).
CALL_TIMEOUT = 120.0
#: How long a CLI call that only reads may take: a controller that stopped answering is
#: reported soon (longer than the controller's own bound on asking the sentry, so that a stopped
#: sentry is reported by the controller, by name).
QUERY_TIMEOUT = 20.0
#: The calls that only read.
QUERIES = frozenset({"Containers.State", "Containers.List", "Containers.Stats", "Proc.Ps"})
#: How long a CLI goes on sending a call again while a service is down or restarting.
RETRY_TIMEOUT = 60.0
#: The pause between two attempts.
RETRY_PAUSE = 0.2
#: Calls sent again when the controller, or a service behind it, went away before answering:
#: those that read, those whose repetition changes nothing more (a signal, ReleaseConsole), and
#: Containers.Create and Proc.Exec, whose token makes a repeated request find what the first one
#: made. The others fail with the error: their first attempt may or may not have taken effect.
RETRIED = frozenset(
    {
        "Containers.Create",
        "Containers.State",
        "Containers.Wait",
        "Containers.List",
        "Containers.Stats",
        "Containers.Kill",
        "Proc.Ps",
        "Proc.Exec",
        "Proc.ReleaseConsole",
        "Proc.WaitPid",
        "Proc.SignalProcess",
    }
)
#: Calls that move a container, sent again like RETRIED: a repetition refused because the first
#: attempt did take effect (the container is already where the call puts it: one of these
#: statuses, or gone for None) counts as done.
SETTLED_BY: dict[str, tuple[str, ...] | None] = {
    "Containers.Start": ("running", "stopped"),
    "Containers.Pause": ("paused",),
    "Containers.Resume": ("running",),
    "Containers.Delete": None,
}


@dataclass(frozen=True, slots=True)
class CliContext:
    """The global flags, resolved; passed to every command as click's ``obj``."""

    #: Directory of the container registry (absolute).
    root: str
    #: Directory of the services' sockets, locks and logs (absolute).
    run_dir: str
    #: Log line format for the CLI and the services it starts.
    log_format: str
    #: Debug logging for the CLI and the services it starts.
    debug: bool

    def with_run_dir(self, run_dir: str | None) -> CliContext:
        """This context, with a command's own --run-dir taking precedence over the global one."""
        if not run_dir:
            return self
        return CliContext(self.root, os.path.abspath(run_dir), self.log_format, self.debug)


def run_dir_option(fn: F) -> F:
    """A command-level --run-dir, for the commands that manage the services themselves."""
    return click.option(
        "--run-dir",
        "run_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Run directory of the services (overrides the global --run-dir).",
    )(fn)


def controller_call(
    obj: CliContext, method: str, args: object, result_type: type[R] | None = None, fds: list[int] | None = None
) -> R:
    """Call the controller over its fd channel, starting the services first if they are down.

    The caller keeps ownership of fds. The fd channel needs no ZMQ import, so most commands
    start fast.
    """
    result, out = controller_call_with_fds(obj, method, args, result_type, fds)
    for fd in out:
        os.close(fd)
    return result


def controller_call_with_fds(
    obj: CliContext,
    method: str,
    args: object,
    result_type: type[R] | None = None,
    fds: list[int] | None = None,
    wait_forever: bool = False,
) -> tuple[R, list[int]]:
    """controller_call, returning the reply's files too; the caller owns and closes them.

    A call in RETRIED or SETTLED_BY that fails because a service is down or restarting is sent
    again on a new connection (the services started again first, if they are down) until they
    have been away for RETRY_TIMEOUT.
    """
    from common.errors import is_unavailable

    timeout = QUERY_TIMEOUT if method in QUERIES else None
    repeated = False
    down_since: float | None = None
    while True:
        started = time.monotonic()
        try:
            with controller_client(obj) as client:
                result, out = client.call(method, args, result_type, fds, wait_forever, timeout)
            return cast(R, result), out
        except Exception as e:
            if repeated and method in SETTLED_BY and (settled := _settled(obj, method, args, e)) is not None:
                return cast(R, settled[0]), []
            if (method not in RETRIED and method not in SETTLED_BY) or not is_unavailable(e):
                raise
            now = time.monotonic()
            # The budget counts the time the services have been away, not the call's age: an
            # answer waited for hours (Containers.Wait) that a restart breaks is retried anew.
            if now - started > RETRY_TIMEOUT:
                down_since = now
            elif down_since is None:
                down_since = started
            if now - down_since > RETRY_TIMEOUT:
                raise
        repeated = True
        time.sleep(RETRY_PAUSE)


def _settled(obj: CliContext, method: str, args: object, error: Exception) -> tuple[object] | None:
    """When a repeated method was refused because its first attempt took effect: (its result,);
    else None."""
    from common.errors import ErrCode, RemoteError
    from common.messages.containers import ContainerState, IdArgs

    if not (isinstance(error, RemoteError) and error.remote_code in (ErrCode.CONFLICT, ErrCode.NOT_FOUND)):
        return None
    want = SETTLED_BY[method]
    try:
        state = controller_call(obj, "Containers.State", IdArgs(id=getattr(args, "id", "")), ContainerState)
    except RemoteError as e:
        return (None,) if want is None and e.remote_code == ErrCode.NOT_FOUND else None
    return (state,) if want is not None and state.status in want else None


def controller_client(obj: CliContext) -> FdClient:
    """A connection to the controller's fd channel (the caller closes it), the services started
    first if they are down."""
    from common.client import FdClient
    from common.rundir import SERVICES, RunDir

    run_dir = RunDir.at(obj.run_dir)
    # Only a missing service needs the manager (and its imports): most commands find all four.
    if not all(run_dir.running_pid(service) for service in SERVICES):
        from services.controller.services import ServiceManager

        ServiceManager(run_dir, obj.root, obj.log_format, obj.debug).start()
    return FdClient(run_dir.socket_path("controller"), timeout=CALL_TIMEOUT)


def wait_for_exit(obj: CliContext, cid: str) -> int:
    """Block until container cid has stopped; return its exit status (128 + signal when killed).

    Containers.Wait answers on the fd channel once the container stops, so waiting needs no
    event subscription (and no ZMQ in the CLI).
    """
    from common.messages.containers import ContainerState, IdArgs

    state: ContainerState
    state, _ = controller_call_with_fds(obj, "Containers.Wait", IdArgs(id=cid), ContainerState, wait_forever=True)
    return state.exit_status if state.exit_status is not None else 0


#: The pid of the `controller` process the user started, when a command server's worker runs
#: the command for it (set_representative); empty when this process is that one.
_representative: list[int] = []


def set_representative(pid: int) -> None:
    """This process runs the command of the `controller` process pid (a command server's
    worker): pid files name that one, which stands for the command and forwards its signals."""
    _representative[:] = [pid]


def representative_pid() -> int:
    """The pid that stands for this command: the `controller` process the user started."""
    return _representative[0] if _representative else os.getpid()


def request_token() -> str:
    """A fresh token for a request that may be sent again (Create, Exec): 128 random bits."""
    return os.urandom(16).hex()


def stdio_fds(preserve_fds: int) -> list[int]:
    """The fds a container inherits from the CLI: stdio, then --preserve-fds more from 3 on."""
    return [0, 1, 2, *range(3, 3 + preserve_fds)]


def write_pid_file(path: str, pid: int) -> None:
    """Write pid to path atomically, as runc does (a reader never sees a partial file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)
