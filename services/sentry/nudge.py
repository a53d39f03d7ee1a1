"""Nudging a task to re-issue the trapped syscall it waits in (python-ptrace).

A notification that a dead sentry had received but not answered is gone with it, and its task
would wait for an answer forever. PTRACE_SEIZE + PTRACE_INTERRUPT + PTRACE_DETACH makes the
task leave the wait and, since no signal is delivered, restart the syscall as if it had never
been made: it traps again and the new sentry gets a fresh notification. The program sees
neither EINTR nor a signal. Only threads that wait in a seccomp notification are touched.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable

from ptrace import PtraceError
from ptrace.binding.func import ptrace, ptrace_detach

log = logging.getLogger(__name__)

PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
#: waitpid() flag for a traced thread that is not our child (linux/wait.h __WALL).
WALL = 0x40000000
#: What /proc/TID/wchan says of a thread waiting for its notification to be answered (the
#: compiler may add a suffix: "seccomp_do_user_notification.isra.0").
NOTIFY_WAIT = "seccomp_do_user_notification"


def waiting_threads(pids: Iterable[int]) -> list[int]:
    """Host tids of the threads of pids that wait in a seccomp notification."""
    tids = []
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                    if f.read().split(".")[0] == NOTIFY_WAIT:
                        tids.append(int(tid))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return tids


def nudge(tid: int) -> bool:
    """Make thread tid re-issue the syscall it is in; False if it is gone."""
    try:
        ptrace(PTRACE_SEIZE, tid, 0, 0)
    except PtraceError as e:
        if e.errno == errno.ESRCH:
            return False
        raise
    try:
        ptrace(PTRACE_INTERRUPT, tid, 0, 0)
        # The interrupt stop (or the thread's exit, which ends the tracing by itself).
        _, status = os.waitpid(tid, WALL)
        if os.WIFSTOPPED(status):
            ptrace_detach(tid)
        return True
    except (PtraceError, ChildProcessError) as e:
        log.debug("nudging %d: %s", tid, e)
        return False


def nudge_waiting(pids: Iterable[int]) -> int:
    """Nudge every thread of pids that waits in a seccomp notification; how many were."""
    return sum(nudge(tid) for tid in waiting_threads(pids))
