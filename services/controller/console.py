"""The CLI side of a container terminal: what ``controller`` does with the pty master it receives.

The container's init allocates the pty inside the container and its master fd arrives in the CLI.
This module owns the two things runc does with it next: hand it to a ``--console-socket`` listener
(``send_console``), or relay it to the CLI's own stdio when there is no such socket
(``TerminalRelay``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
import termios
import threading
import tty
from types import TracebackType
from typing import Any

from common.errors import InvalidArgument, NotFound, ServiceUnavailable, ZerovisorError

#: The name sent along with the fd. runc sends ``console.Name()`` of the master, which is the
#: path it was opened by; receivers (containerd's go-runc, recvtty) use it as the file's name only.
CONSOLE_NAME = "/dev/ptmx"

_CHUNK = 65536
_WINSIZE_LEN = 8  # struct winsize: four unsigned shorts


def send_console(socket_path: str, master_fd: int) -> None:
    """Send ``master_fd`` to the listener at ``socket_path`` the way runc's ``--console-socket`` does.

    One connection, one ``sendmsg`` carrying ``CONSOLE_NAME`` as data and the fd as SCM_RIGHTS.
    The caller keeps ownership of ``master_fd``: the receiver gets its own duplicate, so the caller
    may (and normally should) close its copy afterwards.

    Raises NotFound if nothing exists at the path, InvalidArgument if the path cannot name a
    listening socket (or ``master_fd`` is not an open fd), ServiceUnavailable if the connection or
    the send fails.
    """
    where = f"console socket {socket_path!r}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(socket_path)
        except FileNotFoundError:
            raise NotFound(f"{where} does not exist") from None
        except OSError as exc:
            if exc.errno is None:  # e.g. "AF_UNIX path too long": no syscall was made
                raise InvalidArgument(f"{where}: {exc}") from None
            if exc.errno == errno.ECONNREFUSED and not _is_socket(socket_path):
                raise InvalidArgument(f"{where} is not a socket") from None
            raise ServiceUnavailable(f"{where}: cannot connect: {exc.strerror}") from exc
        try:
            sent = socket.send_fds(sock, [CONSOLE_NAME.encode()], [master_fd])
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise InvalidArgument(f"console fd {master_fd} is not open") from None
            raise ServiceUnavailable(f"{where}: cannot send the console: {exc.strerror}") from exc
    if sent != len(CONSOLE_NAME):
        raise ServiceUnavailable(f"{where}: short send of the console ({sent} bytes)")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class TerminalRelay:
    """Relay a pty master to the CLI's stdin/stdout, as ``runc run`` does without a console socket.

    Owns ``master_fd`` from construction on (``close()`` closes it, even if never started). Does
    not own ``stdin_fd``/``stdout_fd``: their file status flags are never changed, because they
    are usually shared with the user's shell; only stdin's termios is changed, and restored.
    """

    def __init__(self, master_fd: int, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
        self._master = master_fd
        self._stdin = stdin_fd
        self._stdout = stdout_fd
        self._saved_termios: list[Any] | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._drained = threading.Event()
        self._closed = False

    def __enter__(self) -> TerminalRelay:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Raw-mode stdin if it is a tty, copy its window size, and start the copying thread."""
        if self._closed or self._thread is not None:
            raise ZerovisorError("terminal relay already started or closed")
        if os.isatty(self._stdin):
            self._saved_termios = termios.tcgetattr(self._stdin)
            # Raw: keystrokes (^C included) go to the container's tty, whose line discipline
            # interprets them; cooking them here too would double-process them.
            tty.setraw(self._stdin, termios.TCSANOW)
        self.resize()
        # The master is ours, so non-blocking is safe: a container not reading its input must not
        # block us from draining its output (it would then block on output, a deadlock).
        os.set_blocking(self._master, False)
        # Self-pipe: close() wakes the poll without closing fds under it.
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="terminal-relay", daemon=True)
        self._thread.start()

    def resize(self) -> None:
        """Copy stdin's window size to the container's tty; call from the SIGWINCH handler."""
        if self._closed or not os.isatty(self._stdin):
            return
        # Best effort: the terminal may be gone or the container exiting; a size is not worth
        # failing (or raising inside a signal handler) for.
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(self._stdin, termios.TIOCGWINSZ, bytes(_WINSIZE_LEN))
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, size)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the container's side closed and its output reached stdout; False on timeout."""
        return self._drained.wait(timeout)

    def close(self) -> None:
        """Stop relaying, restore stdin's terminal mode and close the master. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
            # Bounded: the thread could be stuck writing to a stdout nobody reads.
            self._thread.join(timeout=5)
        if self._saved_termios is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._stdin, termios.TCSANOW, self._saved_termios)
        for fd in (self._master, *(self._wake or ())):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        try:
            self._pump()
        finally:
            self._drained.set()

    def _pump(self) -> None:
        assert self._wake is not None
        master, stdin, wake = self._master, self._stdin, self._wake[0]
        readable = select.POLLIN | select.POLLHUP | select.POLLERR
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        poller.register(master, select.POLLIN)
        poller.register(stdin, select.POLLIN)
        stdin_open, stdin_polled, pending, output_ok = True, True, b"", True
        while True:
            # poll() retries EINTR itself (PEP 475); it blocks, so no busy loop.
            for fd, events in poller.poll():
                if fd == wake:
                    return
                if fd == master and events & select.POLLOUT and pending:
                    try:
                        pending = pending[os.write(master, pending) :]
                    except BlockingIOError:
                        pass
                    except OSError:  # EIO: the container's side is gone; the read below ends us
                        pending = b""
                if fd == master and events & readable:
                    try:
                        data = os.read(master, _CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:  # EIO once every replica fd is closed and the buffer is empty
                        return
                    if not data:
                        return
                    if output_ok:
                        output_ok = _write_all(self._stdout, data)
                if fd == stdin and events & (readable | select.POLLNVAL):
                    try:
                        data = b"" if events & select.POLLNVAL else os.read(stdin, _CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:  # a hung-up terminal: treat as end of input
                        data = b""
                    if data:
                        pending += data
                    else:
                        # End of input only ends input: the container may still be writing.
                        stdin_open = False
            # Backpressure: read no more input while some is still waiting for the container.
            # Unregister rather than mask: poll reports POLLHUP even for an empty event mask.
            poller.modify(master, select.POLLIN | (select.POLLOUT if pending else 0))
            want_stdin = stdin_open and not pending
            if want_stdin != stdin_polled:
                if want_stdin:
                    poller.register(stdin, select.POLLIN)
                else:
                    poller.unregister(stdin)
                stdin_polled = want_stdin


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False if ``fd`` failed, so the caller discards (but keeps draining)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            # stdout is not ours to make blocking; wait for room instead of spinning.
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
        except OSError:
            return False
    return True
