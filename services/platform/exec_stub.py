"""A process joining a running container: the parent side of runc's setns process, for the
fork server's Exec. The child side is exec_child.py.

The child must be born in the container's pid namespace (setns into a pid namespace only
affects children), so spawn points the fork server's own pid namespace for children at the
container's around the fork and back straight after: the child is then the fork server's, reaped
by it like an init, with no double fork and no subreaper. The other namespaces the child joins
itself, through a pidfd of the container's init.

Only for single-threaded callers: spawn forks.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.errors import ConflictError, InvalidArgument
from common.messages.execs import ExecArgs
from common.messages.spec import ContainerSpec
from services.platform import linux
from services.platform import stub as stubs
from services.platform.clone import CLONE_NEWPID, clone_process, namespace_flags
from services.platform.exec_child import ExecChildPlan, exec_child_main
from services.platform.execplan import ExecPlan, rlimit_list
from services.platform.filters import DEFAULT_POLICY, build_filter
from services.platform.program import Identity
from services.platform.stub_plan import cap_sets


@dataclass(slots=True)
class Spawned:
    """A process that joined its container and waits, in its trapped exec, for the sentry."""

    #: The child (pid, sync socket): the caller reads its late failures, then closes the socket.
    stub: stubs.Stub
    #: Its pid inside the container.
    ns_pid: int
    #: Its seccomp listener (the caller's).
    listener: int
    #: Its pty master with a terminal (the caller's), else None.
    console: int | None


def spawn(
    spec: ContainerSpec,
    init_pid: int,
    args: ExecArgs,
    before_setup: Callable[[int], None],
    cgroup_fds: Sequence[int],
) -> Spawned:
    """Start args's process in the container whose init is init_pid.

    The child joins the container's cgroup through cgroup_fds (the caller's:
    Cgroup.membership_files) first thing after "go". before_setup(pid) runs once the child
    exists and before "go" (the fork server reserves its exit record there).
    Raises InvalidArgument for arguments no process could run, StubError when the child fails
    before its listener arrives (it is then killed and reaped); ConflictError when the init is
    gone. The caller keeps args.fds.
    """
    plan = _plan(spec, args, cgroup_fds)
    try:
        pidfd = os.pidfd_open(init_pid)
    except ProcessLookupError:
        raise ConflictError(f"container {args.container_id!r}: its init {init_pid} is gone") from None
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        pid = _fork_into(pidfd, bool(namespace_flags(spec.namespaces) & CLONE_NEWPID))
        if pid == 0:
            exec_child_main(child_end, parent_end, dataclasses.replace(plan, init_pidfd=pidfd))
    except BaseException:
        parent_end.close()
        raise
    finally:
        # Only the parent gets here: the child never returns from exec_child_main.
        os.close(pidfd)
        child_end.close()
    stub = stubs.Stub(pid=pid, sync=parent_end, container_id=args.container_id, trap=True)
    try:
        before_setup(pid)
        stubs.send_go(stub)
        listener = stubs.await_listener(stub)
        ns_pid = _ns_pid(pid)
    except BaseException:
        stubs.kill(stub)
        raise
    console, stub.console = stub.console, None
    return Spawned(stub=stub, ns_pid=ns_pid, listener=listener, console=console)


def _plan(spec: ContainerSpec, args: ExecArgs, cgroup_fds: Sequence[int]) -> ExecChildPlan:
    """Validate args for spec and compute what the child needs (nothing may fail there that
    could be seen here)."""
    args.check()
    try:
        flags = namespace_flags(spec.namespaces)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    count = len(args.guest_fds)
    run = ExecPlan(
        filename=args.filename or args.argv[0],
        argv=list(args.argv),
        env=list(args.envv),
        wd=args.wd,
        uid=args.uid,
        gid=args.gid,
        rlimits=rlimit_list(args.limits),
        resolve_home=True,
        resolve_binary_path=True,
    )
    who = Identity(
        uid=args.uid,
        gid=args.gid,
        additional_gids=list(args.extra_gids),
        caps=cap_sets(args.capabilities),
        no_new_privileges=args.no_new_privileges,
        seccomp=build_filter(DEFAULT_POLICY),
        trap=True,
    )
    return ExecChildPlan(
        container_id=args.container_id,
        init_pidfd=-1,
        cgroup_fds=tuple(cgroup_fds),
        ns_flags=flags & ~CLONE_NEWPID,
        files=list(args.fds[:count]),
        guest_fds=list(args.guest_fds),
        exec_file=args.fds[count] if args.has_exec_file else None,
        terminal=args.terminal,
        run=run,
        who=who,
    )


def _fork_into(pidfd: int, new_pid_ns: bool) -> int:
    """Fork a child born in the pid namespace of pidfd's process (when the container has one of
    its own); 0 in the child. The caller's pid namespace for children is restored at once."""
    if not new_pid_ns:
        return clone_process(0)
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(pidfd, CLONE_NEWPID)
        try:
            pid = clone_process(0)
        except BaseException:
            linux.setns(own, CLONE_NEWPID)
            raise
        if pid != 0:
            # The child must not: its own pid namespace is the container's now.
            linux.setns(own, CLONE_NEWPID)
        return pid
    finally:
        os.close(own)


def _ns_pid(pid: int) -> int:
    """pid as its own pid namespace numbers it (the last NSpid entry)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return pid
