"""Answers that wait on the sentry: Containers.Wait (a container's stop) and Proc.WaitPid (an
exec'd process's exit) return a Deferred that this table settles.

The sentry's events settle them at once; a periodic poll asks the sentry itself, so that an
event lost to a restart (the sentry's or ours) never leaves a caller waiting for ever.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from common.errors import NotFound, ServiceUnavailable, ZerovisorError
from common.rpc import Deferred

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: How often waiters ask the sentry themselves, in case an event was lost, seconds.
POLL_INTERVAL = 1.0


class Waiters(Generic[K, T]):
    """The Deferred answers still waiting, by what they wait for (a key).

    check(key) asks the sentry: the answer once the awaited thing has happened, else None. It
    raises ServiceUnavailable while the sentry is down (the waiters go on waiting) and any other
    ZerovisorError when the sentry refuses (the waiters get that error).
    """

    def __init__(self, check: Callable[[K], T | None]) -> None:
        self._check = check
        self._waiting: dict[K, list[Deferred[T]]] = {}
        self._polled = 0.0

    def wait(self, key: K) -> Deferred[T]:
        """An answer for key: settled now if the sentry says it has happened, else when it does.

        The sentry's refusal, or its absence, is the caller's error at once. An event is handled
        after this call returns, never during it: it cannot slip between question and registration.
        """
        answer: Deferred[T] = Deferred()
        result = self._check(key)
        if result is not None:
            answer.resolve(result)
        else:
            self._waiting.setdefault(key, []).append(answer)
        return answer

    def happened(self, key: K) -> None:
        """An event says key may have happened: answer whoever waits for it (a sentry that is
        down now is asked again by poll)."""
        if key in self._waiting:
            with contextlib.suppress(ServiceUnavailable):
                self._settle(key)

    def poll(self) -> None:
        """Ask the sentry about every key still waited for, at most once per POLL_INTERVAL."""
        now = time.monotonic()
        if not self._waiting or now - self._polled < POLL_INTERVAL:
            return
        self._polled = now
        with contextlib.suppress(ServiceUnavailable):  # the sentry is down: next time
            for key in list(self._waiting):
                self._settle(key)

    def cancel(self, which: Callable[[K], bool], why: str) -> None:
        """Fail every waiter whose key is one of which: what they wait for will never be reported."""
        for key in [key for key in self._waiting if which(key)]:
            for answer in self._waiting.pop(key):
                answer.fail(NotFound(why))

    def _settle(self, key: K) -> None:
        try:
            result = self._check(key)
        except ServiceUnavailable:
            raise
        except ZerovisorError as e:
            for answer in self._waiting.pop(key, []):
                answer.fail(e)
            return
        if result is not None:
            for answer in self._waiting.pop(key, []):
                answer.resolve(result)
