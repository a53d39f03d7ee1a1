"""A busybox shell workload: `cat /etc/passwd > /dev/null` many times (fork, exec and read-only
opens: the calls zerovisor lets run natively), then a tree of small files built and removed
(creating opens, mkdir and unlink: the calls the sentry and gofer serve). Timed as one whole
command, natively in a chroot of the same rootfs, under runc and under zerovisor.

The chroot is the floor: the same binaries and files with no sandbox at all. runc shows what
namespaces and cgroups alone cost, so the gap between runc and zerovisor is zerovisor's own.
The variants run in turn, round by round, since creating a file on this machine's disk costs
from 0.2 to 0.8 ms depending on the minute.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bench.cases._containers import case_bundle, fresh_id, runc, zerovisor
from bench.harness import Bench, Result, command, timed

CASE = "busybox shell workload"
NATIVE = "native chroot"


def script(cats: int, files: int) -> str:
    """The workload as one busybox sh script. `set -e` makes a failed step fail the command (else
    the exit status would be the last command's only) and so the case, instead of timing less work."""
    return (
        f"set -e; for i in $(seq {cats}); do cat /etc/passwd > /dev/null; done; "
        f"mkdir /tmp/t; for i in $(seq {files}); do echo $i > /tmp/t/$i; done; rm -r /tmp/t"
    )


def measure(bench: Bench) -> list[Result]:
    """The workload natively (when root), under runc (when installed) and under zerovisor."""
    cats, files = bench.loops(300, 10), bench.loops(1000, 20)
    argv = ["/bin/sh", "-c", script(cats, files)]
    # One bundle per variant: each writes its tree into its own rootfs's /tmp, so a run that
    # failed halfway cannot leave a /tmp/t behind that fails another variant's mkdir.
    measures: dict[str, Callable[[], float]] = {}
    if os.geteuid() == 0:
        rootfs = case_bundle(bench, "workload", "native", argv) / "rootfs"
        measures[NATIVE] = lambda: timed(lambda: _chroot(rootfs, argv))
    else:
        bench.notes.append(f"{CASE}: not root, so no chroot: the native baseline is skipped")
    rc = runc(bench)
    if rc is not None:
        runc_bundle = case_bundle(bench, "workload", "runc", argv)
        measures["runc"] = lambda: timed(lambda: rc("run", "--bundle", str(runc_bundle), fresh_id("work")))
    zv_bundle = case_bundle(bench, "workload", "zerovisor", argv)
    with zerovisor(bench, "workload") as zv:
        measures["zerovisor"] = lambda: timed(lambda: zv("run", "-b", str(zv_bundle), fresh_id("work")))
        # In turn: this machine's file creation cost drifts by 2-3x over a minute, and a case
        # that ran its variants one after the other would compare different machines.
        samples = bench.repeat_in_turn(measures)

    results: list[Result] = []
    baselines: list[str] = []
    for variant in (NATIVE, "runc"):
        if variant in samples:
            results.append(Result(CASE, variant, "ms", samples[variant], tuple(baselines)))
            baselines.append(variant)
    note = f"every variant: {cats} cats, {files} files, run in turn"
    results.append(Result(CASE, "zerovisor", "ms", samples["zerovisor"], tuple(baselines), "<= 1.2x native", note))
    return results


def _chroot(rootfs: Path, argv: list[str]) -> None:
    """argv in a chroot of rootfs, no namespaces: the workload with no sandbox."""
    command(["chroot", str(rootfs), *argv], rootfs.with_name("chroot.log"))
