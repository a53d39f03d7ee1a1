"""The CLI's retries while a service restarts: the budget is how long the services have been
away, so a wait answered hours later that a restart breaks is asked again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from common.errors import InvalidArgument, ServiceUnavailable
from common.messages.containers import IdArgs
from services.controller.commands import base
from services.controller.commands.base import RETRY_TIMEOUT, CliContext, controller_call_with_fds

OBJ = CliContext(root="/r", run_dir="/r", log_format="text", debug=False)


class Clock:
    """time.monotonic and time.sleep of the module under test, advanced by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Controller:
    """A client whose calls run the next of attempts: each takes the clock and returns or raises."""

    def __init__(self, attempts: list[Callable[[], Any]]) -> None:
        self.attempts = attempts
        self.calls = 0

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def call(self, *_args: object) -> tuple[Any, list[int]]:
        self.calls += 1
        return self.attempts.pop(0)(), []


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(base, "time", clock)
    return clock


def use(monkeypatch: pytest.MonkeyPatch, controller: Controller) -> None:
    monkeypatch.setattr(base, "controller_client", lambda _obj: controller)


def test_a_long_wait_broken_by_a_restart_is_asked_again(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    def waited_hours_then_lost() -> None:
        clock.now += 3 * 3600
        raise ServiceUnavailable("connection closed")

    def down_a_while() -> None:
        clock.now += 5
        raise ServiceUnavailable("connection refused")

    controller = Controller([waited_hours_then_lost, down_a_while, lambda: "stopped"])
    use(monkeypatch, controller)
    result, _ = controller_call_with_fds(OBJ, "Containers.Wait", IdArgs(id="c"), wait_forever=True)
    assert result == "stopped"
    assert controller.calls == 3


def test_services_away_longer_than_the_budget_fail_the_call(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    def refused() -> None:
        clock.now += 1
        raise ServiceUnavailable("connection refused")

    controller = Controller([refused] * 1000)
    use(monkeypatch, controller)
    start = clock.now
    with pytest.raises(ServiceUnavailable):
        controller_call_with_fds(OBJ, "Containers.State", IdArgs(id="c"))
    assert RETRY_TIMEOUT < clock.now - start < RETRY_TIMEOUT + 2


def test_a_refusal_is_not_retried(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    def refusal() -> None:
        raise InvalidArgument("no")

    controller = Controller([refusal, lambda: "never"])
    use(monkeypatch, controller)
    with pytest.raises(InvalidArgument):
        controller_call_with_fds(OBJ, "Containers.Wait", IdArgs(id="c"), wait_forever=True)
    assert controller.calls == 1
