"""A notification whose receiver forgot it (a sentry that died) is recovered by a nudge: the task
re-issues the syscall, a fresh notification comes, and the program sees only the answer to it.
"""

from __future__ import annotations

import time

from services.sentry.nudge import nudge_waiting, waiting_threads
from tests.unit.sentry.notify_child import started
from tests.unit.sentry.test_seccomp import NR_GETPPID, serve_one


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
