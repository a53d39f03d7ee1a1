"""zerovisor as the benchmarks drive it: the controller CLI on a root and run directory of the
run's own (Zerovisor), the services' pids, and busybox bundles for it and for runc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.harness import BenchError, command
from services.controller.cmdserver.protocol import install_key

REPO = Path(__file__).resolve().parent.parent


def compile_bytecode() -> None:
    """Compile zerovisor's modules once, as pip does for a regular (not editable) install.

    Every CLI command is a new interpreter. An editable install leaves compiling to the first
    import, and where PYTHONDONTWRITEBYTECODE is set (it is on some machines) that first import
    never writes its result: each command would compile every module it imports again.
    """
    import compileall

    for package in ("common", "services"):
        compileall.compile_dir(REPO / package, quiet=1)


class Zerovisor:
    """The controller CLI on root (its services' run directory too); `down` stops them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def argv(self, *args: str) -> list[str]:
        """`controller --root root *args`, run by this interpreter (what a user's shell runs)."""
        return [sys.executable, "-m", "services.controller", "--root", str(self.root), *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `controller *args` to its end, waited for exactly (harness.command); env is added
        to ours."""
        log = self.root.with_suffix(".log")
        return command(self.argv(*args), log, cwd=REPO, check=check, timeout=timeout, env=env)

    def up(self) -> None:
        self("up")

    def down(self) -> None:
        self("down", check=False)

    def pid(self, service: str) -> int:
        """The pid of a running service (or "forkserver"), from its lock file."""
        from common.rundir import RunDir

        return int(RunDir.at(self.root).pid_path(service).read_text().split()[0])


def threads(pid: int) -> list[int]:
    """Every thread id of process pid."""
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def pin(pid: int, cpus: set[int]) -> None:
    """Put every thread of pid on cpus (threads started later inherit from their creator)."""
    for tid in threads(pid):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue


def pss_mb(pid: int) -> float:
    """Proportional resident memory of pid in MB: pages shared with other processes (a fork's
    copy-on-write ones) count a share each."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def command_server_pids() -> list[int]:
    """This installation's command server and its spare worker (same command line), if up."""
    want = f"services.controller.cmdserver\0{install_key().encode().hex()}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if want in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of pid in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def bundle(path: Path, args: list[str]) -> Path:
    """A bundle at path: the tests' busybox rootfs and `controller spec`'s config (runc's
    default) running args without a terminal, on a writable root; runc runs the same bundle."""
    import pytest

    from tests.rootfs import make_bundle

    try:
        return make_bundle(path, args)
    except pytest.fail.Exception as e:  # busybox-static is missing: this case cannot run
        raise BenchError(str(e)) from None
