"""How `ps` shows a process's numbers, as gVisor's control/proc.go does; pure, clocks passed in.

Times are plain numbers so that tests can fix the clock: wall-clock times for STIME in seconds
since the epoch, everything else in nanoseconds.
"""

from __future__ import annotations

import os
from datetime import datetime, tzinfo

#: First and last major of the Unix98 pty replicas (/dev/pts/N), as procps decodes them.
PTS_MAJOR_FIRST = 136
PTS_MAJOR_LAST = 143
#: Replicas per major.
PTS_MINORS = 256
#: What procps caps %CPU at, and gVisor with it.
MAX_PERCENT_CPU = 99

# Month names are spelled out rather than taken from strftime's %b, which follows the locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_NS_PER_US = 1_000
_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000


def format_start_time(start: float, now: float, tz: tzinfo | None = None) -> str:
    """STIME: HH:MM if start is on now's day of the year, MonDD if in now's year, else the year.

    Both are seconds since the epoch, shown in tz (the local zone by default). As gVisor
    compares the day of the year and the year separately, the same day of another year shows
    the year.
    """
    st = datetime.fromtimestamp(start, tz)
    n = datetime.fromtimestamp(now, tz)
    if st.year != n.year:
        return f"{st.year:04d}"
    if st.timetuple().tm_yday != n.timetuple().tm_yday:
        return f"{_MONTHS[st.month - 1]}{st.day:02d}"
    return f"{st.hour:02d}:{st.minute:02d}"


def percent_cpu(cpu_ns: int, start_ns: int, now_ns: int) -> int:
    """C: CPU time (user + system, children excluded as procps does) over the lifetime, percent.

    start_ns and now_ns are on one clock, any clock. 0 for a lifetime that is not positive
    (a process started this very tick); capped at 99.
    """
    lifetime = now_ns - start_ns
    if lifetime <= 0:
        return 0
    return min(cpu_ns * 100 // lifetime, MAX_PERCENT_CPU)


def format_duration(ns: int) -> str:
    """A duration as Go's time.Duration.String prints it: "0s", "1.5ms", "2.01s", "1h2m3s"."""
    if ns < 0:
        return "-" + format_duration(-ns)
    if ns == 0:
        return "0s"
    if ns < _NS_PER_US:
        return f"{ns}ns"
    if ns < _NS_PER_MS:
        return _decimal(ns, _NS_PER_US) + "µs"
    if ns < _NS_PER_S:
        return _decimal(ns, _NS_PER_MS) + "ms"
    seconds = _decimal(ns % (60 * _NS_PER_S), _NS_PER_S) + "s"
    minutes, hours = ns // (60 * _NS_PER_S) % 60, ns // (3600 * _NS_PER_S)
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _decimal(value: int, unit: int) -> str:
    """value / unit with as many decimals as needed and no trailing zeros (Go's fmtFrac)."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def tty_name(tty_nr: int) -> str:
    """TTY: "pts/N" for a pty replica (majors 136 to 143), "?" for anything else or none.

    tty_nr is the device number of /proc/PID/stat's field 7, in the kernel's user-space encoding.
    """
    if tty_nr == 0:
        return "?"
    major, minor = os.major(tty_nr), os.minor(tty_nr)
    if not PTS_MAJOR_FIRST <= major <= PTS_MAJOR_LAST:
        return "?"
    return f"pts/{(major - PTS_MAJOR_FIRST) * PTS_MINORS + minor}"
