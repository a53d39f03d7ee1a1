"""A program whose trapped system calls the tests answer: `python -B notify_child.py SOCKFD SCENARIO [ARG...]`.

Run with sys.executable (and -B: an import that writes a .pyc would open it with O_CREAT, which
is trapped). It builds a seccomp filter with pyseccomp that returns uname, mkdir, mkdirat,
getppid and openat with O_CREAT to the supervisor (SCMP_ACT_NOTIFY) and allows everything else,
optionally moves into a new mount namespace first (scenario "paths"), loads the filter with the
raw seccomp(2) call and SECCOMP_FILTER_FLAG_NEW_LISTENER, sends the listener fd over the Unix
socket SOCKFD, and then makes the scenario's system calls, printing one JSON object per line on
stdout. Between the load and the send it makes no trapped call (that would deadlock: nobody
holds the listener yet). The test process serves the notifications; it never traps its own
interpreter's calls.

This file is also imported by the tests (as tests.unit.sentry.notify_child) for the parent
half: `spawn` starts the program and returns a `Child` holding the listener fd.
Only the standard library and pyseccomp are imported at module level, so that the program runs
standalone from any directory (and after pivot_root).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any

import pyseccomp

from services.sentry.seccomp import Listener

SYS_GETPPID = 110
SYS_SECCOMP = 317
SYS_PIVOT_ROOT = 155
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x20000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2
PROT_READ = 1
PROT_WRITE = 2
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20

#: The names the filter returns to the supervisor (openat only with O_CREAT).
TRAPPED = ("uname", "mkdir", "mkdirat", "getppid")


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mkdir.argtypes = (ctypes.c_void_p, ctypes.c_uint)
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def build_bpf() -> bytes:
    """The filter as classic BPF: NOTIFY for TRAPPED and for openat with O_CREAT, else ALLOW."""
    filt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in TRAPPED:
        filt.add_rule(pyseccomp.NOTIFY, name)
    filt.add_rule(pyseccomp.NOTIFY, "openat", pyseccomp.Arg(2, pyseccomp.MASKED_EQ, os.O_CREAT, os.O_CREAT))
    with tempfile.TemporaryFile() as f:
        filt.export_bpf(f)
        f.seek(0)
        return f.read()


def load_with_listener(libc: ctypes.CDLL, bpf: bytes) -> int:
    """no_new_privs, then seccomp(SET_MODE_FILTER, NEW_LISTENER): the listener fd."""
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    program = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    return _check(
        libc.syscall(
            SYS_SECCOMP,
            SECCOMP_SET_MODE_FILTER,
            ctypes.c_uint(SECCOMP_FILTER_FLAG_NEW_LISTENER),
            ctypes.byref(prog),
        ),
        "seccomp",
    )


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _getppid(libc: ctypes.CDLL) -> dict[str, Any]:
    ret = int(libc.syscall(SYS_GETPPID))
    return {"ret": ret, "errno": ctypes.get_errno() if ret == -1 else 0}


def _enter_root(libc: ctypes.CDLL, mode: str, root: str) -> None:
    """mode "pivot": a new mount namespace with root as /, the old root detached; "chroot": chroot."""
    if mode == "chroot":
        os.chroot(root)
        return
    _check(libc.unshare(CLONE_NEWNS), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount private")
    _check(libc.mount(root.encode(), root.encode(), None, MS_BIND | MS_REC, None), "bind")
    os.chdir(root)
    _check(libc.syscall(SYS_PIVOT_ROOT, b".", b"old"), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/old", MNT_DETACH), "umount old root")


def _prepare(libc: ctypes.CDLL, scenario: str, args: list[str]) -> dict[str, Any]:
    """Whatever a scenario needs set up before the filter is loaded; what it reports or reuses."""
    state: dict[str, Any] = {}
    if scenario == "creds":
        os.umask(0o027)
        os.setgroups([1234, 5678])
        libc.setfsgid(8765)
        libc.setfsuid(4321)
    elif scenario == "boundary":
        page = os.sysconf("SC_PAGE_SIZE")
        # Pages: data, hole, data, hole. Holes are unmapped, not PROT_NONE: /proc/PID/mem
        # reads PROT_NONE pages (FOLL_FORCE).
        base = _check(libc.mmap(None, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), "mmap")
        _check(libc.munmap(base + page, page), "munmap")
        _check(libc.munmap(base + 3 * page, page), "munmap")
        edge = (args[0] + "\0").encode()
        state["edge"] = base + page - len(edge)  # the NUL is the last byte before the first hole
        ctypes.memmove(state["edge"], edge, len(edge))
        state["unterminated"] = base + 3 * page - 16
        ctypes.memmove(state["unterminated"], b"x" * 16, 16)  # no NUL before the hole
    elif scenario == "paths":
        mode, root, inside_file, outside_file = args
        # Opened before the move: their mounts belong to the parent's mount namespace.
        state["inside_fd"] = os.open(inside_file, os.O_RDONLY)
        state["outside_fd"] = os.open(outside_file, os.O_RDONLY)
        _enter_root(libc, mode, root)
        os.chdir("/data/sub")
        state["container_fd"] = os.open("/data/file", os.O_RDONLY)
        state["deleted_fd"] = os.open("/data/doomed", os.O_RDWR | os.O_CREAT, 0o600)
        os.unlink("/data/doomed")
        state["pipe_fd"], _ = os.pipe()
    return state


def _act(libc: ctypes.CDLL, scenario: str, args: list[str], state: dict[str, Any]) -> None:
    """The scenario's (trapped) calls, once the listener is in the parent's hands."""
    if scenario == "getppid":
        for _ in range(int(args[0]) if args else 1):
            _say(_getppid(libc))
    elif scenario == "mkdir":
        try:
            os.mkdir(args[0])
            _say({"ok": True, "exists": os.path.isdir(args[0])})
        except OSError as e:
            _say({"ok": False, "errno": e.errno, "exists": os.path.isdir(args[0])})
    elif scenario == "open_creat":
        plain = os.open(sys.executable, os.O_RDONLY)  # no O_CREAT: never trapped
        os.close(plain)
        fd = os.open(args[0], os.O_WRONLY | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        try:
            os.write(fd, b"hello from the child")
        except OSError as e:  # fd is not what it opened (an install lost with its sentry: 0)
            _say({"fd": fd, "write_errno": e.errno})
            return
        _say({"fd": fd, "fifo": stat.S_ISFIFO(st.st_mode), "created": os.path.exists(args[0])})
        os.close(fd)
    elif scenario == "uname":
        u = os.uname()
        _say({"sysname": u.sysname, "nodename": u.nodename, "release": u.release, "machine": u.machine})
    elif scenario == "boundary":
        results = []
        for addr in (state["edge"], state["unterminated"]):
            ret = libc.mkdir(ctypes.c_void_p(addr), 0o755)
            results.append(0 if ret == 0 else ctypes.get_errno())
        _say({"results": results, "exists": os.path.isdir(args[0])})
    elif scenario == "paths":
        _say(state)  # the fd numbers, before the trapped call during which they are checked
        _say(_getppid(libc))
    elif scenario in ("creds", "block"):
        _say(_getppid(libc))
    elif scenario != "exit":
        raise SystemExit(f"unknown scenario {scenario}")


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    scenario, args = argv[2], argv[3:]
    libc = _libc()
    bpf = build_bpf()
    state = _prepare(libc, scenario, args)
    listener = load_with_listener(libc, bpf)
    # No trapped call until the listener is out of this process.
    socket.send_fds(sock, [b"L"], [listener])
    os.close(listener)
    sock.close()
    _act(libc, scenario, args, state)
    return 0


# ---------------------------------------------------------------------------------------------
# The parent half, imported by the tests.

HERE = os.path.abspath(__file__)


class Child:
    """One running notify_child: the process, its listener fd and its JSON output."""

    def __init__(self, proc: subprocess.Popen[bytes], listener_fd: int) -> None:
        self.proc = proc
        self.listener_fd = listener_fd
        self._pending = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_readable(self, fd: int, timeout: float = 10.0) -> int:
        """Poll fd for input; the revents, or an AssertionError after timeout seconds."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        events = poller.poll(timeout * 1000)
        assert events, f"fd {fd} not readable after {timeout} s"
        return events[0][1]

    def line(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next JSON line the child printed."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the child; stderr: {self.stderr()}"
            self.wait_readable(fd, left)
            chunk = os.read(fd, 65536)
            assert chunk, f"child closed stdout; stderr: {self.stderr()}"
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> int:
        """SIGKILL and reap; the wait status."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        if self.listener_fd >= 0:
            os.close(self.listener_fd)
            self.listener_fd = -1


def spawn(scenario: str, *args: str) -> Child:
    """Start the program; return once its listener fd has arrived (the Child owns it)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent, child:
        proc = subprocess.Popen(
            [sys.executable, "-B", HERE, str(child.fileno()), scenario, *args],
            pass_fds=[child.fileno()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        child.close()
        parent.settimeout(10)
        try:
            _, fds, _, _ = socket.recv_fds(parent, 16, 1)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if not fds:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"no listener from the child: {err.decode(errors='replace')}")
    return Child(proc, fds[0])


def started(scenario: str, *args: str) -> tuple[Child, Listener]:
    """A child running scenario, and the listener it handed over (the caller owns both)."""
    child = spawn(scenario, *args)
    listener = Listener(child.listener_fd)
    child.listener_fd = -1
    return child, listener


if __name__ == "__main__":
    sys.exit(main(sys.argv))
