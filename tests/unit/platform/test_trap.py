"""Trapping containers: the seccomp listener, the trapped set and the read-only kernel view.

Each container runs under stub_driver in mode "trap": the single-threaded driver launches it
with trap=True, takes the listener that release returns, and answers every notification with
CONTINUE (supervisor.py), recording the call numbers and paths. With CONTINUE the kernel does
the call itself, so what it refuses (a write to the read-only rootfs) shows the kernel view.
The C helpers are compiled with gcc at test time.
"""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pyseccomp
import pytest

from services.platform.filters import DENIED_SYSCALLS
from services.platform.linux import CAPABILITIES
from tests.rootfs import make_rootfs
from tests.unit.platform.stub_runner import Run, base_spec, run_container, sh, with_process

# x86_64 numbers.
NR_EXECVE = 59
NR_OPENAT = 257
NR_UNAME = 63
NR_SETHOSTNAME = 170

INT80_C = r"""
int main(void) {
    long ret;
    /* i386 getpid through the 32-bit entry: another architecture for the filter. */
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    return ret > 0 ? 0 : 1;
}
"""

DENIED_C = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Calls each system call number in argv with all arguments -1 and prints "nr errno".
   With every capability, the kernel itself would refuse these with EINVAL, EFAULT, EBADF,
   ESRCH or ENOSYS: only the filter answers EPERM. */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long nr = strtol(argv[i], NULL, 10);
        errno = 0;
        long ret = syscall(nr, -1L, -1L, -1L, -1L, -1L, -1L);
        printf("%ld %d\n", nr, ret == -1 ? errno : 0);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C helpers, compiled static once for this module."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is not installed: the README's setup installs it")
    out = tmp_path_factory.mktemp("helpers")
    for name, source in (("int80", INT80_C), ("denied", DENIED_C)):
        (out / f"{name}.c").write_text(source)
        subprocess.run(["gcc", "-static", "-O2", "-o", str(out / name), str(out / f"{name}.c")], check=True)
    return out


@pytest.fixture
def rootfs(tmp_path: Path, helpers: Path) -> Path:
    """A fresh busybox rootfs with the C helpers in /bin."""
    root = make_rootfs(tmp_path / "rootfs")
    for name in ("int80", "denied"):
        shutil.copy2(helpers / name, root / "bin" / name)
    return root


def trapped(tmp_path: Path, spec: dict[str, Any]) -> Run:
    """Run spec's container as a trapping one, answered by the driver."""
    return run_container(tmp_path, spec, mode="trap")


def notes(run: Run) -> list[tuple[int, str | None]]:
    """(call number, path) of every notification, in order."""
    assert "notifications" in run.result, run.result
    return [(n["nr"], n.get("path")) for n in run.result["notifications"]]


def ok(run: Run) -> Run:
    """Assert the container ran to exit 0, nothing failed late and nothing was left behind."""
    assert "error" not in run.result, (run.result, run.output)
    assert run.exit_code == 0, (run.result, run.output)
    assert run.result["late"] == []
    assert run.result["children_left"] is False
    return run


def test_read_only_open_stays_native(tmp_path: Path, rootfs: Path) -> None:
    run = ok(trapped(tmp_path, base_spec(rootfs, ["cat", "/etc/passwd"])))
    assert run.lines[0].startswith("root:x:0:0:")
    assert notes(run) == [(NR_EXECVE, "/bin/cat")]  # the exec only: cat's open is native


def test_open_for_write_is_trapped(tmp_path: Path, rootfs: Path) -> None:
    run = ok(trapped(tmp_path, base_spec(rootfs, sh("echo x > /dev/shm/f"))))
    opens = [n for n in run.result["notifications"] if n["nr"] == NR_OPENAT]
    assert len(opens) == 1, run.result["notifications"]
    assert opens[0]["path"] == "/dev/shm/f"
    assert opens[0]["flags"] & 0o3 == 0o1  # O_WRONLY (with O_CREAT|O_TRUNC)


def test_mkdir_and_uname_are_trapped(tmp_path: Path, rootfs: Path) -> None:
    run = ok(trapped(tmp_path, base_spec(rootfs, ["mkdir", "/dev/shm/d"])))
    assert notes(run)[1:] == [(83, "/dev/shm/d")]  # mkdir
    run = ok(trapped(tmp_path, base_spec(rootfs, ["uname", "-n"], hostname="trapped")))
    assert run.output == "trapped\n"
    assert (NR_UNAME, None) in notes(run)


def test_path_calls_are_trapped(tmp_path: Path, rootfs: Path) -> None:
    script = (
        "cd /dev/shm && mkdir d && echo x > f && ln -s f s && ln f h && mv h m && chmod 600 f && "
        "chown 1:1 f && touch f && rm m s && rmdir d && hostname -F /etc/hostname; echo done"
    )
    run = ok(trapped(tmp_path, base_spec(rootfs, sh(script))))
    assert run.lines[-1] == "done"
    seen = {nr for nr, _ in notes(run)}
    expected = {
        "mkdir": {83, 258},
        "symlink": {88, 266},
        "link": {86, 265},
        "rename": {82, 264, 316},
        "chmod": {90, 268, 452},
        "chown": {92, 94, 260},
        "utimes": {132, 235, 261, 280},
        "unlink": {87, 263},
        "rmdir": {84, 263},
        "sethostname": {NR_SETHOSTNAME},
    }
    assert {name for name, nrs in expected.items() if not nrs & seen} == set(), sorted(seen)


def test_kernel_view_is_read_only(tmp_path: Path, rootfs: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    script = "echo x > /file; echo y > /rw/new; touch /etc/passwd; echo z > /dev/shm/ok && cat /dev/shm/ok"
    spec = base_spec(rootfs, sh(script))
    spec["mounts"] += [{"destination": "/rw", "type": "none", "source": str(data), "options": ["bind"]}]
    run = ok(trapped(tmp_path, spec))
    # CONTINUE lets the kernel do each write: it refuses those outside the tmpfs mounts.
    assert run.output.count("Read-only file system") == 3, run.output
    assert run.lines[-1] == "z"
    assert not (rootfs / "file").exists()
    assert not (data / "new").exists()


def test_start_container_hook_still_sees_writable_mounts(tmp_path: Path, rootfs: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (rootfs / "hook.sh").write_text("#!/bin/sh\necho hook > /data/by-hook && echo root > /by-hook\n")
    (rootfs / "hook.sh").chmod(0o755)
    spec = base_spec(rootfs, sh("cat /data/by-hook /by-hook; echo x > /data/by-program; true"))
    spec["mounts"] += [{"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind"]}]
    spec["hooks"] = {"start_container": [{"path": "/hook.sh"}]}
    run = ok(trapped(tmp_path, spec))
    # The hook ran in the container before the view went read-only; the program after.
    assert run.lines[:2] == ["hook", "root"]
    assert "Read-only file system" in run.lines[2]
    assert (data / "by-hook").exists() and not (data / "by-program").exists()


def test_other_architecture_is_killed(tmp_path: Path, rootfs: Path) -> None:
    run = trapped(tmp_path, base_spec(rootfs, ["/bin/int80"]))
    assert run.exit_code == -signal.SIGSYS, run.result
    assert notes(run) == [(NR_EXECVE, "/bin/int80")]


def _denied_numbers() -> dict[int, str]:
    numbers = {}
    for name in DENIED_SYSCALLS:
        nr = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
        if nr >= 0:
            numbers[nr] = name
    return numbers


def _our_capabilities() -> list[str]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":\t", 1) for line in f if ":\t" in line)
    bounding = int(fields["CapBnd"], 16)
    return sorted(name for name, bit in CAPABILITIES.items() if bounding >> bit & 1)


def test_denied_calls_fail_with_eperm(tmp_path: Path, rootfs: Path) -> None:
    numbers = _denied_numbers()
    assert len(numbers) > 40
    every = _our_capabilities()  # all of them, when the test runs with all
    caps = {"bounding": every, "effective": every, "permitted": every, "inheritable": [], "ambient": []}
    spec = with_process(base_spec(rootfs, ["/bin/denied", *map(str, numbers)]), capabilities=caps)
    run = ok(trapped(tmp_path, spec))
    results = {numbers[int(nr)]: int(err) for nr, err in (line.split() for line in run.lines)}
    assert results.keys() == set(numbers.values())
    assert {name: err for name, err in results.items() if err != errno.EPERM} == {}
    assert notes(run) == [(NR_EXECVE, "/bin/denied")]


def test_busybox_denied_commands(tmp_path: Path, rootfs: Path) -> None:
    script = "mount -t tmpfs none /mnt; unshare -n true; echo rc=$?"
    run = trapped(tmp_path, base_spec(rootfs, sh(script)))
    assert run.lines == [
        "mount: permission denied (are you root?)",  # busybox's words for EPERM
        "unshare: unshare(0x40000000): Operation not permitted",
        "rc=1",
    ]


def test_early_filter_still_sends_the_listener(tmp_path: Path, rootfs: Path) -> None:
    # Without no_new_privs and CAP_SYS_ADMIN the filter goes before setuid and capset.
    spec = with_process(base_spec(rootfs, sh("id -u; grep NoNewPrivs /proc/self/status")), uid=1000, gid=1000)
    run = ok(trapped(tmp_path, with_process(spec, no_new_privileges=False)))
    assert run.lines == ["1000", "NoNewPrivs:\t0"]
    assert notes(run)[0] == (NR_EXECVE, "/bin/sh")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["nosuch"], "exec nosuch: nosuch: executable file not found in $PATH"),
        (["/bin/nosuch"], "exec /bin/nosuch: [Errno 2] No such file or directory"),
        (["/etc/passwd"], "exec /etc/passwd: [Errno 13] Permission denied"),
        (["/bin"], "exec /bin: [Errno 13] Permission denied"),
    ],
)
def test_missing_binary_still_fails_release(tmp_path: Path, rootfs: Path, argv: list[str], error: str) -> None:
    run = trapped(tmp_path, base_spec(rootfs, argv))
    assert run.result["stage"] == "release"
    assert run.result["error"] == error
    assert "notifications" not in run.result
    assert run.exit_code == 127
    assert run.result["children_left"] is False


def test_exec_failure_after_the_listener_is_late_and_on_stderr(tmp_path: Path, rootfs: Path) -> None:
    bad = rootfs / "bin" / "bad"
    bad.write_text("neither ELF nor #!\n")
    bad.chmod(0o755)
    run = trapped(tmp_path, base_spec(rootfs, ["/bin/bad"]))
    assert run.exit_code == 127
    assert "error" not in run.result  # release had already returned the listener
    assert run.output == "exec failed: exec /bin/bad: [Errno 8] Exec format error\n"
    assert run.result["late"] == [{"error": "exec /bin/bad: [Errno 8] Exec format error", "errno": errno.ENOEXEC}]
    assert notes(run) == [(NR_EXECVE, "/bin/bad")]
