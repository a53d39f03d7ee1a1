"""Deferred results: a method answers later, on the connection the request came from; without a
way to answer later (ZMQ) such a method is refused; a late failure becomes an error reply."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from common import wire
from common.errors import ConflictError, ErrCode
from common.rpc import Deferred, Dispatcher, Registry


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitArgs:
    """Arguments of Later.Wait."""

    #: Which waiter.
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitResult:
    """Result of Later.Wait."""

    #: What it was settled with.
    value: int


class Later:
    domain = "Later"

    def __init__(self) -> None:
        self.pending: dict[str, Deferred[WaitResult]] = {}

    def wait(self, args: WaitArgs) -> Deferred[WaitResult]:
        answer: Deferred[WaitResult] = Deferred()
        if args.key == "now":
            answer.resolve(WaitResult(value=0))
        else:
            self.pending[args.key] = answer
        return answer


@pytest.fixture
def later() -> tuple[Later, Dispatcher]:
    obj = Later()
    registry = Registry()
    registry.register(obj)
    return obj, Dispatcher(registry)


def request(key: str) -> bytes:
    return wire.encode_request("r1", "Later.Wait", {"key": key})


def test_answers_when_settled(later: tuple[Later, Dispatcher]) -> None:
    obj, dispatcher = later
    sent: list[bytes] = []
    assert dispatcher.handle_or_defer(request("k"), [], lambda frame, fds: sent.append(frame)) is None
    assert sent == []
    obj.pending["k"].resolve(WaitResult(value=7))
    obj.pending["k"].resolve(WaitResult(value=8))  # only the first answer counts
    assert len(sent) == 1
    reply = wire.reply_from_envelope(wire.load_envelope(sent[0]))
    assert reply.ok and reply.id == "r1" and reply.result == {"value": 7}


def test_settled_at_once_answers_through_later(later: tuple[Later, Dispatcher]) -> None:
    _, dispatcher = later
    sent: list[bytes] = []
    assert dispatcher.handle_or_defer(request("now"), [], lambda frame, fds: sent.append(frame)) is None
    assert wire.reply_from_envelope(wire.load_envelope(sent[0])).result == {"value": 0}


def test_a_late_failure_is_an_error_reply(later: tuple[Later, Dispatcher]) -> None:
    obj, dispatcher = later
    sent: list[bytes] = []
    dispatcher.handle_or_defer(request("k"), [], lambda frame, fds: sent.append(frame))
    obj.pending["k"].fail(ConflictError("gone"))
    reply = wire.reply_from_envelope(wire.load_envelope(sent[0]))
    assert not reply.ok and reply.error is not None and reply.error["code"] == ErrCode.CONFLICT


def test_refused_where_it_cannot_answer_later(later: tuple[Later, Dispatcher]) -> None:
    _, dispatcher = later
    frame, _ = dispatcher.handle(request("k"))
    reply = wire.reply_from_envelope(wire.load_envelope(frame))
    assert not reply.ok and reply.error is not None
    assert "answers only on the fd channel" in reply.error["message"]
