"""The fault-injection machinery: kill and restart services, keep a census of our processes,
and look for leaks (what controller, sentry and platform say is compared in views.py; the
/proc reading is in procs.py).

One `Faults` object per test owns a root under the test's tmp_path (so tests run in parallel),
the random seed of the test's kill schedule, and the list of problems found. Checks record a
problem and go on (`expect`), so that one failure report says everything that went wrong, with
the seed and a timeline of kills and restarts; `verdict()` raises at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from common.rundir import SERVICES, RunDir
from tests.conftest import REPO, settled_fd_count
from tests.faults.procs import (
    GONE_TIMEOUT,
    ProcInfo,
    all_pids,
    cgroup_mounts,
    cmdline,
    container_cgroups,
    descendants,
    describe,
    proc_info,
    tasks_in,
    wait_gone,
)
from tests.integration.zerovisor import Zerovisor

#: Environment variable that fixes the seed of the random kill schedule (to replay a failure).
SEED_ENV = "ZEROVISOR_FAULT_SEED"
#: The CLI's exit code for an error a service reported or a service it could not reach.
EXIT_REMOTE = 3
#: How long one CLI command may take before the harness calls it hung.
CLI_TIMEOUT = 60.0
#: How long a direct RPC to a service (sentry, platform) may take.
RPC_TIMEOUT = 10.0
#: How long ServiceManager.start may take to bring killed services back.
RESTART_TIMEOUT = 60.0
#: Extra fds a service may hold at the end over its count after warm-up. A restarted instance
#: may have opened its lazy connections in another order; a leak per container, exec or kill
#: grows far beyond this over a workload.
FD_SLACK = 3
#: How many warnings of each service's log a failure report shows.
LOG_LINES = 12
#: The log lines a failure report shows.
_LOG_MARKS = (" WARNING ", " ERROR ", " restored from ")
#: Container statuses in which the init exists and the platform must know its pid.
LIVE = ("created", "running", "paused")

#: Runs ServiceManager.start in a child: the services it starts are then never the test
#: process's children (the helper exits at once and they are re-parented, as under systemd),
#: so the test has no service zombies to reap.
_RESTART_HELPER = """\
import json, sys
from common.errors import ZerovisorError
from common.rundir import RunDir
from services.controller.services import ServiceManager
run_dir, root, *services = sys.argv[1:]
try:
    pids = ServiceManager(RunDir.at(run_dir), root).start(tuple(services))
except ZerovisorError as e:
    sys.exit(f"restart failed: {e}")
print(json.dumps(pids))
"""


def draw_seed() -> int:
    """The seed of this test's kill schedule: ZEROVISOR_FAULT_SEED if set, else a fresh one."""
    text = os.environ.get(SEED_ENV, "").strip()
    return int(text) if text else random.SystemRandom().randrange(1 << 32)


class FaultCli(Zerovisor):
    """The controller CLI on a root, with the services' run directory named explicitly."""

    def __init__(self, root: Path, run_dir: Path) -> None:
        super().__init__(root)
        self.run_dir = run_dir

    def argv(self, *args: str) -> list[str]:
        """`controller --root root --run-dir run_dir *args`."""
        return [*super().argv(), "--run-dir", str(self.run_dir), *args]


class Faults:
    """One test's services, kill schedule, census of processes and findings."""

    def __init__(self, tmp_path: Path, seed: int, run_dir: Path | None = None) -> None:
        self.tmp_path = tmp_path
        self.seed = seed
        root = tmp_path / "root"
        self.zv = FaultCli(root, run_dir or root)
        self.run_dir = RunDir.at(run_dir or root)
        #: What the checks found wrong; verdict() fails the test with all of it.
        self.problems: list[str] = []
        #: Kills, restarts and notable outcomes, with seconds since the test began.
        self.timeline: list[str] = []
        #: (pid, start time) of every service, helper and container process seen.
        self.census: set[tuple[int, int]] = set()
        #: The pid each service should have now; another means it died unseen.
        self.expected: dict[str, int] = {}
        #: Services we SIGSTOPped and have not continued yet.
        self.stopped: set[int] = set()
        self.kills = 0
        self._t0 = time.monotonic()
        self._lock = threading.RLock()

    # -- findings --------------------------------------------------------------------------

    def rng(self, purpose: str) -> random.Random:
        """A random source for one purpose, derived from the seed (kills and execs do not
        shift each other's draws)."""
        return random.Random(f"{self.seed}:{purpose}")

    def note(self, message: str) -> None:
        """Add a line to the timeline shown with a failure."""
        with self._lock:
            self.timeline.append(f"{time.monotonic() - self._t0:7.2f}s  {message}")

    def problem(self, message: str) -> None:
        """Record a failed check; the test goes on and fails at verdict()."""
        with self._lock:
            self.problems.append(message)
        self.note(f"PROBLEM: {message.splitlines()[0]}")

    def expect(self, ok: bool, message: str) -> bool:
        """Record message as a problem unless ok; return ok."""
        if not ok:
            self.problem(message)
        return ok

    def report(self, headline: str = "") -> str:
        """Every problem, the seed to replay them and the timeline."""
        with self._lock:
            problems = [f"  - {p}" for p in self.problems]
            timeline = self.timeline[-80:]
        lines = [
            f"{headline or f'{len(problems)} problem(s)'} [{SEED_ENV}={self.seed}, {self.kills} kill(s)]",
            *problems,
            "timeline:",
            *(f"  {t}" for t in timeline),
            *self._log_warnings(),
        ]
        return "\n".join(lines)

    def _log_warnings(self) -> list[str]:
        """The last warnings and errors each service logged, and what a restarted sentry
        recovered: where a failure report starts looking for the cause."""
        lines = []
        for service in SERVICES:
            path = self.run_dir.log_path(service)
            if not path.exists():
                continue
            logged = path.read_text(errors="replace").splitlines()
            worst = [line for line in logged if any(mark in line for mark in _LOG_MARKS)][-LOG_LINES:]
            if worst:
                lines += [f"{service}.log:", *(f"  {line}" for line in worst)]
        return lines

    def fail_now(self, message: str) -> NoReturn:
        """Stop the test here: what follows cannot be checked meaningfully."""
        self.problem(message)
        raise AssertionError(self.report(message))

    def verdict(self) -> None:
        """Fail the test if any check failed."""
        if self.problems:
            raise AssertionError(self.report())

    # -- the CLI ---------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run the CLI; a hang becomes returncode -1 with "timed out" in stderr."""
        try:
            return self.zv(*args, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(list(args), -1, "", f"timed out after {timeout:.0f}s")

    def must(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run the CLI; anything but success ends the test."""
        proc = self.cli(*args, timeout=timeout)
        if proc.returncode != 0:
            self.fail_now(f"controller {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def clear_error(self, proc: subprocess.CompletedProcess[str], what: str) -> bool:
        """A failed command must say why in one line of its own, not hang or dump a traceback."""
        err = proc.stderr.strip()
        return self.expect(
            proc.returncode > 0 and err.startswith("controller: ") and "Traceback" not in err,
            f"{what} failed without a clear error (exit {proc.returncode}): {err[-600:]!r}",
        )

    # -- services --------------------------------------------------------------------------

    def pid(self, service: str) -> int | None:
        """The live pid of service, or None (waits out a pid file being written: on a busy
        machine a new instance can take longer than half a second from its lock to its pid)."""
        deadline = time.monotonic() + GONE_TIMEOUT
        while (pid := self.run_dir.running_pid(service)) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return pid or None

    def pids(self) -> dict[str, int | None]:
        """Every service's live pid (None when down)."""
        return {s: self.pid(s) for s in SERVICES}

    def up(self) -> None:
        """Start the four services and remember their pids."""
        self.must("up")
        with self._lock:
            self.expected = {s: p for s, p in self.pids().items() if p}
        self.note(f"up: {self.expected}")
        self.observe()

    def observe(self) -> None:
        """Add every service and its descendants (fork server, stubs, tasks) to the census."""
        with self._lock:
            for service in SERVICES:
                pid = self.pid(service)
                if pid is None:
                    continue
                for p in {pid, *descendants(pid)}:
                    info = proc_info(p)
                    if info is not None and info.state not in ("Z", "X"):
                        self.census.add((p, info.start))

    def kill(self, services: Iterable[str]) -> None:
        """SIGKILL services at once and wait until they are gone."""
        self.observe()  # whatever they started is ours to account for
        victims: dict[str, int] = {}
        for service in services:
            pid = self.pid(service)
            want = self.expected.get(service)
            if pid is None:
                self.problem(f"{service} was not running when it was to be killed: it died by itself")
                continue
            if want is not None and pid != want:
                self.problem(f"{service} is pid {pid}, not {want}: it died unseen and was restarted")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            victims[service] = pid
        for service, pid in victims.items():
            if not wait_gone(pid):
                self.fail_now(f"{service} (pid {pid}) survived SIGKILL")
            deadline = time.monotonic() + GONE_TIMEOUT
            while self.run_dir.running_pid(service) == pid and time.monotonic() < deadline:
                time.sleep(0.01)
        self.note(f"killed {victims}")

    def restart(self, services: Iterable[str]) -> dict[str, int]:
        """Start services again with ServiceManager.start, as systemd's Restart=always would."""
        names = tuple(services)
        argv = [sys.executable, "-c", _RESTART_HELPER, str(self.run_dir.path), str(self.zv.root), *names]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, cwd=REPO, timeout=RESTART_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            self.fail_now(f"restarting {names} took more than {RESTART_TIMEOUT:.0f}s")
        if proc.returncode != 0:
            self.fail_now(f"restarting {names} failed: {proc.stderr.strip()[-1500:]}")
        started: dict[str, int] = json.loads(proc.stdout)
        # start() may name a service that won a start race against it as pid 0: it read the
        # winner's pid file between its lock and its write. Ask the lock again then.
        pids = {s: started.get(s) or self.pid(s) or 0 for s in names}
        if any(started.get(s) != pids[s] for s in names):
            self.note(f"ServiceManager.start said {started}, the locks say {pids}")
        with self._lock:
            self.expected.update(pids)
        self.note(f"restarted {pids}")
        self.observe()
        return pids

    def kill_and_restart(self, services: Iterable[str]) -> None:
        """One fault: SIGKILL services together, then restart them together."""
        names = tuple(services)
        with self._lock:
            self.kills += 1
        self.kill(names)
        self.restart(names)

    def sigstop(self, service: str) -> int:
        """Stop service (it keeps its lock and answers nothing) until sigcont()."""
        pid = self.pid(service)
        if pid is None:
            self.fail_now(f"{service} is not running, cannot stop it")
        os.kill(pid, signal.SIGSTOP)
        self.stopped.add(pid)
        self.note(f"SIGSTOP {service} (pid {pid})")
        return pid

    def sigcont(self, pid: int) -> None:
        """Let a stopped service run again."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        self.stopped.discard(pid)
        self.note(f"SIGCONT pid {pid}")

    def check_services_stable(self) -> None:
        """Every service runs with the pid it was last (re)started with: none died unseen."""
        now = self.pids()
        for service in SERVICES:
            self.expect(
                now[service] is not None and now[service] == self.expected.get(service),
                f"{service} is pid {now[service]}, expected {self.expected.get(service)}: it died (or never came"
                " back) without being killed",
            )

    # -- leaks -----------------------------------------------------------------------------

    @property
    def instance(self) -> str:
        """The cgroup group of this run directory: a container's cgroup is zerovisor/<instance>/<cid>
        (the fork server hashes the run directory, which tests/integration's Zerovisor.instance
        computes from the root: the two are the same unless --run-dir separates them)."""
        return hashlib.sha256(os.fsencode(self.run_dir.path.resolve())).hexdigest()[:12]

    def tasks(self) -> list[int]:
        """Pids of processes in a container cgroup of this run directory."""
        return tasks_in(self.instance)

    def container_cgroups(self) -> list[Path]:
        """Container cgroup directories of this run directory, in every hierarchy."""
        return container_cgroups(self.instance)

    def alive_census(self) -> list[int]:
        """Census processes that still run (same pid and start time, not a zombie)."""
        with self._lock:
            census = sorted(self.census)
        alive = []
        for pid, start in census:
            info = proc_info(pid)
            if info is not None and info.start == start and info.state not in ("Z", "X"):
                alive.append(pid)
        return alive

    def zombies(self) -> list[ProcInfo]:
        """Zombies whose parent is one of ours (the test process, a service, a fork server,
        a container task), left so for a second: a parent that forgot to reap."""

        def scan() -> dict[tuple[int, int], ProcInfo]:
            ours = {os.getpid(), *self.alive_census()}
            found = {}
            for pid in all_pids():
                info = proc_info(pid)
                if info is not None and info.state == "Z" and info.ppid in ours:
                    found[(pid, info.start)] = info
            return found

        first = scan()
        if not first:
            return []
        time.sleep(1.0)
        return [info for key, info in scan().items() if key in first]

    def forkservers(self) -> list[int]:
        """Live fork servers among the census (a container's init shows the fork server's
        command line until it execs: those are in a container cgroup and are left out)."""
        tasks = set(self.tasks())
        return [p for p in self.alive_census() if "services.platform.forkserver" in cmdline(p) and p not in tasks]

    def fd_counts(self) -> dict[str, tuple[int, int]]:
        """Settled fd count of each service and of the fork server: name -> (pid, count)."""
        counts: dict[str, tuple[int, int]] = {}
        self.observe()
        processes = [(s, self.pid(s)) for s in SERVICES]
        processes += [("forkserver", p) for p in self.forkservers()]
        for name, pid in processes:
            if pid is None:
                continue
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                counts[name if name not in counts else f"{name}@{pid}"] = (pid, settled_fd_count(pid))
        self.note(f"fd counts: { {n: c for n, (_, c) in counts.items()} }")
        return counts

    def check_fds(self, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> None:
        """No process holds more fds at the end than after warm-up (beyond FD_SLACK)."""
        for name, (pid, count) in after.items():
            if name not in before:
                self.problem(f"{name} (pid {pid}, {count} fds) appeared after warm-up: another fork server?")
                continue
            old_pid, old = before[name]
            self.expect(
                count <= old + FD_SLACK,
                f"{name} has {count} fds open at the end (pid {pid}), {old} after warm-up (pid {old_pid}): a leak",
            )

    def finish(self, base_fds: dict[str, tuple[int, int]]) -> None:
        """The end of every scenario, once its containers are deleted: no task, zombie or fd
        leaked while the services run; then `down` leaves no process of ours; then the verdict."""
        deadline = time.monotonic() + 5.0
        while (left := self.tasks()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.expect(not left, f"tasks left in this root's container cgroups after delete: {describe(left)}")
        cgroups = self.container_cgroups()
        self.expect(not cgroups, f"container cgroups left after delete: {[str(c) for c in cgroups]}")
        self.check_fds(base_fds, self.fd_counts())
        zombies = self.zombies()
        self.expect(not zombies, f"zombies of our processes: {zombies}")
        self.check_services_stable()
        down = self.cli("down")
        self.expect(down.returncode == 0, f"down exited {down.returncode}: {down.stderr.strip()}")
        self.expect(all(p is None for p in self.pids().values()), f"services still running after down: {self.pids()}")
        deadline = time.monotonic() + 5.0
        while (alive := self.alive_census() + self.tasks()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.expect(not alive, f"processes left after down: {describe(alive)}")
        self.verdict()

    def teardown(self) -> None:
        """Whatever the test left: continue stopped services, stop the services, and kill what
        is still ours (census and container cgroups), so no test leaks into the next."""
        for pid in list(self.stopped):
            self.sigcont(pid)
        self.cli("down", "--timeout", "2")
        for pid in set(self.alive_census() + self.tasks()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # The cgroups of this root are ours too (their name hashes our tmp_path): remove what
        # is left once its tasks are gone.
        deadline = time.monotonic() + 5.0
        while self.tasks() and time.monotonic() < deadline:
            time.sleep(0.05)
        for group in self.container_cgroups():
            with contextlib.suppress(OSError):
                group.rmdir()
        for point in cgroup_mounts():
            with contextlib.suppress(OSError):
                (point / "zerovisor" / self.instance).rmdir()
