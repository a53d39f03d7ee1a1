"""Stub processes: a container's init from clone to exec (parent side).

This module owns the parent half of runc's init protocol for the fork server: launch clones
the init into its namespaces, writes its id maps, lets the caller place it (cgroup) and waits
until the child has built the container's filesystem and reports ready (runc's procReady);
release tells it to run (procRun), after which the child sets credentials, capabilities and
the seccomp filter and execs the program. The child half is stub_child.py.

A trapping init (launch(trap=True)) loads its filter with a listener and sends that back
before it execs; the exec is itself trapped, so release returns the listener as soon as it
arrives and leaves the sync socket to the caller, who reads it with read_late until EOF.

Only for single-threaded callers: launch forks (see clone.clone_process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common import fdpass
from common.errors import ErrCode, ZerovisorError
from common.messages.spec import ContainerSpec, IdMapping
from services.platform import hooks
from services.platform.clone import CLONE_NEWUSER, clone_process
from services.platform.execplan import ExecPlan
from services.platform.stub_child import child_main, hook_state
from services.platform.stub_io import recv_message, send_message
from services.platform.stub_plan import child_plan

log = logging.getLogger(__name__)

#: Seconds launch waits for "ready" and release for the exec, before killing the child.
SYNC_TIMEOUT = 30.0
#: Seconds kill waits for a SIGKILLed child to be reaped. A child stuck in the kernel
#: (uninterruptible sleep, or frozen by a v1 freezer) does not die at once, and must not stop
#: the single-threaded fork server, and every container's syscalls behind it, with it.
REAP_TIMEOUT = 5.0


class StubError(ZerovisorError):
    """The container's init failed before its program ran; str() is the child's own account.

    A failed system call in the init (a mount, setuid, exec), not a bug of ours: hence
    OS_ERROR, with the errno when the child sent one.
    """

    code = ErrCode.OS_ERROR

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        #: errno of the failed call, when there was one.
        self.errno = errno


class _SyncTimeout(StubError):
    """The child did not answer in time."""


class _ChildGone(StubError):
    """The child closed its end (it died, or exec'd) before the expected message."""


@dataclass
class Stub:
    """A launched container init, waiting for release()."""

    #: Host pid of the container's init (a child of the caller, who reaps it).
    pid: int
    #: Parent end of the sync socket pair; owned by the caller until release() or kill.
    sync: socket.socket
    #: Container id, for messages.
    container_id: str = ""
    #: False when the spec has no process: release refuses and leaves the child alone.
    runnable: bool = True
    #: The pty master of a terminal process, owned by the caller (None without a terminal).
    console: int | None = None
    #: The filter traps: release returns its listener before the exec.
    trap: bool = False


def launch(
    spec: ContainerSpec,
    container_id: str,
    stdio: list[int],
    before_setup: Callable[[int], None] | None = None,
    trap: bool = True,
    cgroup_fds: Sequence[int] = (),
) -> Stub:
    """Clone the container's init and wait until its filesystem is ready.

    stdio[i] becomes the init's fd i; the caller keeps (and closes) its own copies.
    With trap the filter returns the trapped calls to a supervisor (release hands out the
    listener) and the rootfs and bind mounts are read-only to the program; trap=False is
    for callers that cannot serve notifications (tests, tools).
    The child joins its cgroup through cgroup_fds (the caller's: Cgroup.membership_files)
    first thing after "go". before_setup(pid) runs in the parent once the child exists, before
    "go" (the fork server reserves its exit record there). Raises InvalidArgument for a spec
    this code cannot run, StubError when the child fails or does not answer within
    SYNC_TIMEOUT; the child is then killed (see kill). An exception from before_setup is
    re-raised as it is, after the same cleanup. On success the caller owns the returned Stub: it must release()
    it or kill it, and reap its pid.
    """
    plan = child_plan(spec, container_id, stdio, trap, tuple(cgroup_fds))
    # Both ends close on exec: the child's end is how the parent sees that exec happened.
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        pid = clone_process(plan.clone_flags)
    except OSError as e:
        parent_end.close()
        child_end.close()
        raise StubError(f"container init: cloning into namespaces: {e}", e.errno) from e
    if pid == 0:
        child_main(child_end, parent_end, plan)
    child_end.close()
    stub = Stub(pid=pid, sync=parent_end, container_id=container_id, runnable=spec.process is not None, trap=trap)
    try:
        if plan.clone_flags & CLONE_NEWUSER:
            _write_id_maps(pid, spec)
            _own_stdio(stdio, spec)
        if before_setup is not None:
            before_setup(pid)
        _send(stub, "go")
        deadline = time.monotonic() + SYNC_TIMEOUT
        while (step := _wait_for(stub, ("hooks", "console", "ready"), deadline)[0]) != "ready":
            if step == "hooks":
                # The child waits meanwhile; the hooks' own timeouts bound this, not ours.
                state = hook_state(spec, container_id, "creating", pid)
                hooks.run_hooks("prestart", spec.hooks.prestart, state)
                hooks.run_hooks("createRuntime", spec.hooks.create_runtime, state)
                _send(stub, "hooks-done")
                deadline = time.monotonic() + SYNC_TIMEOUT
    except _ChildGone as e:
        status = kill(stub)
        raise StubError(f"{e} ({_describe(status)})", e.errno) from e
    except BaseException:
        kill(stub)
        raise
    log.debug("container %s: init %d ready", container_id, pid)
    return stub


def release(stub: Stub, plan: ExecPlan, fds: list[int] | None = None) -> int | None:
    """Let the init run plan's program with fds (still the caller's) as the donated files.

    Without trap: returns None once the init has exec'd, and closes stub.sync. A child that
    dies on its own while it runs the last steps also reads as a successful exec (EOF): its
    wait status tells the rest.

    With trap: returns the filter's listener fd (the caller's) as soon as the init sends it,
    before its exec, which the listener's holder must answer. stub.sync stays open and the
    caller's: a later failure (exec, or setuid when the filter went early) arrives there
    as {"error"}; read it with read_late until EOF, then close it.

    Raises StubError when the child reports a failure before that point (e.g. "exec ls: ...",
    for a binary that does not resolve; it then exits 127), is already gone, or does not
    answer within SYNC_TIMEOUT (it is then killed); stub.sync is then closed. The caller
    reaps the child in every case.

    A stub whose spec has no process is refused with StubError before anything is sent; the
    child and stub.sync stay the caller's.
    """
    if not stub.runnable:
        raise StubError("container has no process")
    listener = None
    try:
        _send(stub, "run", {"plan": plan.to_message()}, fds)
        if stub.trap:
            listener = await_listener(stub)
        else:
            try:
                _wait_for(stub, (), time.monotonic() + SYNC_TIMEOUT)
            except _SyncTimeout:
                _signal(stub.pid, signal.SIGKILL)
                raise
    finally:
        if listener is None:
            stub.sync.close()
    if listener is None:
        log.debug("container %s: init %d exec'd", stub.container_id, stub.pid)
        return None
    stub.sync.settimeout(None)
    log.debug("container %s: init %d sent its listener", stub.container_id, stub.pid)
    return listener


def send_go(stub: Stub) -> None:
    """Tell a child waiting for "go" to proceed; StubError when it is gone."""
    _send(stub, "go")


def await_listener(stub: Stub) -> int:
    """Wait for a trapping child's seccomp listener (the caller's), its pty master going to
    stub.console on the way; StubError for a failure it reports, its death, or silence for
    SYNC_TIMEOUT (it is then killed). The caller reaps the child either way."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    try:
        while True:
            step, received = _wait_for(stub, ("console", "listener"), deadline, keep_fds=True)
            if step == "listener":
                break
            fdpass.close_all(received)  # "console" (an exec'd process's): its master is stub.console
    except _SyncTimeout:
        _signal(stub.pid, signal.SIGKILL)
        raise
    if len(received) != 1:
        fdpass.close_all(received)
        raise StubError(f"container process {stub.pid}: 'listener' came with {len(received)} files")
    return received[0]


def read_late(stub: Stub) -> bool:
    """Read one message from a released trapping init's sync socket and log it.

    For a caller that polls stub.sync after release: returns False at EOF (the init exec'd
    or died), when stub.sync should be closed.
    """
    try:
        message, fds = recv_message(stub.sync)
    except BlockingIOError:
        return True  # a non-blocking socket with nothing yet
    except (OSError, ValueError) as e:
        log.warning("container %s: init %d: reading the sync socket: %s", stub.container_id, stub.pid, e)
        return False
    fdpass.close_all(fds)
    if message is None:
        return False
    text = message.get("log", message.get("error", message))
    log.warning("container %s init %d: %s", stub.container_id, stub.pid, text)
    return True


def kill(stub: Stub) -> int | None:
    """SIGKILL the init, reap it and close stub.sync and stub.console: undo a launch.

    Returns the wait status, or None when someone else reaped the child first or it is still
    not dead after REAP_TIMEOUT: that is logged with where the child is stuck, and the caller's
    reaper collects it later (the fork server's loop reaps every child it no longer knows).
    """
    _signal(stub.pid, signal.SIGKILL)
    stub.sync.close()
    if stub.console is not None:
        os.close(stub.console)
        stub.console = None
    deadline = time.monotonic() + REAP_TIMEOUT
    pause = 0.001
    while True:
        try:
            pid, status = os.waitpid(stub.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid:
            return status
        if time.monotonic() >= deadline:
            log.warning(
                "container %s: process %d is not dead %g s after SIGKILL (%s); left to the reaper",
                stub.container_id,
                stub.pid,
                REAP_TIMEOUT,
                _stuck_at(stub.pid),
            )
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _stuck_at(pid: int) -> str:
    """Where process pid sleeps, for the log: its state letter, wait channel and kernel stack."""

    def read(name: str) -> str | None:
        try:
            with open(f"/proc/{pid}/{name}") as f:
                return f.read()
        except OSError:
            return None

    stat, wchan, stack = read("stat"), read("wchan"), read("stack")
    fields = stat.rpartition(")")[2].split() if stat else []
    frames = [line.split()[-1].split("+")[0] for line in (stack or "").splitlines() if line.strip()]
    return f"state {fields[0] if fields else '?'}, wchan {wchan or '?'}, stack {' <- '.join(frames[:8]) or '?'}"


def _describe(status: int | None) -> str:
    if status is None:
        return "not reaped here"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _signal(pid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already reaped by someone else
        os.kill(pid, signo)


def _send(stub: Stub, what: str, extra: dict[str, Any] | None = None, fds: list[int] | None = None) -> None:
    try:
        send_message(stub.sync, {"sync": what, **(extra or {})}, fds)
    except OSError as e:
        raise _ChildGone(f"container init {stub.pid} exited before {what!r}: {e}", e.errno) from e


def _wait_for(
    stub: Stub, steps: tuple[str, ...], deadline: float, keep_fds: bool = False
) -> tuple[str | None, list[int]]:
    """Read sync messages, logging the child's logs, until one of steps or, when steps is
    empty, EOF (None). Returns the step and, with keep_fds, the files that came with it (the
    caller's; else they are closed). A "console" message's pty master goes to stub.console."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _SyncTimeout(f"container init {stub.pid} did not answer within {SYNC_TIMEOUT:g} s")
        stub.sync.settimeout(remaining)
        try:
            message, fds = recv_message(stub.sync)
        except TimeoutError:
            continue
        except (OSError, ValueError) as e:
            raise StubError(f"container init {stub.pid}: reading the sync socket: {e}") from e
        if message is not None and message.get("sync") == "console" and len(fds) == 1 and stub.console is None:
            stub.console = fds[0]
            fds = []
        if keep_fds and message is not None and message.get("sync") in steps and message.keys() == {"sync"}:
            return str(message["sync"]), fds
        fdpass.close_all(fds)
        if message is None:
            if not steps:
                return None, []
            raise _ChildGone(f"container init {stub.pid} exited before it was {steps[-1]}")
        if "log" in message:
            log.info("container %s init: %s", stub.container_id, message["log"])
        elif "error" in message:
            errno = message.get("errno")
            raise StubError(str(message["error"]), errno if isinstance(errno, int) else None)
        elif message.get("sync") in steps:
            return str(message["sync"]), []
        else:
            raise StubError(f"container init {stub.pid}: unexpected sync message {message!r:.80}")


def _own_stdio(stdio: list[int], spec: ContainerSpec) -> None:
    """Give stdio to the container's root, as runc's fixStdioPermissions does, so that the
    program can reopen /proc/self/fd/N; /dev/null and other character devices stay the host's."""
    uid = _host_id(spec.uid_mappings, 0)
    gid = _host_id(spec.gid_mappings, 0)
    if uid is None or gid is None:
        return
    for fd in stdio[:3]:
        try:
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                continue
            os.fchown(fd, uid, gid)
        except OSError as e:
            log.debug("container %s: leaving fd %d's owner alone: %s", spec.bundle, fd, e)


def _host_id(mappings: list[IdMapping], container_id: int) -> int | None:
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return None


def _write_id_maps(pid: int, spec: ContainerSpec) -> None:
    """Write the child's uid_map and gid_map (each in one write, as the kernel requires)."""
    try:
        _write_proc(pid, "uid_map", "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in spec.uid_mappings))
        if os.geteuid() != 0:
            # Only a writer without CAP_SETGID must give up setgroups to write gid_map.
            _write_proc(pid, "setgroups", "deny")
        _write_proc(pid, "gid_map", "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in spec.gid_mappings))
    except OSError as e:
        raise StubError(f"container init: writing the id maps of {pid}: {e}", e.errno) from e


def _write_proc(pid: int, name: str, text: str) -> None:
    fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
