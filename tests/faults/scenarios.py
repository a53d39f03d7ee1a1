"""The scenarios the fault test modules run: the workload under kills, a kill during a
lifecycle command, a service that stops answering, a full run directory.

Each takes the harness (harness.Faults), records what it saw with note/problem, and ends with
the harness's checks (states agree everywhere, no task, zombie, cgroup or fd left).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from tests.cbuild import CBuild
from tests.faults.harness import CLI_TIMEOUT, RESTART_TIMEOUT, Faults
from tests.faults.procs import GONE_TIMEOUT
from tests.faults.views import controller_view, states_agree
from tests.faults.workload import ExecDriver, Workload, content
from tests.integration.zerovisor import sh

#: Lifecycle commands a kill may interrupt (the command that `kill_during_lifecycle` runs).
OPS = ("create", "start", "pause", "delete")


def warm_up(faults: Faults, cbin: CBuild) -> dict[str, tuple[int, int]]:
    """Run a short workload and two execs to its end and delete it, so that every lazy fd
    (connections, caches) is open; return the settled fd counts that the end is compared with."""
    wl = Workload(faults, cbin, cid="warm", iterations=3, pause_us=0)
    wl.start()
    wl.wait_loop()
    out = faults.cli("exec", "warm", "sh", "-c", "exit 3")
    faults.expect(out.returncode == 3, f"warm-up exec returned {out.returncode}: {out.stderr}")
    out = faults.cli("exec", "warm", "cat", "/data/f1")
    faults.expect(out.stdout == content(1), f"warm-up cat returned {out.returncode}: {out.stdout!r} {out.stderr}")
    wl.check(wl.finish())
    faults.must("delete", "warm")
    faults.verdict()  # a harness that fails without faults has nothing to say about them
    return faults.fd_counts()


def workload_under_kills(faults: Faults, cbin: CBuild, services: tuple[str, ...], kills: int) -> None:
    """The workload with execs beside it while `kills` times the services are SIGKILLed together
    and restarted; then every check (see Workload.check, ExecDriver.check, Faults.finish)."""
    faults.up()
    base = warm_up(faults, cbin)
    wl = Workload(faults, cbin, retries_allowed="gofer" in services)
    wl.start()
    states_agree(faults, wl.cid, "running")
    driver = ExecDriver(faults, wl)
    killer = Killer(faults, services, kills)
    driver.start()
    killer.start()
    try:
        looped = wl.wait_loop()
    finally:
        # A stalled workload gives the remaining kills nothing to prove: stop them early.
        killer.finish(timeout=120.0 if wl.progress() >= wl.iterations else 0.0)
        driver.finish()
    faults.expect(killer.done == kills, f"{killer.done} of {kills} kills done")
    faults.note(f"{len(driver.records)} execs")
    if looped:
        wl.check(wl.finish())
        states_agree(faults, wl.cid, "stopped")
    driver.check()
    if not looped:
        faults.cli("delete", "--force", wl.cid)
    else:
        deleted = faults.cli("delete", wl.cid)
        faults.expect(deleted.returncode == 0, f"delete {wl.cid} exited {deleted.returncode}: {deleted.stderr}")
    states_agree(faults, wl.cid, "absent")
    wl.check_cgroups_gone()
    faults.finish(base)


def sleeper(faults: Faults, name: str) -> Path:
    """A bundle whose init sleeps until killed."""
    return sh(faults.tmp_path, "exec sleep 100000", name=name)


def drive_to_end(faults: Faults, cid: str, bundle: Path, deleted: bool) -> None:
    """Whatever state an interrupted command left cid in, it can be taken to running, exec'd
    into and deleted (a delete cut short is done again); once deleted nobody knows it, and new
    containers run."""

    def step(*args: str) -> bool:
        out = faults.cli(*args)
        return faults.expect(
            out.returncode == 0, f"then {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}"
        )

    status = controller_view(faults, cid).status
    if not deleted:
        if status == "absent" and step("create", "-b", str(bundle), cid):
            status = controller_view(faults, cid).status
        if status == "created" and step("start", cid):
            status = controller_view(faults, cid).status
        if status == "paused" and step("resume", cid):
            status = controller_view(faults, cid).status
        if faults.expect(status == "running", f"{cid} cannot be brought to running: it is {status}"):
            out = faults.cli("exec", cid, "sh", "-c", "exit 5")
            faults.expect(
                out.returncode == 5 and not out.stderr,
                f"exec into {cid} returned {out.returncode}: {out.stderr.strip()}",
            )
    if status != "absent":
        step("delete", "--force", cid)
    states_agree(faults, cid, "absent")
    probe = sh(faults.tmp_path, "echo alive > /alive; cat /alive", name="bundle-probe")
    out = faults.cli("run", "-b", str(probe), "probe")
    faults.expect(out.returncode == 0 and out.stdout == "alive\n", f"a new container fails: {out}")


def kill_during_lifecycle(faults: Faults, cbin: CBuild, services: tuple[str, ...], op: str) -> None:
    """Run `op` (create, start, pause or delete) on a container in a thread, kill the services
    after a random short delay, restart them; the command succeeds (the CLI sends each of these
    again across a restart), the parties agree on the container, and it can then be driven to
    the end without leaks."""
    faults.up()
    base = warm_up(faults, cbin)
    cid, bundle = "life", sleeper(faults, "bundle-life")
    if op != "create":
        faults.must("create", "-b", str(bundle), cid)
    if op in ("pause", "delete"):
        faults.must("start", cid)
    argv = {
        "create": ("create", "-b", str(bundle), cid),
        "start": ("start", cid),
        "pause": ("pause", cid),
        "delete": ("delete", "--force", cid),
    }[op]
    outcome: list[subprocess.CompletedProcess[str]] = []
    command = threading.Thread(target=lambda: outcome.append(faults.cli(*argv)), name=f"op-{op}", daemon=True)
    delay = faults.rng("op").uniform(0.02, 0.35)
    command.start()
    try:
        time.sleep(delay)
        faults.note(f"{op} has run for {delay:.2f}s")
        faults.kill_and_restart(services)
    finally:
        command.join(CLI_TIMEOUT + 10)
    if faults.expect(not command.is_alive() and bool(outcome), f"controller {op} did not return"):
        result = outcome[0]
        faults.note(f"{op} exited {result.returncode}: {result.stderr.strip()[:300]}")
        faults.expect(result.returncode == 0, f"controller {op} failed across the restart: {result.stderr.strip()}")
    states_agree(faults, cid)
    drive_to_end(faults, cid, bundle, deleted=op == "delete")
    faults.finish(base)


#: How long the CLI may take to say that a service which holds its lock does not answer.
NOT_RESPONDING_BOUND = 30.0
NOT_RESPONDING = re.compile(r"not respond|no reply|no answer|did not answer|timed? ?out|unavailable", re.IGNORECASE)


def service_stops_answering(faults: Faults, cbin: CBuild, service: str) -> None:
    """SIGSTOP service (alive, holding its lock, answering nothing): `controller state` reports
    it within NOT_RESPONDING_BOUND instead of hanging, `status` says "not responding"; after
    SIGCONT everything works again and nothing leaked."""
    faults.up()
    base = warm_up(faults, cbin)
    cid = "idle"
    faults.must("run", "-d", "-b", str(sleeper(faults, "bundle-idle")), cid)
    pid = faults.sigstop(service)
    try:
        began = time.monotonic()
        out = faults.cli("state", cid, timeout=NOT_RESPONDING_BOUND + 15)
        took = time.monotonic() - began
        faults.note(f"state with {service} stopped: exit {out.returncode} after {took:.1f}s: {out.stderr.strip()}")
        faults.expect(
            took <= NOT_RESPONDING_BOUND,
            f"state took {took:.1f}s (bound {NOT_RESPONDING_BOUND:.0f}s) with the {service} stopped",
        )
        if faults.expect(out.returncode != 0, f"state succeeded with the {service} stopped: {out.stdout[:200]}"):
            faults.clear_error(out, f"state with the {service} stopped")
            faults.expect(
                service in out.stderr and NOT_RESPONDING.search(out.stderr) is not None,
                f"state does not say that the {service} is not responding: {out.stderr.strip()!r}",
            )
        status = faults.cli("status", "--format", "json")
        states = {s["service"]: s["state"] for s in json.loads(status.stdout)} if status.returncode == 0 else {}
        # The controller may be busy waiting on the stopped service itself; the others must not be.
        bystanders = {name: state for name, state in states.items() if name not in (service, "controller")}
        faults.expect(
            states.get(service) == "not responding" and set(bystanders.values()) == {"running"},
            f"status with the {service} stopped: exit {status.returncode} {states or status.stderr}",
        )
    finally:
        faults.sigcont(pid)
    states_agree(faults, cid, "running")
    out = faults.cli("exec", cid, "sh", "-c", "exit 4")
    faults.expect(out.returncode == 4, f"exec after SIGCONT returned {out.returncode}: {out.stderr.strip()}")
    out = faults.cli("delete", "--force", cid)
    faults.expect(out.returncode == 0, f"delete --force {cid} exited {out.returncode}: {out.stderr.strip()}")
    states_agree(faults, cid, "absent")
    faults.finish(base)


def fill(path: Path) -> int:
    """Write path until its filesystem has no byte left; return the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for size in (65536, 4096, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):  # ENOSPC: go on with smaller chunks
                while True:
                    written += os.write(fd, chunk)
    finally:
        os.close(fd)
    return written


def full_run_dir(faults: Faults, cbin: CBuild) -> None:
    """With the run directory full, `controller run` fails with a clear "no space" error and
    the services keep running; once space is back, containers run again and nothing leaked."""
    faults.up()
    base = warm_up(faults, cbin)
    before = faults.pids()
    filler = faults.run_dir.path / "filler"
    faults.note(f"filled the run directory with {fill(filler)} bytes")
    try:
        out = faults.cli("run", "-b", str(sh(faults.tmp_path, "echo alive", name="bundle-full")), "full")
        faults.note(f"run on a full run directory: exit {out.returncode}: {out.stderr.strip()[:300]}")
        if faults.expect(out.returncode != 0, f"run succeeded on a full run directory: {out.stdout!r}"):
            faults.clear_error(out, "run on a full run directory")
            faults.expect(
                "no space" in out.stderr.lower(), f"run's error does not mention the lack of space: {out.stderr!r}"
            )
        faults.expect(faults.pids() == before, f"services changed on a full run directory: {before} -> {faults.pids()}")
        status = faults.cli("status", "--format", "json")
        states = {s["service"]: s["state"] for s in json.loads(status.stdout)} if status.returncode == 0 else {}
        faults.expect(set(states.values()) == {"running"}, f"status on a full run directory: {states or status.stderr}")
    finally:
        filler.unlink()
    states_agree(faults, "full", "absent")
    out = faults.cli("run", "-b", str(sh(faults.tmp_path, "echo alive", name="bundle-again")), "again")
    faults.expect(out.returncode == 0 and out.stdout == "alive\n", f"run after freeing space: {out}")
    faults.finish(base)


class Killer(threading.Thread):
    """Kills services at random moments, `kills` times, restarting them after each kill.

    Between kills it sleeps a random 0.2-1.5 s drawn from the test's seed. An error (a service
    that survives SIGKILL or does not come back) ends it; finish() reports it.
    """

    def __init__(self, faults: Faults, services: tuple[str, ...], kills: int) -> None:
        super().__init__(name=f"killer-{'+'.join(services)}", daemon=True)
        self.faults = faults
        self.services = services
        self.kills = kills
        self.done = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._rng = faults.rng("kill:" + ",".join(services))

    def run(self) -> None:
        try:
            for _ in range(self.kills):
                if self.stopping.wait(self._rng.uniform(0.2, 1.5)):
                    return
                self.faults.kill_and_restart(self.services)
                self.done += 1
        except (AssertionError, OSError, subprocess.SubprocessError, ValueError) as e:
            self.error = e

    def finish(self, timeout: float) -> None:
        """Wait for the remaining kills (at most timeout), then stop and join; record errors."""
        self.join(timeout)
        self.stopping.set()
        self.join(RESTART_TIMEOUT + GONE_TIMEOUT)
        self.faults.expect(not self.is_alive(), f"{self.name} did not stop")
        if self.error is not None:
            self.faults.problem(f"{self.name} failed: {str(self.error).splitlines()[0]}")
