"""open + close: a file opened for write (trapped, opened in a gofer mount) and a read-only one (native).

zerovisor's filter (services/platform/filters.py) traps open and openat only when their flags
ask for write, create or truncate: the sentry then resolves the path, opens the file under the
task's credentials inside the mount clone the gofer donated (directfs; without it the gofer
does, one round trip more), and installs the fd into the task (ADDFD, which hands over to the
task and back: unpinned, two cross-CPU wake-ups that SYNC_WAKE_UP does not spare). A read-only
open is not trapped at all, and should cost what it costs natively; measuring it keeps the
filter honest (a rule that trapped it by mistake would show here at once).

The same self-timing loop (bench/c/open_loop.c) runs natively on a host file and in a zerovisor
container on a file of its rootfs (a mount the gofer opened), in both placements (_percall): on one
CPU the program, the sentry and the gofer share it; unpinned every hop may wake another CPU.
"""

from __future__ import annotations

import functools

from bench.cases._percall import Sandbox, placements, run_host
from bench.harness import Bench, Result

#: Case name -> (open_loop's mode, target), as in the issue's table.
CASES: dict[str, tuple[str, str]] = {
    "open for write + close": ("write", "<= 60 us per pair now, <= 20 us later"),
    "read-only open + close": ("read", "<= 1.2x native"),
}
#: The file every open names inside the container. At the rootfs's top, not in /tmp or /dev,
#: because those may be mounts of the container's own that the gofer does not serve.
CONTAINER_FILE = "open_loop.dat"


def measure(bench: Bench) -> list[Result]:
    """native, then zerovisor in both placements, for each of the two cases."""
    loop = bench.cbin("open_loop")
    one_cpu, _ = places = placements()
    # A native pair costs a few microseconds; a trapped pair tens to a hundred, while a
    # read-only one in the container costs what a native one does.
    native_n = bench.loops(200_000, 1_000)
    zv_n = {"write": bench.loops(2_000, 100), "read": bench.loops(200_000, 1_000)}
    host_file = bench.work / "files-native" / CONTAINER_FILE
    host_file.parent.mkdir(parents=True, exist_ok=True)
    host_file.write_text("zerovisor bench\n")

    rows: dict[str, list[Result]] = {}
    for case, (mode, _) in CASES.items():
        # A lone process pays no wake-up: one placement is enough, pinned for steadier numbers.
        argv = [str(loop), mode, str(host_file), str(native_n), one_cpu.arg]
        samples = bench.repeat(functools.partial(run_host, argv))
        rows[case] = [Result(case, "native", "us", samples, note=f"{native_n} pairs per run, on CPU {one_cpu.cpu}")]

    # The sentry serves the write path (the gofer too, without directfs): for one CPU both are pinned with the program.
    with Sandbox(bench, "files", [loop], ["sentry", "gofer"]) as sandbox:
        (sandbox.rootfs / CONTAINER_FILE).write_text("zerovisor bench\n")
        for case, (mode, target) in CASES.items():
            for p in places:
                argv = [f"/{loop.name}", mode, f"/{CONTAINER_FILE}", str(zv_n[mode]), p.arg]
                samples = bench.repeat(functools.partial(sandbox.run, argv, p))
                pinned = "; sentry and gofer pinned with it" if p.cpu >= 0 else ""
                rows[case].append(
                    Result(
                        case,
                        p.variant("zerovisor"),
                        "us",
                        samples,
                        baselines=("native",),
                        target=target,
                        note=f"{zv_n[mode]} pairs per run{pinned}",
                    )
                )
    return [result for case_rows in rows.values() for result in case_rows]
