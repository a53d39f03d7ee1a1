"""`controller exec` with a terminal: --console-socket hands the pty master to a receiver that
drives a shell through it; --tty alone relays it to the command's own stdio, with its window size
forwarded on SIGWINCH; signals to the command reach the terminal's foreground process group.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.test_exec import running
from tests.integration.test_terminal import on_pty, read_until_eof
from tests.integration.zerovisor import Zerovisor

pytestmark = pytest.mark.integration


def shell_on_console(
    zv: Zerovisor, tmp_path: Path, console_listener: tuple[str, socket.socket]
) -> tuple[subprocess.Popen[bytes], int]:
    """`exec --tty --console-socket` of a shell in a running container: the command, and the pty
    master its console socket received (ours)."""
    path, listener = console_listener
    running(zv, tmp_path)
    cli = subprocess.Popen(zv.argv("exec", "--tty", "--console-socket", path, "c", "sh"), cwd=REPO)
    conn, _ = listener.accept()
    with conn:
        name, fds, _, _ = socket.recv_fds(conn, 1024, 4)
    assert name == b"/dev/ptmx" and len(fds) == 1, (name, fds)
    return cli, fds[0]


def read_until(fd: int, text: bytes, timeout: float = 30) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while text not in out:
        assert time.monotonic() < deadline, out
        try:
            out += os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.02)
    return out


def test_console_socket_receiver_drives_a_shell(
    zv: Zerovisor, tmp_path: Path, console_listener: tuple[str, socket.socket]
) -> None:
    cli, master = shell_on_console(zv, tmp_path, console_listener)
    try:
        os.write(master, b"echo $((6*7)); tty; exit 5\n")
        output = read_until_eof(master, done=cli).decode(errors="replace")
    finally:
        os.close(master)
    assert "42" in output and "/dev/pts/" in output, output
    assert cli.wait(timeout=30) == 5
    # The exec'd shell was on its own terminal of the container's devpts, not the init's.
    ps = zv("ps", "c").stdout
    assert "pts/" not in ps


def test_sigint_reaches_the_foreground_group(
    zv: Zerovisor, tmp_path: Path, console_listener: tuple[str, socket.socket]
) -> None:
    cli, master = shell_on_console(zv, tmp_path, console_listener)
    os.set_blocking(master, False)
    try:
        # The shell survives SIGINT; the sleep it runs in the foreground does not (and, as for
        # a ^C typed at a terminal, the shell drops the rest of that command line).
        os.write(master, b"sleep 1000\n")
        deadline = time.monotonic() + 30
        # Two sleeps: the init's, and the one the shell runs in the foreground.
        while [line.split()[-1] for line in zv("ps", "c").stdout.splitlines()[1:]].count("sleep") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cli.send_signal(signal.SIGINT)
        os.write(master, b"echo after=$?\n")
        read_until(master, b"after=130")
        os.write(master, b"exit 6\n")
        assert cli.wait(timeout=30) == 6
    finally:
        os.close(master)


def test_tty_relays_and_forwards_the_window_size(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    cli, master = on_pty(zv.argv("exec", "-t", "c", "sh"), rows=24, cols=80)
    try:
        os.set_blocking(master, False)
        # The markers are computed so that the terminal's echo of the line does not match them.
        os.write(master, b"stty size; echo one-$((40+2))\n")
        assert b"24 80" in read_until(master, b"one-42")
        # Our terminal changes size: the command hears SIGWINCH and passes the size on.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
        cli.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"stty size; echo two-$((40+2))\n")
        assert b"40 132" in read_until(master, b"two-42")
        os.write(master, b"exit 3\n")
        assert cli.wait(timeout=30) == 3
    finally:
        os.close(master)
        if cli.poll() is None:
            cli.kill()
            cli.wait()
