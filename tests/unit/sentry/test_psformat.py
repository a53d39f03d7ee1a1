"""How ps shows STIME, C, TIME and TTY (gVisor's proc.go), with fixed clocks."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.sentry.psformat import format_duration, format_start_time, percent_cpu, tty_name

NOW = datetime(2024, 3, 15, 12, 0, 30, tzinfo=UTC)


def at(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("start", "text"),
    [
        (at(2024, 3, 15, 9, 5), "09:05"),  # today
        (at(2024, 3, 15, 0, 0), "00:00"),
        (at(2024, 3, 14, 23, 59), "Mar14"),  # yesterday: this year
        (at(2024, 1, 2, 8, 0), "Jan02"),
        (at(2023, 12, 31, 23, 59), "2023"),  # another year
        (at(2023, 3, 16, 12, 0), "2023"),  # the same day of the year (75), another year
        (at(2024, 3, 15, 12, 1), "12:01"),  # a clock step puts it ahead of now: still today
    ],
)
def test_start_time(start: float, text: str) -> None:
    assert format_start_time(start, NOW.timestamp(), UTC) == text


def test_start_time_is_shown_in_the_given_zone() -> None:
    plus2 = timezone(timedelta(hours=2))
    # 23:30 UTC on the 14th is 01:30 on the 15th two hours east: today there.
    start, now = at(2024, 3, 14, 23, 30), at(2024, 3, 15, 10, 0)
    assert format_start_time(start, now, plus2) == "01:30"
    assert format_start_time(start, now, UTC) == "Mar14"


def test_start_time_defaults_to_the_local_zone() -> None:
    start = NOW.timestamp() - 60
    assert format_start_time(start, NOW.timestamp()) == datetime.fromtimestamp(start).strftime("%H:%M")


@pytest.mark.parametrize(
    ("cpu", "start", "now", "c"),
    [
        (0, 0, 10, 0),
        (5, 0, 10, 50),
        (1, 0, 3, 33),  # rounded down
        (999, 0, 1000, 99),
        (10, 0, 10, 99),  # 100 % is capped
        (40, 0, 10, 99),  # several threads on several CPUs
        (5, 10, 10, 0),  # no lifetime yet
        (5, 10, 5, 0),  # a start after now
        (3, 1_000_000_000, 1_000_000_010, 30),
    ],
)
def test_percent_cpu(cpu: int, start: int, now: int, c: int) -> None:
    assert percent_cpu(cpu, start, now) == c


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1µs"),
        (1_500, "1.5µs"),
        (10_000_000, "10ms"),
        (1_250_000, "1.25ms"),
        (999_999_999, "999.999999ms"),
        (1_000_000_000, "1s"),
        (1_230_000_000, "1.23s"),
        (59_990_000_000, "59.99s"),
        (60_000_000_000, "1m0s"),
        (61_500_000_000, "1m1.5s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (100 * 3_600_000_000_000 + 10_000_000, "100h0m0.01s"),
        (-1_500_000_000, "-1.5s"),
    ],
)
def test_duration_as_go_prints_it(ns: int, text: str) -> None:
    assert format_duration(ns) == text


@pytest.mark.parametrize(
    ("major", "minor", "name"),
    [
        (136, 0, "pts/0"),
        (136, 7, "pts/7"),
        (136, 255, "pts/255"),
        (137, 2, "pts/258"),
        (143, 255, "pts/2047"),
        (136, 300, "pts/300"),  # a minor past 255 (the kernel's own encoding of pts 300)
        (4, 1, "?"),  # tty1, a virtual console
        (5, 1, "?"),  # /dev/console
        (144, 0, "?"),
    ],
)
def test_tty_name(major: int, minor: int, name: str) -> None:
    assert tty_name(os.makedev(major, minor)) == name


def test_no_tty() -> None:
    assert tty_name(0) == "?"
