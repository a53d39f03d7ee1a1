"""OCI runtime hooks: the state document a hook reads, and running hooks phase by phase.

This module owns what runc's libcontainer/configs Hooks.Run and Command.Run do: each hook runs
from its absolute host path with exactly its own argv and environment, reads the state JSON on
stdin, and has its output kept for the error message. Its callers, the fork server and the
stub, are single-threaded, may have SIGCHLD handlers, or be pid 1 of a new pid namespace.

A hook's stdin, stdout and stderr are memfds, not pipes: nothing has to be written or drained
while it runs, and a daemon the hook leaves behind holding its output open cannot stall us.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from contextlib import suppress

from common.errors import ErrCode, ZerovisorError
from common.messages.spec import Hook

#: How much of the end of a failed hook's stdout and stderr goes into its HookError.
OUTPUT_TAIL = 1024
#: Longest pause between two looks at a hook that has a timeout.
_MAX_POLL = 0.05


class HookError(ZerovisorError):
    """A hook could not start, failed, was killed by a signal or ran past its timeout."""

    code = ErrCode.OS_ERROR


def oci_state(*, oci_version: str, cid: str, status: str, pid: int, bundle: str, annotations: dict[str, str]) -> bytes:
    """The OCI state JSON a hook reads on stdin; pid is left out when 0, as runc does once stopped."""
    state: dict[str, object] = {"ociVersion": oci_version, "id": cid, "status": status}
    if pid:
        state["pid"] = pid
    state["bundle"] = bundle
    state["annotations"] = annotations
    return json.dumps(state, separators=(",", ":")).encode()


def run_hook(phase: str, hook: Hook, state: bytes) -> None:
    """Run one hook with state on its stdin; return when it exited 0, else raise HookError.

    The hook gets argv hook.args (or [hook.path]), exactly hook.env, fds 0-2 only and its own
    session, so that a timeout (hook.timeout seconds; none means wait forever, as runc does)
    kills its whole process group with SIGKILL.
    """
    where = f"{phase} hook {hook.path}"
    fds: list[int] = []
    try:
        for name in ("stdin", "stdout", "stderr"):
            fds.append(os.memfd_create(f"hook-{name}"))
        stdin, stdout, stderr = fds
        with open(stdin, "wb", closefd=False) as f:  # writes it all, unlike one os.write
            f.write(state)
        os.lseek(stdin, 0, os.SEEK_SET)
        env: dict[str, str] = {}
        for entry in hook.env:
            key, _, value = entry.partition("=")
            env[key] = value
        try:
            proc = subprocess.Popen(
                hook.args or [hook.path],
                executable=hook.path,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_default_signals,  # noqa: PLW1509 (our callers are single-threaded)
            )
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            raise HookError(f"{where}: could not start: {getattr(e, 'strerror', None) or e}") from e
        # We reap by pid ourselves, as Popen.wait takes a child someone else reaped for a success;
        # a returncode keeps Popen from ever waiting on the pid, which may be reused by then.
        proc.returncode = 0
        status = _wait(proc.pid, hook.timeout, where)
        if status is None:
            why = f"timed out after {hook.timeout} s"
        elif os.WIFSIGNALED(status):
            why = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        elif os.WEXITSTATUS(status):
            why = f"exit status {os.WEXITSTATUS(status)}"
        else:
            return
        raise HookError(where + ": " + why + _tail("stdout", stdout) + _tail("stderr", stderr))
    finally:
        for fd in fds:
            os.close(fd)


def run_hooks(phase: str, hooks: list[Hook], state: bytes) -> None:
    """Run hooks in order; the first failure stops the rest and is raised as HookError."""
    for hook in hooks:
        run_hook(phase, hook, state)


def run_hooks_warn(phase: str, hooks: list[Hook], state: bytes, log: logging.Logger) -> None:
    """Run every hook (poststart, poststop); a failure is logged as a warning, never raised."""
    for hook in hooks:
        try:
            run_hook(phase, hook, state)
        except HookError as e:
            log.warning("%s", e)


def _default_signals() -> None:
    # Runs in the hook's child before exec. exec resets handled signals but keeps ignored ones
    # (the fork server ignores SIGTERM) and the signal mask; a hook expects neither.
    for signo in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        with suppress(OSError, ValueError):  # real-time signals the C library keeps for itself
            signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _wait(pid: int, timeout: int | None, where: str) -> int | None:
    """The wait status of pid, or None if it outlived timeout and was killed with its group."""
    try:
        if timeout is None:
            return os.waitpid(pid, 0)[1]
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL)
        # The unreaped leader keeps its pid, hence the group id, from being reused; the leader
        # itself is killed by pid too in case it left its group.
        for kill, target in ((os.killpg, pid), (os.kill, pid)):
            with suppress(ProcessLookupError):
                kill(target, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    except ChildProcessError:
        raise HookError(f"{where}: reaped by another waiter, its exit status is lost") from None


def _tail(name: str, fd: int) -> str:
    """The last OUTPUT_TAIL bytes written to fd, as ", name: text", or "" if it is empty."""
    size = os.fstat(fd).st_size
    os.lseek(fd, max(0, size - OUTPUT_TAIL), os.SEEK_SET)
    text = os.read(fd, OUTPUT_TAIL).decode(errors="replace").strip()
    if not text:
        return ""
    return f", {name}: {'...' if size > OUTPUT_TAIL else ''}{text}"
