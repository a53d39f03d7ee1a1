"""The workload that faults are injected into, the exec driver beside it, and the scenarios
the test modules run.

The workload is a detached container whose shell, for i in 1..N, writes /data/f$i (a trapped
open, done by the gofer), reads it back, runs a static C program that makes trapped uname
calls (answered by the sentry), and prints `ok $i`. Then it waits for the host to create
/data/stop, so that every kill and exec lands while the container runs, prints `done` and
exits 0. A step that fails is tried again, up to ATTEMPTS times 0.5 s apart, with a `retry`
line on stderr: DESIGN.md lets a gofer call in flight fail with EIO, so runs that kill the
gofer may need it (others may not); wrong data is never retried. Beside it, the exec driver
runs `controller exec` every ~300 ms and records each status; the killer (harness.Killer)
kills services meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.cbuild import CBuild, install_into
from tests.conftest import REPO
from tests.faults.harness import CLI_TIMEOUT, EXIT_REMOTE, Faults, Killer
from tests.integration.zerovisor import cgroup_dirs, sh

#: Iterations of the main workload: ~60 ms each, so ~12 s on an idle machine.
ITERATIONS = 200
#: Trapped uname calls per iteration.
UNAME_CALLS = 50
#: Pause per iteration (microseconds), so that the workload spans the kill schedule.
PAUSE_US = 50_000
#: Tries of a workload step before it counts as failed, 0.5 s apart: they span a restart.
ATTEMPTS = 6
#: The workload is stuck when no `ok` line came for this long.
STALL_TIMEOUT = 25.0
#: How long one `controller exec` may take.
EXEC_TIMEOUT = 30.0
#: Pause between two execs of the driver.
EXEC_INTERVAL = 0.3
#: Every CAT_EVERY-th exec reads back a file the workload wrote instead of exiting with k.
CAT_EVERY = 4
#: Lifecycle commands a kill may interrupt (the command that `kill_during_lifecycle` runs).
OPS = ("create", "start", "pause", "delete")

SCRIPT = r"""
again() {{
  t=1
  until "$@"; do
    [ $t -lt {attempts} ] || return 1
    echo "retry $i: $1" >&2
    t=$((t + 1))
    usleep 500000
  done
}}
put() {{ echo "$2" > "$1"; }}
get() {{ read -r got < "$1"; }}
names() {{ u=$(/uname_loop {uname_calls}) && set -- $u && [ "$1" = zerovisor-test ]; }}
i=1
while [ $i -le {iterations} ]; do
  p="f$i:$((i * 7919 % 10007)):zerovisor fault workload"
  again put /data/f$i "$p" || {{ echo "BAD $i write"; exit 1; }}
  again get /data/f$i || {{ echo "BAD $i read"; exit 1; }}
  [ "$got" = "$p" ] || {{ echo "BAD $i mismatch: $got"; exit 1; }}
  again names || {{ echo "BAD $i uname: $u"; exit 1; }}
  echo "ok $i"
  usleep {pause_us}
  i=$((i + 1))
done
n=0
while [ ! -e /data/stop ]; do
  n=$((n + 1))
  [ $n -le 6000 ] || {{ echo "BAD gate: no /data/stop"; exit 1; }}
  usleep 50000
done
echo done
"""


def content(i: int) -> str:
    """What the workload writes to /data/f<i> (the script computes the same)."""
    return f"f{i}:{i * 7919 % 10007}:zerovisor fault workload\n"


class Workload:
    """One workload container: its bundle, its output on the host, and the checks of both."""

    def __init__(
        self,
        faults: Faults,
        cbin: CBuild,
        cid: str = "work",
        iterations: int = ITERATIONS,
        pause_us: int = PAUSE_US,
        retries_allowed: bool = False,
    ) -> None:
        self.faults = faults
        self.cid = cid
        self.iterations = iterations
        #: Whether a step may fail transiently and be retried (EIO while the gofer restarts).
        self.retries_allowed = retries_allowed
        script = SCRIPT.format(iterations=iterations, uname_calls=UNAME_CALLS, pause_us=pause_us, attempts=ATTEMPTS)
        self.bundle = sh(faults.tmp_path, script, name=f"bundle-{cid}")
        self.data = self.bundle / "rootfs" / "data"
        self.data.mkdir()
        install_into(self.bundle / "rootfs", cbin("uname_loop"))
        self.out_path = faults.tmp_path / f"{cid}.out"
        self.err_path = faults.tmp_path / f"{cid}.err"
        #: The container's cgroup directories while it ran; gone after delete.
        self.cgroups: list[Path] = []

    def start(self) -> None:
        """`controller run -d`, the container's stdout and stderr in host files."""
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            try:
                proc = subprocess.run(
                    self.faults.zv.argv("run", "-d", "-b", str(self.bundle), self.cid),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=REPO,
                    timeout=CLI_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                self.faults.fail_now(f"run -d {self.cid} did not return in {CLI_TIMEOUT:.0f}s")
        if proc.returncode != 0:
            self.faults.fail_now(f"run -d {self.cid} exited {proc.returncode}: {self.err_path.read_text()}")
        state = self.faults.controller_view(self.cid)
        if state.pid:
            proc_cgroup = Path(f"/proc/{state.pid}/cgroup")
            self.cgroups = list(cgroup_dirs(proc_cgroup.read_text()).values()) if proc_cgroup.exists() else []
        self.faults.note(f"{self.cid} runs (init {state.pid}, cgroups {[str(c) for c in self.cgroups]})")

    def lines(self) -> list[str]:
        """The container's stdout so far."""
        return self.out_path.read_text(errors="replace").splitlines()

    def progress(self) -> int:
        """The last i the workload reported `ok` for."""
        for line in reversed(self.lines()):
            if m := re.fullmatch(r"ok (\d+)", line):
                return int(m.group(1))
        return 0

    def wait_loop(self) -> bool:
        """Wait until the loop reported every `ok`; record a problem if it printed BAD or
        stalled for STALL_TIMEOUT."""
        last, since = -1, time.monotonic()
        while True:
            lines = self.lines()
            bad = [line for line in lines if line.startswith("BAD")]
            if bad:
                self.faults.problem(f"{self.cid} failed: {bad[0]} (stderr: {self.stderr()})")
                return False
            now = self.progress()
            if now >= self.iterations:
                self.faults.note(f"{self.cid}: loop done")
                return True
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_TIMEOUT:
                self.faults.problem(
                    f"{self.cid} stalled at ok {now} for {STALL_TIMEOUT:.0f}s (stderr: {self.stderr()})"
                )
                return False
            time.sleep(0.1)

    def stderr(self) -> str:
        """The end of the container's stderr, for messages."""
        return self.err_path.read_text(errors="replace")[-500:].strip() or "empty"

    def finish(self) -> int | None:
        """Let the script end (create /data/stop on the host) and wait for its exit code."""
        (self.data / "stop").write_text("")
        proc = self.faults.cli("wait", self.cid)
        self.faults.note(f"wait {self.cid}: exit {proc.returncode} {proc.stderr.strip()}")
        return proc.returncode if proc.returncode >= 0 else None

    def check(self, exit_code: int | None) -> None:
        """Exit code 0; stdout exactly ok 1..N then done; every file on the host intact."""
        f = self.faults
        f.expect(exit_code == 0, f"{self.cid} exited {exit_code}, not 0 (stderr: {self.stderr()})")
        want = [f"ok {i}" for i in range(1, self.iterations + 1)] + ["done"]
        got = self.lines()
        if got != want:
            first = next(
                (n for n, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want))
            )
            f.problem(
                f"{self.cid}'s stdout differs from line {first + 1}: got {got[first : first + 3]}, "
                f"want {want[first : first + 3]} ({len(got)} lines, want {len(want)})"
            )
        wrong = []
        for i in range(1, self.iterations + 1):
            path = self.data / f"f{i}"
            text = path.read_text(errors="replace") if path.exists() else None
            if text != content(i):
                wrong.append(f"f{i}={text!r}")
        f.expect(not wrong, f"{len(wrong)} workload file(s) missing or wrong on the host: {wrong[:5]}")
        retries = [line for line in self.err_path.read_text(errors="replace").splitlines() if line.startswith("retry")]
        if retries:
            f.note(f"{self.cid} retried {len(retries)} step(s): {retries[:5]}")
        f.expect(
            self.retries_allowed or not retries,
            f"{self.cid}'s program saw {len(retries)} transient failure(s) with no gofer killed: {retries[:5]}",
        )

    def check_cgroups_gone(self) -> None:
        """After delete the container's cgroup directories are removed."""
        left = [str(c) for c in self.cgroups if c.exists()]
        self.faults.expect(not left, f"{self.cid}'s cgroups are still there after delete: {left}")


@dataclass(frozen=True, slots=True)
class ExecRecord:
    """One `controller exec` of the driver and what came back."""

    n: int
    argv: tuple[str, ...]
    want_code: int
    want_out: str | None
    code: int
    out: str
    err: str
    seconds: float

    @property
    def ok(self) -> bool:
        """The program's own status (and output) came back: a CLI that failed prints
        "controller: ..." and may exit 1-3, which k can be too."""
        return (
            self.code == self.want_code
            and not self.err.startswith("controller:")
            and (self.want_out is None or self.out == self.want_out)
        )


class ExecDriver(threading.Thread):
    """Runs `controller exec` every EXEC_INTERVAL until stopped.

    Exec n runs `sh -c 'echo n >> /data/execs; exit k'` with k = n % 7, so that both the status
    (must be k) and the number of runs (n must be in /data/execs exactly once) are checked;
    every CAT_EVERY-th exec instead cats a file the workload has already written.
    """

    def __init__(self, faults: Faults, workload: Workload) -> None:
        super().__init__(name=f"execs-{workload.cid}", daemon=True)
        self.faults = faults
        self.workload = workload
        self.records: list[ExecRecord] = []
        self.stopping = threading.Event()
        self._rng = faults.rng("exec")

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(EXEC_INTERVAL):
            n += 1
            written = self.workload.progress()
            if n % CAT_EVERY == 0 and written > 0:
                j = self._rng.randint(1, written)
                argv: tuple[str, ...] = ("exec", self.workload.cid, "cat", f"/data/f{j}")
                want_code, want_out = 0, content(j)
            else:
                argv = ("exec", self.workload.cid, "sh", "-c", f"echo {n} >> /data/execs; exit {n % 7}")
                want_code, want_out = n % 7, None
            began = time.monotonic()
            proc = self.faults.cli(*argv, timeout=EXEC_TIMEOUT)
            record = ExecRecord(
                n, argv, want_code, want_out, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - began
            )
            self.records.append(record)
            if not record.ok:
                self.faults.note(f"exec {n} {argv[2:]} -> {proc.returncode} {proc.stderr.strip()[:200]!r}")

    def finish(self) -> None:
        """Stop after the exec in flight and join."""
        self.stopping.set()
        self.join(EXEC_TIMEOUT + 10)
        self.faults.expect(not self.is_alive(), f"{self.name} did not stop")

    def check(self) -> None:
        """Every exec returned its own status once: k, or the file's content; every sh exec
        ran exactly once (its n is in /data/execs once), none ran that was not asked for."""
        f = self.faults
        f.expect(len(self.records) >= 5, f"only {len(self.records)} execs ran")
        wrong = [r for r in self.records if not r.ok]
        unavailable = [r for r in wrong if r.code == EXIT_REMOTE and r.err.startswith("controller:")]
        for r in wrong[:6]:
            f.problem(
                f"exec {r.n} ({' '.join(r.argv[2:])}) returned {r.code} after {r.seconds:.1f}s, want {r.want_code}"
                f"{f' and {r.want_out!r}' if r.want_out else ''}: out {r.out[:80]!r} err {r.err.strip()[:300]!r}"
            )
        f.expect(
            not wrong,
            f"{len(wrong)} of {len(self.records)} execs went wrong ({len(unavailable)} with exit {EXIT_REMOTE}:"
            " a service error, or one the CLI did not retry)",
        )
        log = self.workload.data / "execs"
        ran = Counter(int(x) for x in log.read_text().split()) if log.exists() else Counter()
        asked = {r.n: r for r in self.records if r.want_out is None}
        twice = sorted(n for n, c in ran.items() if c > 1)
        f.expect(not twice, f"execs that ran more than once: {twice}")
        f.expect(not set(ran) - set(asked), f"execs ran that were never asked for: {sorted(set(ran) - set(asked))}")
        lost = sorted(n for n, r in asked.items() if r.ok and n not in ran)
        f.expect(not lost, f"execs that reported their status but never ran: {lost}")


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
    faults.states_agree(wl.cid, "running")
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
        faults.states_agree(wl.cid, "stopped")
    driver.check()
    if not looped:
        faults.cli("delete", "--force", wl.cid)
    else:
        deleted = faults.cli("delete", wl.cid)
        faults.expect(deleted.returncode == 0, f"delete {wl.cid} exited {deleted.returncode}: {deleted.stderr}")
    faults.states_agree(wl.cid, "absent")
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

    status = faults.controller_view(cid).status
    if not deleted:
        if status == "absent" and step("create", "-b", str(bundle), cid):
            status = faults.controller_view(cid).status
        if status == "created" and step("start", cid):
            status = faults.controller_view(cid).status
        if status == "paused" and step("resume", cid):
            status = faults.controller_view(cid).status
        if faults.expect(status == "running", f"{cid} cannot be brought to running: it is {status}"):
            out = faults.cli("exec", cid, "sh", "-c", "exit 5")
            faults.expect(
                out.returncode == 5 and not out.stderr,
                f"exec into {cid} returned {out.returncode}: {out.stderr.strip()}",
            )
    if status != "absent":
        step("delete", "--force", cid)
    faults.states_agree(cid, "absent")
    probe = sh(faults.tmp_path, "echo alive > /alive; cat /alive", name="bundle-probe")
    out = faults.cli("run", "-b", str(probe), "probe")
    faults.expect(out.returncode == 0 and out.stdout == "alive\n", f"a new container fails: {out}")


def kill_during_lifecycle(faults: Faults, cbin: CBuild, services: tuple[str, ...], op: str) -> None:
    """Run `op` (create, start, pause or delete) on a container in a thread, kill the services
    after a random short delay, restart them; the command succeeds or fails with a clear error,
    the parties agree on the container, and it can then be driven to the end without leaks."""
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
        if result.returncode != 0:
            faults.clear_error(result, f"controller {op}")
    faults.states_agree(cid)
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
    faults.states_agree(cid, "running")
    out = faults.cli("exec", cid, "sh", "-c", "exit 4")
    faults.expect(out.returncode == 4, f"exec after SIGCONT returned {out.returncode}: {out.stderr.strip()}")
    out = faults.cli("delete", "--force", cid)
    faults.expect(out.returncode == 0, f"delete --force {cid} exited {out.returncode}: {out.stderr.strip()}")
    faults.states_agree(cid, "absent")
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
    faults.states_agree("full", "absent")
    out = faults.cli("run", "-b", str(sh(faults.tmp_path, "echo alive", name="bundle-again")), "again")
    faults.expect(out.returncode == 0 and out.stdout == "alive\n", f"run after freeing space: {out}")
    faults.finish(base)
