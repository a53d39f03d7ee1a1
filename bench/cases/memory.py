"""Resident memory (VmRSS) of the four services right after `up`, and with containers running:
what zerovisor costs a host before it runs anything, and how that grows per container.

The fork server is reported apart: it is the platform's child, not one of the four services,
and each container's init is a process of its own, forked from it, that is not counted here.
So is the CLI's command server with its spare worker (the commands of the run started it),
as PSS: the spare is a fork whose pages are mostly the server's.
Every measured run starts the services afresh, because "idle" means just after `up` (a
service's heap does not shrink back after its containers are deleted); memory needs no warm-up.
"""

from __future__ import annotations

import statistics

from bench.cases._containers import SLEEPER, case_bundle, fresh_id, zerovisor, zv_delete, zv_running, zv_start_detached
from bench.harness import Bench, BenchError, Result
from bench.zerovisor import Zerovisor, command_server_pids, pss_mb, rss_mb

CASE = "resident memory"
SERVICES = ("controller", "sentry", "gofer", "platform")


def measure(bench: Bench) -> list[Result]:
    """Per run: fresh services, their memory idle, then with N sleepers running; N=10 (2 quick)."""
    n = bench.loops(10, 2)
    sleeper = case_bundle(bench, "memory", "sleeper", SLEEPER)
    idle: list[dict[str, float]] = []
    loaded: list[dict[str, float]] = []
    cli_server: list[float] = []
    for run in range(1 if bench.quick else bench.runs):
        with zerovisor(bench, f"memory-{run}") as zv:
            idle.append(_sample(zv))
            ids = [fresh_id("mem") for _ in range(n)]
            zv_start_detached(zv, sleeper, ids)
            # `run -d` returns once its container runs; checked so that a container that died
            # at once cannot make the loaded number look small.
            if missing := set(ids) - zv_running(zv):
                raise BenchError(f"containers not running after `run -d`: {sorted(missing)}")
            loaded.append(_sample(zv))
            cli_server.append(sum(pss_mb(pid) for pid in command_server_pids()))
            zv_delete(zv, ids)
    idle_name, loaded_name = "4 services, idle", f"4 services, {n} containers"
    return [
        Result(CASE, idle_name, "MB", _totals(idle), target="<= 120 MB idle", note=_breakdown(idle)),
        Result(CASE, "fork server, idle", "MB", [s["forkserver"] for s in idle]),
        Result(CASE, loaded_name, "MB", _totals(loaded), (idle_name,), note=_breakdown(loaded)),
        Result(CASE, f"fork server, {n} containers", "MB", [s["forkserver"] for s in loaded], ("fork server, idle",)),
        Result(CASE, "command server + spare (PSS)", "MB", cli_server),
    ]


def _sample(zv: Zerovisor) -> dict[str, float]:
    """VmRSS in MB of each service and of the fork server, now."""
    return {name: rss_mb(zv.pid(name)) for name in (*SERVICES, "forkserver")}


def _totals(samples: list[dict[str, float]]) -> list[float]:
    """The four services' sum, per run."""
    return [sum(s[name] for name in SERVICES) for s in samples]


def _breakdown(samples: list[dict[str, float]]) -> str:
    """Each service's median, so a reader sees which one grows."""
    return ", ".join(f"{name} {statistics.median(s[name] for s in samples):.1f}" for name in SERVICES) + " MB"
