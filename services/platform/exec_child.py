"""A process joining a running container (runc's setns process), child side of exec_stub.spawn.

The fork server forks this child with its pid namespace for children set to the container's,
so the child is born inside it. The child waits for "go", joins the container's cgroup by
itself (cheaper than being moved: Cgroup.membership_files), joins the container's other
namespaces through a pidfd of its init (the user namespace first, all in one setns), places the
files it was given at their guest fd numbers, allocates a terminal of the container's devpts
when asked, and then runs the same last steps as an init (program.become_and_exec): its
listener goes to the parent, then the exec, which the sentry answers.

Sync messages are the init's (stub_child.py): parent "go"; child "console" with the pty master,
"listener" with the seccomp listener, {"log"} and {"error"}.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from typing import NoReturn

from common import processctl
from common.fdlayout import place_fds
from common.processctl import prctl
from services.platform import linux
from services.platform.cgroup_files import join_self
from services.platform.clone import CLONE_NEWUSER
from services.platform.execplan import ExecPlan
from services.platform.mounts import doing
from services.platform.program import (
    EXEC_FAILED_STATUS,
    Channel,
    Identity,
    become_and_exec,
    become_root_in_user_namespace,
    enter_working_directory,
    program_path,
    report_failure,
    reset_signal_handlers,
    set_rlimits,
)
from services.platform.stub_io import expect_step, send_terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecChildPlan:
    """Everything the child needs, computed and validated by the parent before the fork."""

    #: Container id, for messages.
    container_id: str
    #: The parent's pidfd of the container's init, inherited by the fork.
    init_pidfd: int
    #: The parent's fds of the container's cgroup membership files, inherited: the child
    #: joins the cgroup through them (cgroup_files.join_self) and closes them.
    cgroup_fds: tuple[int, ...]
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
        prctl(processctl.PR_SET_PDEATHSIG, signal.SIGKILL)
        expect_step(chan.sock, "go")
        with doing("joining the container's cgroup"):
            join_self(plan.cgroup_fds)
        with doing("joining the container's namespaces"):
            linux.setns(plan.init_pidfd, plan.ns_flags)
        os.close(plan.init_pidfd)
        if plan.ns_flags & CLONE_NEWUSER:
            become_root_in_user_namespace()
        os.setsid()
        exec_fd = _place_files(chan, plan)
        if plan.terminal:
            send_terminal(chan.sock)
        env = enter_working_directory(plan.run)
        program = exec_fd if exec_fd is not None else program_path(plan.run, env, check=True)
        set_rlimits(plan.run)
        status = EXEC_FAILED_STATUS
        become_and_exec(chan, plan.who, program, plan.run.argv, env)
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent, then _exit
        report_failure(chan, e, "exec")
    finally:
        os._exit(status)


def _place_files(chan: Channel, plan: ExecChildPlan) -> int | None:
    """files[i] becomes guest fd guest_fds[i]; the sync socket and the exec file move above them
    (close-on-exec); every other fd the fork server had is closed. Returns the exec file's fd."""
    exec_file = [plan.exec_file] if plan.exec_file is not None else []
    sync, *exec_fd = place_fds(plan.files, plan.guest_fds, [chan.sock.detach(), *exec_file])
    chan.sock = socket.socket(fileno=sync)
    return exec_fd[0] if exec_fd else None
