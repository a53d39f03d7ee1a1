"""Without directfs, the sentry keeps answering while a file call waits on the gofer, and a
gofer that never answers costs the program EIO, not a hang; with it (the default), file calls
never wait on the gofer at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from common.rundir import RunDir
from services.sentry.directfs import DIRECTFS_ENV
from tests.cbuild import CBuild, cbin_fixture, install_into  # noqa: F401 - the cbin fixture
from tests.conftest import REPO
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration


def system_count(zv: Zerovisor, cid: str) -> int:
    stats = json.loads(zv("events", "--stats", cid).stdout)
    return int(stats["data"]["syscalls"].get("system", 0))


def test_a_stalled_gofer_stalls_only_file_calls(
    zv: Zerovisor, tmp_path: Path, cbin: CBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    # File calls that go to the gofer: with directfs the sentry answers them itself.
    monkeypatch.setenv(DIRECTFS_ENV, "0")
    spinner = sh(tmp_path, "/uname_loop 100000000", name="spinner")
    install_into(spinner / "rootfs", cbin("uname_loop"))
    writer = sh(tmp_path, "sleep 2; if touch /made; then echo made; else echo failed; fi", name="writer")
    zv("run", "-d", "-b", str(spinner), "spinner")
    gofer = RunDir.at(zv.root).running_pid("gofer")
    assert gofer is not None
    with tempfile.TemporaryFile("w+") as out:
        runner = subprocess.Popen(
            zv.argv("run", "-b", str(writer), "writer"), stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            time.sleep(1)  # the writer's shell has exec'd (execve asks the gofer) and sleeps
            os.kill(gofer, signal.SIGSTOP)
            try:
                before = system_count(zv, "spinner")
                time.sleep(1)
                # The writer's touch waits on the stopped gofer; the spinner's unames go on.
                assert system_count(zv, "spinner") > before
                assert runner.poll() is None
                # Past the call's deadline the program gets EIO, not a hang.
                assert runner.wait(timeout=60) == 0
            finally:
                os.kill(gofer, signal.SIGCONT)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
        out.seek(0)
        output = out.read()
    assert "failed" in output and "Input/output error" in output, output
    assert not (writer / "rootfs" / "made").exists()
    # The gofer is back: file calls work again.
    assert zv("run", "-b", str(sh(tmp_path, "touch /again && echo ok", name="again")), "again").stdout == "ok\n"
    zv("kill", "spinner", "KILL")


def test_with_directfs_the_sentry_writes_while_the_gofer_is_stopped(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "sleep 1000")
    zv("run", "-d", "-b", str(bundle), "c")
    gofer = RunDir.at(zv.root).running_pid("gofer")
    assert gofer is not None
    os.kill(gofer, signal.SIGSTOP)
    try:
        # The program cannot write its read-only rootfs itself, and the gofer answers nothing:
        # the sentry created the file, on the mount fd the gofer donated.
        out = zv("exec", "c", "sh", "-c", "mkdir /made && echo by-the-sentry > /made/file && cat /made/file")
    finally:
        os.kill(gofer, signal.SIGCONT)
    assert out.stdout == "by-the-sentry\n"
    assert (bundle / "rootfs" / "made" / "file").read_text() == "by-the-sentry\n"
    zv("delete", "-f", "c")
