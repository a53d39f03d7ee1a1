"""A process joining a running container (runc's setns process), child side of exec_stub.spawn.

The fork server forks this child with its pid namespace for children set to the container's,
so the child is born inside it. The child waits for "go" (by then the parent has put it into the
container's cgroup), joins the container's other namespaces through a pidfd of its init (the
user namespace first, all in one setns), places the files it was given at their guest fd
numbers, allocates a terminal of the container's devpts when asked, and then runs the same last
steps as an init (program.become_and_exec): its listener goes to the parent, then the exec, which
the sentry answers.

Sync messages are the init's (stub_child.py): parent "go"; child "console" with the pty master,
"listener" with the seccomp listener, {"log"} and {"error"}.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
from dataclasses import dataclass
from typing import NoReturn

from services.platform import linux
from services.platform.clone import CLONE_NEWUSER
from services.platform.execplan import ExecPlan, resolve_binary, resolve_home
from services.platform.linux import prctl
from services.platform.mounts import SetupError, doing
from services.platform.program import (
    EXEC_FAILED_STATUS,
    Channel,
    ExecError,
    Identity,
    become_and_exec,
    check_executable,
    report_failure,
    reset_signal_handlers,
)
from services.platform.stub_io import open_terminal, recv_message, send_message


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecChildPlan:
    """Everything the child needs, computed and validated by the parent before the fork."""

    #: Container id, for messages.
    container_id: str
    #: The parent's pidfd of the container's init, inherited by the fork.
    init_pidfd: int
    #: The CLONE_NEW* namespaces to join (without CLONE_NEWPID: the child is born in that one).
    ns_flags: int
    #: Parent fds, inherited, that become guest_fds[i].
    files: list[int]
    #: Guest fd numbers of files.
    guest_fds: list[int]
    #: The parent's fd of the executable to run instead of a path, if any.
    exec_file: int | None
    #: Allocate a terminal as stdio and controlling terminal.
    terminal: bool
    #: The program, its environment, working directory and limits.
    run: ExecPlan
    #: Credentials, capabilities and filter.
    who: Identity


def exec_child_main(sock: socket.socket, parent_end: socket.socket, plan: ExecChildPlan) -> NoReturn:
    """Join the container and exec plan's program in the forked child; never returns."""
    status = 1
    chan = Channel(sock)
    try:
        parent_end.close()
        reset_signal_handlers()
        prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _expect_go(chan.sock)
        with doing("joining the container's namespaces"):
            linux.setns(plan.init_pidfd, plan.ns_flags)
        os.close(plan.init_pidfd)
        if plan.ns_flags & CLONE_NEWUSER:
            with doing("becoming root in the user namespace"):
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # credential changes clear it
        os.setsid()
        exec_fd = _place_files(chan, plan)
        if plan.terminal:
            master = open_terminal()
            try:
                send_message(chan.sock, {"sync": "console"}, [master])
            finally:
                os.close(master)
        run = plan.run
        with doing(f"changing to the working directory {run.wd}"):
            os.chdir(run.wd)
        env = resolve_home(run.env, run.uid) if run.resolve_home else run.env
        program = exec_fd if exec_fd is not None else _binary(run, env)
        for number, soft, hard in run.rlimits:
            with doing(f"setting rlimit {number} to {soft}/{hard}"):
                resource.setrlimit(number, (soft, hard))
        status = EXEC_FAILED_STATUS
        become_and_exec(chan, plan.who, program, run.argv, env)
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent, then _exit
        report_failure(chan, e, "exec")
    finally:
        os._exit(status)


def _expect_go(sock: socket.socket) -> None:
    message, fds = recv_message(sock)
    for fd in fds:
        os.close(fd)
    if message is None:
        os._exit(1)  # the parent gave up: nobody is left to tell
    if message.get("sync") != "go":
        raise SetupError(f"waiting for 'go': got {message!r:.80}")


def _binary(run: ExecPlan, env: list[str]) -> str:
    """The program's path in the container, looked up as gVisor's exec does."""
    try:
        filename = resolve_binary(run.filename, run.wd, env)
    except OSError as e:
        raise ExecError(f"exec {run.filename}: {e.strerror or e}") from e
    # The exec is trapped and fails only after the parent stopped waiting: check now.
    check_executable(filename)
    return filename


def _place_files(chan: Channel, plan: ExecChildPlan) -> int | None:
    """files[i] becomes guest fd guest_fds[i]; the sync socket and the exec file move above them
    (close-on-exec); every other fd the fork server had is closed. Returns the exec file's fd."""
    sources = [*plan.files, chan.sock.fileno(), *([plan.exec_file] if plan.exec_file is not None else [])]
    floor = max([*plan.guest_fds, *sources, 2]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in plan.files]
    sync = fcntl.fcntl(chan.sock.fileno(), fcntl.F_DUPFD_CLOEXEC, floor)
    exec_fd = fcntl.fcntl(plan.exec_file, fcntl.F_DUPFD_CLOEXEC, floor) if plan.exec_file is not None else None
    chan.sock.detach()
    keep = sorted([*high, sync, *([exec_fd] if exec_fd is not None else [])])
    start = 0
    for fd in keep:
        if fd > start:
            linux.close_range(start, fd - 1)
        start = fd + 1
    linux.close_range(start)
    for fd, target in zip(high, plan.guest_fds, strict=True):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    chan.sock = socket.socket(fileno=sync)
    return exec_fd
