"""A notification whose receiver forgot it (a sentry that died) is recovered by a nudge: the task
re-issues the syscall, a fresh notification comes, and the program sees only the answer to it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.sentry.nudge import nudge_waiting, waiting_threads
from services.sentry.seccomp import Listener, Notification
from tests.unit.sentry.notify_child import started
from tests.unit.sentry.test_seccomp import NR_GETPPID, NR_OPENAT, open_creat_child, serve_one, wrote_through


def wait_for_waiting(pid: int, timeout: float = 10.0) -> list[int]:
    """The threads of pid in a notification wait, once there is one."""
    deadline = time.monotonic() + timeout
    while not (tids := waiting_threads([pid])) and time.monotonic() < deadline:
        time.sleep(0.01)
    return tids


def test_a_lost_notification_is_issued_again_and_the_program_sees_only_the_answer() -> None:
    child, listener = started("getppid", "2")
    with listener:
        try:
            lost = serve_one(child, listener, NR_GETPPID)  # taken, never answered: the dead sentry's
            assert wait_for_waiting(child.pid) == [child.pid]
            assert nudge_waiting([child.pid]) == 1
            assert not listener.id_valid(lost.id)  # the interrupted call is gone ...
            again = serve_one(child, listener, NR_GETPPID)  # ... and made again
            assert again.id != lost.id
            assert listener.respond(again.id, val=4242)
            assert child.line() == {"ret": 4242, "errno": 0}  # no EINTR, no signal: only our answer
            second = serve_one(child, listener, NR_GETPPID)
            assert listener.respond(second.id, val=7)
            assert child.line() == {"ret": 7, "errno": 0}
            assert child.proc.wait(timeout=10) == 0
        finally:
            child.close()


def test_only_threads_in_a_notification_wait_are_nudged() -> None:
    child, listener = started("getppid", "1")
    with listener:
        try:
            assert wait_for_waiting(child.pid) == [child.pid]
            notif = serve_one(child, listener, NR_GETPPID)
            assert listener.respond(notif.id, val=1)
            assert child.line() == {"ret": 1, "errno": 0}
            child.proc.wait(timeout=10)
            assert nudge_waiting([child.pid]) == 0  # gone: nothing to nudge, no error
        finally:
            child.close()


#: How long the hog keeps the task off its CPU, seconds: it must outlast the kill.
HOG_SECONDS = 0.3
#: /proc/PID/wchan of a process blocked in a seccomp listener ioctl (ADDFD is inlined there).
IN_IOCTL = "seccomp_notify"
_HOG = """
import os, sys, time
os.sched_setaffinity(0, [{cpu}])
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
print("spinning", flush=True)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
"""


def _kill_inside_install(listener: Listener, notif: Notification, task_pid: int, fd: int, send: bool) -> None:
    """Install fd for notif in a child (one ADDFD with SEND, or Listener.install_fd) and SIGKILL
    it while the ioctl waits for the task to take the fd, the task kept off its CPU meanwhile
    by a real-time hog."""
    task_cpu, supervisor_cpu = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(task_pid, {task_cpu})
    hog = subprocess.Popen(
        [sys.executable, "-c", _HOG.format(cpu=task_cpu, seconds=HOG_SECONDS)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert hog.stdout is not None and hog.stdout.readline() == "spinning\n"
        pid = os.fork()
        if pid == 0:  # the supervisor: it never returns
            try:
                os.sched_setaffinity(0, {supervisor_cpu})
                if send:
                    listener.add_fd(notif.id, fd, send=True)
                else:
                    listener.install_fd(notif.id, fd)
            finally:
                os._exit(0)
        deadline = time.monotonic() + HOG_SECONDS / 2
        while not (wchan := Path(f"/proc/{pid}/wchan").read_text()).startswith(IN_IOCTL):
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert wchan.startswith(IN_IOCTL), f"the supervisor never blocked in the ioctl (wchan {wchan!r})"
    finally:
        hog.wait(timeout=10)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs: one for the task, one to serve it")
@pytest.mark.parametrize("send", [True, False], ids=["add_fd-with-send", "install_fd"])
def test_a_supervisor_killed_while_installing_an_fd(tmp_path: Path, send: bool) -> None:
    """Why install_fd answers apart from the ADDFD: killed inside ADDFD with SEND the call
    returns 0 with no fd (a kernel fact this test pins), killed inside install_fd the task waits
    on, and a nudge makes it open again and get its fd."""
    with open_creat_child(tmp_path) as (child, listener, r, w):
        notif = serve_one(child, listener, NR_OPENAT)
        _kill_inside_install(listener, notif, child.pid, w, send)
        if send:
            # "Opened" as fd 0, the program's stdin (read-only here, so its write fails).
            assert child.line() == {"fd": 0, "write_errno": errno.EBADF}
            return
        assert listener.id_valid(notif.id)  # still waiting, as after any lost notification
        assert nudge_waiting([child.pid]) == 1
        again = serve_one(child, listener, NR_OPENAT)
        wrote_through(child, r, listener.install_fd(again.id, w))
