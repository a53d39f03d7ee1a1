"""The table behind Containers.Wait and Proc.WaitPid: answers settled by events, by the periodic
poll when an event was lost, failed when the sentry refuses or the container goes."""

from __future__ import annotations

import pytest

from common.errors import ErrCode, NotFound, ServiceUnavailable, ZerovisorError
from common.rpc import Deferred
from services.controller import waiters as waiters_module
from services.controller.waiters import Waiters


class Sentry:
    """What the check asks: a status per key (None: not yet), or an error to raise."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}
        self.error: ZerovisorError | None = None
        self.asked = 0

    def check(self, key: str) -> int | None:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return self.done.get(key)


def outcome(answer: Deferred[int]) -> tuple[int | None, Exception | None] | None:
    got: list[tuple[int | None, Exception | None]] = []
    answer._on_settled(lambda result, exc: got.append((result, exc)))
    return got[0] if got else None


def test_what_has_happened_is_answered_at_once() -> None:
    sentry = Sentry()
    sentry.done["a"] = 3
    assert outcome(Waiters(sentry.check).wait("a")) == (3, None)


def test_a_waiter_is_answered_when_the_event_comes() -> None:
    sentry = Sentry()
    table = Waiters(sentry.check)
    first, second = table.wait("a"), table.wait("a")
    table.happened("b")  # nobody waits for b: the sentry is not asked
    assert sentry.asked == 2
    assert outcome(first) is None
    sentry.done["a"] = 5
    table.happened("a")
    assert outcome(first) == (5, None)
    assert outcome(second) == (5, None)


def test_the_poll_answers_when_an_event_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiters_module, "POLL_INTERVAL", 0.0)
    sentry = Sentry()
    table = Waiters(sentry.check)
    answer = table.wait("a")
    sentry.error = ServiceUnavailable("sentry is down")
    table.poll()  # a sentry that is down is asked again later; the waiter waits on
    assert outcome(answer) is None
    sentry.error = None
    sentry.done["a"] = 0
    table.poll()
    assert outcome(answer) == (0, None)


def test_a_refusal_fails_the_waiters_and_a_first_question_fails_the_caller() -> None:
    sentry = Sentry()
    table = Waiters(sentry.check)
    answer = table.wait("a")
    sentry.error = NotFound("no container a")
    table.happened("a")
    result = outcome(answer)
    assert result is not None and isinstance(result[1], NotFound)
    with pytest.raises(NotFound):
        table.wait("a")  # the caller's error at once, nothing left waiting


def test_cancel_fails_only_the_keys_it_names() -> None:
    sentry = Sentry()
    table = Waiters(sentry.check)
    gone, kept = table.wait("gone"), table.wait("kept")
    table.cancel(lambda key: key == "gone", "container 'gone' was deleted while waited on")
    result = outcome(gone)
    assert result is not None and isinstance(result[1], ZerovisorError)
    assert result[1].code == ErrCode.NOT_FOUND
    assert "container 'gone' was deleted while waited on" in str(result[1])
    assert outcome(kept) is None
