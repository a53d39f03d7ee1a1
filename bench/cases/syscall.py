"""trapped uname: what one system call answered by the sentry costs, against its floor.

uname is in zerovisor's trapped set (services/platform/filters.py): the kernel stops the caller
and wakes the sentry, which writes the container's struct utsname into the task through
/proc/PID/mem and answers. The same self-timing loop (bench/c/uname_loop.c) runs

- natively: what the call costs with nobody in the way;
- under bench/c/notify_floor.c, a minimal C supervisor doing the sentry's work for uname through
  the same mechanism (seccomp user notification): the floor of that mechanism on this machine,
  which the sentry's own overhead is judged against;
- under proot, which traps with ptrace: the tool a user would otherwise reach for;
- in a zerovisor container.

Each variant with a second process runs in both placements (_percall): on one CPU a trapped
call pays the two context switches; unpinned it mostly pays the wake-up of the other CPU.
"""

from __future__ import annotations

import functools
import shutil

from bench.cases._percall import Placement, Sandbox, placements, run_host
from bench.harness import Bench, Result
from services.sentry.kernel import DEFAULT_KERNEL_RELEASE

CASE = "trapped uname"
TARGET = "<= 2x C floor now, <= 1.2x later; faster than proot"
#: The uname loop's path inside the container's rootfs (and proot's root).
LOOP = "/uname_loop"


def measure(bench: Bench) -> list[Result]:
    """native, C floor, proot (when installed) and zerovisor, each variant with a supervisor in both placements."""
    loop = bench.cbin("uname_loop")
    floor = bench.cbin("notify_floor")
    one_cpu, _ = places = placements()
    # Loop counts give each run about a tenth of a second to a second (more when unpinned).
    native_n = bench.loops(1_000_000, 1_000)
    floor_n = bench.loops(20_000, 200)
    proot_n = bench.loops(10_000, 100)
    zv_n = bench.loops(10_000, 100)

    def note(n: int) -> str:
        return f"{n} calls per run, timed by the program itself"

    # A lone process pays no wake-up: one placement is enough, pinned for steadier numbers.
    native = Result(
        CASE,
        "native",
        "us",
        bench.repeat(functools.partial(run_host, [loop, str(native_n), one_cpu.arg])),
        note=f"{note(native_n)}, on CPU {one_cpu.cpu}",
    )
    floors = {
        p: Result(
            CASE,
            p.variant("C floor"),
            "us",
            bench.repeat(functools.partial(run_host, [floor, p.arg, loop, str(floor_n), p.arg])),
            baselines=("native",),
            note=note(floor_n),
        )
        for p in places
    }
    proots = _proot(bench, places, proot_n, note(proot_n))
    with Sandbox(bench, "syscall", [loop], ["sentry"]) as sandbox:
        zerovisors = {
            p: Result(
                CASE,
                p.variant("zerovisor"),
                "us",
                bench.repeat(functools.partial(sandbox.run, [LOOP, str(zv_n), p.arg], p, DEFAULT_KERNEL_RELEASE)),
                baselines=(p.variant("C floor"), "native", p.variant("proot")),
                target=TARGET,
                note=f"{note(zv_n)}; sentry pinned with it" if p.cpu >= 0 else note(zv_n),
            )
            for p in places
        }
    # The report reads placement by placement, floor first, the row with the target last.
    results = [native]
    for p in places:
        results.append(floors[p])
        if p in proots:
            results.append(proots[p])
        results.append(zerovisors[p])
    return results


def _proot(bench: Bench, places: tuple[Placement, ...], n: int, note: str) -> dict[Placement, Result]:
    """proot's variants, by placement; none when proot is not installed (bench.tool notes it)."""
    proot = bench.tool("proot")
    if proot is None:
        return {}
    # proot -r on a rootfs holding only the static loop: nothing else of the host is involved.
    root = bench.work / "syscall-proot"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(bench.cbin("uname_loop"), root / LOOP.lstrip("/"))
    return {
        p: Result(
            CASE,
            p.variant("proot"),
            "us",
            # The tracer and the program share p's CPU from their start (run_host pins both).
            bench.repeat(functools.partial(run_host, [proot, "-r", root, "-w", "/", LOOP, str(n), p.arg], p.cpu)),
            baselines=(p.variant("C floor"), "native"),
            note=note,
        )
        for p in places
    }
