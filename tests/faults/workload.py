"""The workload that faults are injected into, and the exec driver beside it (the scenarios the
test modules run are in scenarios.py).

The workload is a detached container whose shell, for i in 1..N, writes /data/f$i (a trapped
open, done by the gofer), reads it back, runs a static C program that makes trapped uname
calls (answered by the sentry), and prints `ok $i`. Then it waits for the host to create
/data/stop, so that every kill and exec lands while the container runs, prints `done` and
exits 0. A step that fails is tried again, up to ATTEMPTS times 0.5 s apart, with a `retry`
line on stderr: DESIGN.md lets a gofer call in flight fail with EIO, so runs that kill the
gofer may need it (others may not); wrong data is never retried. Beside it, the exec driver
runs `controller exec` every ~300 ms and records each status; the killer (scenarios.Killer)
kills services meanwhile.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.cbuild import CBuild, install_into
from tests.conftest import REPO
from tests.faults.harness import CLI_TIMEOUT, EXIT_REMOTE, Faults
from tests.faults.views import controller_view
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
        state = controller_view(self.faults, self.cid)
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
                self.faults.problem(f"{self.cid} failed: {bad[0]}{self.host_file(bad[0])} (stderr: {self.stderr()})")
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

    def host_file(self, bad: str) -> str:
        """What the host holds of the file a BAD line names, so that a failed read or a
        mismatch tells lost data from a failed call."""
        m = re.match(r"BAD (\d+) ", bad)
        if m is None:
            return ""
        path = self.data / f"f{m.group(1)}"
        held = path.read_bytes() if path.exists() else None
        return f"; f{m.group(1)} on the host: {held!r}, want {content(int(m.group(1))).encode()!r}"

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
