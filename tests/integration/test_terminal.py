"""Container terminals: the pty master through --console-socket, the refusals, and run's relay."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.zerovisor import Zerovisor, sh
from tests.rootfs import make_bundle

pytestmark = pytest.mark.integration


def with_terminal(bundle: Path, terminal: bool = True) -> Path:
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = terminal
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def read_until_eof(fd: int, timeout: float = 30, done: subprocess.Popen[bytes] | None = None) -> bytes:
    """Everything a pty master yields until EOF or EIO (every replica closed).

    With done, also stop once that process has exited and the master has nothing more to read.
    """
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            if done is not None and done.poll() is not None:
                break
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        out += chunk
    else:
        raise AssertionError(f"the terminal did not close within {timeout} s; read so far: {out!r}")
    return out


def on_pty(argv: list[str], rows: int = 24, cols: int = 80) -> tuple[subprocess.Popen[bytes], int]:
    """argv started with a new pty of rows x cols as its stdio and controlling terminal; the
    process and the master (ours: the caller closes it)."""
    master, replica = os.openpty()
    try:
        fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        cli = subprocess.Popen(argv, cwd=REPO, stdin=replica, stdout=replica, stderr=replica, start_new_session=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(replica)
    return cli, master


def assert_nothing_left(zv: Zerovisor) -> None:
    assert json.loads(zv("list", "--format", "json").stdout) == []


def test_console_socket_gets_the_master_of_an_interactive_shell(
    zv: Zerovisor, tmp_path: Path, console_listener: tuple[str, socket.socket]
) -> None:
    path, listener = console_listener
    bundle = with_terminal(make_bundle(tmp_path / "bundle", ["sh"]))
    # The CLI's one connect and send complete on the listen backlog, before we accept.
    zv("create", "--console-socket", path, "-b", str(bundle), "tty")
    conn, _ = listener.accept()
    with conn:
        name, fds, _, _ = socket.recv_fds(conn, 1024, 4)
    assert name == b"/dev/ptmx" and len(fds) == 1, (name, fds)
    master = fds[0]
    try:
        assert os.isatty(master)
        assert zv.state("tty")["status"] == "created"
        zv("start", "tty")
        os.write(master, b"echo $((6*7)); tty; exit 5\n")
        output = read_until_eof(master).decode(errors="replace")
    finally:
        os.close(master)
    assert "42" in output and "/dev/pts/" in output, output
    assert zv("wait", "tty", check=False).returncode == 5
    zv("delete", "tty")
    assert_nothing_left(zv)


def test_terminal_without_console_socket_is_refused(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = with_terminal(sh(tmp_path, "exec sleep 1000"))
    out = zv("create", "-b", str(bundle), "lonely", check=False)
    assert out.returncode == 3, out
    assert "console-socket" in out.stderr and "terminal" in out.stderr, out.stderr
    assert_nothing_left(zv)
    detached = zv("run", "-d", "-b", str(bundle), "lonely", check=False)
    assert detached.returncode == 3 and "console-socket" in detached.stderr, detached
    assert_nothing_left(zv)


def test_console_socket_without_terminal_is_refused(
    zv: Zerovisor, tmp_path: Path, console_listener: tuple[str, socket.socket]
) -> None:
    path, listener = console_listener
    bundle = with_terminal(sh(tmp_path, "exec sleep 1000"), terminal=False)
    out = zv("create", "--console-socket", path, "-b", str(bundle), "noterm", check=False)
    assert out.returncode == 3, out
    assert "console-socket" in out.stderr and "process.terminal" in out.stderr, out.stderr
    assert_nothing_left(zv)
    listener.settimeout(0)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_run_relays_the_terminal_to_its_own_stdio(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = with_terminal(sh(tmp_path, "tty; echo relayed; exit 4"))
    zv("list")  # the services start here, outside the pty: they must not hold its replica
    cli, master = on_pty(zv.argv("run", "-b", str(bundle), "relay"))
    try:
        output = read_until_eof(master, timeout=60, done=cli).decode(errors="replace")
        code = cli.wait(timeout=30)
    finally:
        os.close(master)
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert "relayed" in output and "/dev/pts/" in output, output
    assert code == 4, output
    assert_nothing_left(zv)
