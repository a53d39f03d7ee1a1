"""The `controller` side of the command server: hand the command to a warm worker, stand for it
until it ends, and exit as it did.

This module runs before anything else in every `controller` process, so it imports only what
the interpreter has loaded already or costs next to nothing: no click, dataclasses or logging,
and the C halves of socket and signal (_socket, _signal) without their enum wrappers, whose
import (enum, selectors) alone was ~6 ms of a ~12 ms client here.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no stub, no enum import
import _socket
import os
import struct
import sys

from services.controller.cmdserver.protocol import (
    EVENT_SIZE,
    EXITED,
    KILLED,
    MAX_FDS,
    MAX_REQUEST,
    REFUSED,
    SIGNAL,
    STALE,
    SWITCH,
    Request,
    decode_event,
    encode_event,
    encode_request,
    install_key,
    socket_name,
)

#: The signals a client passes on to its worker: those a command acts on (exec and run forward
#: them to the container) or dies of.
FORWARDED: tuple[int, ...] = (
    _signal.SIGHUP,
    _signal.SIGINT,
    _signal.SIGQUIT,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
    _signal.SIGALRM,
    _signal.SIGTERM,
)
#: Exit status when the server went away while the command ran: cli.EXIT_REMOTE (a service that
#: failed), which this module cannot import cheaply.
LOST_STATUS = 3


def run_via_server(argv: list[str]) -> int | None:
    """Have the command server run argv; its exit status, or None when this process must run the
    command itself (not eligible, no server, or refused). Does not return when a signal killed
    the worker: this process dies of the same signal."""
    if not eligible(argv):
        return None
    key = install_key()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(socket_name(key, os.getuid()))
        except (ConnectionRefusedError, FileNotFoundError):
            start_server(key)
            return None
        except OSError:
            return None
        if not _send_request(sock, key, argv):
            return None
        return _stand_for_worker(sock, key)
    finally:
        sock.close()


def eligible(argv: list[str]) -> bool:
    """Whether a worker can run argv for us: not switched off, no terminal on stdio (the
    terminal's job control and signals are for processes of our session), and not `serve`
    (a service runs in the process systemd started)."""
    if os.environ.get(SWITCH) == "0" or "serve" in argv[1:]:
        return False
    return not any(os.isatty(fd) for fd in (0, 1, 2))


def _send_request(sock: _socket.socket, key: str, argv: list[str]) -> bool:
    """Send the request with our files; False if it cannot go (nothing ran then)."""
    fds = _inherited_fds()
    if fds is None:
        return False
    try:
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False  # a working directory removed under us: only our own process still has it
    umask = os.umask(0)
    os.umask(umask)
    ignored = [int(s) for s in _signal.valid_signals() if _ignored(s)]
    blocked = [int(s) for s in _signal.pthread_sigmask(_signal.SIG_BLOCK, [])]
    env = [k + b"=" + v for k, v in os.environb.items()]
    data = encode_request(Request(key, umask, argv, env, fds, ignored, blocked))
    try:
        if len(data) > MAX_REQUEST:
            return False
        files = struct.pack(f"{len(fds) + 1}i", *fds, cwd)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, files)])
        # Only a remainder: a send of nothing can fail on a connection the server has already
        # answered and closed, and the command would then run a second time, here.
        if sent < len(data):
            sock.sendall(data[sent:])
    except OSError:
        return False  # the server runs nothing before it has the whole request
    finally:
        os.close(cwd)
    return True


def _ignored(signo: int) -> bool:
    try:
        return bool(_signal.getsignal(signo) == _signal.SIG_IGN)
    except ValueError:
        return False


def _inherited_fds() -> list[int] | None:
    """Our inheritable fds (what we were given; ours are close-on-exec), or None if there are
    too many to send or no /proc to list them."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    fds = []
    for name in names:
        fd = int(name)
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            pass  # the listing's own fd, closed by now
    return sorted(fds) if len(fds) <= MAX_FDS else None


def _stand_for_worker(sock: _socket.socket, key: str) -> int | None:
    """Pass our signals on until the worker's end comes back; its status (None if refused)."""

    def forward(signo: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib is one import more for every command
            sock.send(encode_event(SIGNAL, signo))
        except OSError:
            pass  # the server is gone: the EOF below says so

    # Ignored ones too: the worker starts with our dispositions, and a command that catches a
    # signal (exec and run catch these) catches it whatever it inherited, as it would here.
    previous = {signo: _signal.signal(signo, forward) for signo in FORWARDED}
    try:
        event = _read_event(sock)
    finally:
        for signo, handler in previous.items():
            _signal.signal(signo, handler)
    if event is None:
        sys.stderr.write("controller: the command server went away before the command finished\n")
        return LOST_STATUS
    kind, value = event
    if kind == EXITED:
        return value
    if kind == KILLED:
        _signal.signal(value, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [value])
        os.kill(os.getpid(), value)
        return 128 + value  # a signal that does not kill (SIGCONT, SIGCHLD): as a shell reports it
    if kind == REFUSED and value == STALE:
        start_server(key)
    return None


def _read_event(sock: _socket.socket) -> tuple[bytes, int] | None:
    """The next event from the server, or None at EOF."""
    data = b""
    while len(data) < EVENT_SIZE:
        try:
            chunk = sock.recv(EVENT_SIZE - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return decode_event(data)


def start_server(key: str) -> None:
    """Start a command server for key in the background, detached from us (its own session, no
    fd of ours, not our child), and return at once; the next command uses it. If another one
    won the race, the new one exits on its own."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1 << 30)
        os.chdir("/")
        # From "/", `-m` finds our package only on the path: put this checkout first.
        root = key.split("\0", 1)[0]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-m", "services.controller.cmdserver", key.encode().hex()]
        os.execve(sys.executable, argv, env)
    finally:
        os._exit(127)
