"""services.sentry.taskmem: memory, credentials and paths of real (trapped) child processes."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from services.sentry.seccomp import Listener, Notification
from services.sentry.taskinfo import forget_mount_tables, task_creds, task_cwd, task_fd_path
from services.sentry.taskmem import PAGE_SIZE, BadAddress, NotAPath, StringTooLong, TaskGone, TaskMemory
from tests.conftest import open_fds
from tests.unit.sentry.notify_child import Child, started

NR_MKDIR = 83
NR_GETPPID = 110
NR_MKDIRAT = 258

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and chroot need root")


@pytest.fixture
def memory() -> Iterator[TaskMemory]:
    with TaskMemory() as mem:
        yield mem


def next_notification(child: Child, listener: Listener) -> Notification:
    child.wait_readable(listener.fileno())
    notif = listener.recv()
    assert notif is not None, child.stderr()
    return notif


def mkdir_path_arg(notif: Notification) -> int:
    assert notif.nr in (NR_MKDIR, NR_MKDIRAT), notif
    return notif.args[0] if notif.nr == NR_MKDIR else notif.args[1]


def test_string_ending_at_a_page_boundary(tmp_path: Path, memory: TaskMemory) -> None:
    target = str(tmp_path / "edge")
    child, listener = started("boundary", target)
    with listener:
        try:
            # 1: the NUL is the last byte before an unmapped page.
            notif = next_notification(child, listener)
            addr = mkdir_path_arg(notif)
            assert (addr + len(target) + 1) % PAGE_SIZE == 0
            assert memory.read_string(notif.pid, addr) == target.encode()
            assert memory.read(notif.pid, addr, len(target) + 1) == target.encode() + b"\0"
            with pytest.raises(BadAddress):
                memory.read(notif.pid, addr, len(target) + 2)
            buf = bytearray(len(target))
            memory.read_into(notif.pid, addr, buf)
            assert buf == target.encode()
            with pytest.raises(BadAddress):
                memory.read_into(notif.pid, addr, bytearray(len(target) + 2))
            with pytest.raises(StringTooLong):
                memory.read_string(notif.pid, addr, max_len=5)
            assert listener.respond_continue(notif.id)
            # 2: no NUL before the unmapped page: EFAULT, as the kernel would say.
            notif = next_notification(child, listener)
            with pytest.raises(BadAddress):
                memory.read_string(notif.pid, mkdir_path_arg(notif))
            assert listener.respond(notif.id, error=errno.EFAULT)
            assert child.line() == {"results": [0, errno.EFAULT], "exists": True}
        finally:
            child.close()


def test_unmapped_and_kernel_addresses_are_bad(memory: TaskMemory) -> None:
    child, listener = started("block")
    with listener:
        try:
            notif = next_notification(child, listener)
            for addr in (0, 8, 0xFFFF_FFFF_FFFF_F000, 1 << 62):
                with pytest.raises(BadAddress):
                    memory.read(notif.pid, addr, 8)
                with pytest.raises(BadAddress):
                    memory.read_string(notif.pid, addr)
                with pytest.raises(BadAddress):
                    memory.write(notif.pid, addr, b"x")
            assert listener.respond(notif.id)
        finally:
            child.close()


def test_task_gone_after_kill(memory: TaskMemory) -> None:
    child, listener = started("block")
    with listener:
        try:
            notif = next_notification(child, listener)
            assert memory.read(notif.pid, notif.instruction_pointer, 2)  # caches the fd
            child.kill()
            with pytest.raises(TaskGone):
                memory.read(notif.pid, notif.instruction_pointer, 2)
            with pytest.raises(TaskGone):
                memory.read_string(notif.pid, notif.instruction_pointer)
            with pytest.raises(TaskGone):
                task_creds(memory, notif.pid)
            with pytest.raises(TaskGone):
                task_cwd(notif.pid)
            assert len(memory) == 0
        finally:
            child.close()


def test_task_creds_of_a_trapped_task(memory: TaskMemory) -> None:
    child, listener = started("creds")
    with listener:
        try:
            notif = next_notification(child, listener)
            assert notif.nr == NR_GETPPID
            assert task_creds(memory, notif.pid) == (4321, 8765, [1234, 5678], 0o027)
            assert listener.respond(notif.id, val=1)
            assert child.line()["ret"] == 1
        finally:
            child.close()
    assert task_creds(memory, os.getpid())[3] == _own_umask()


def test_status_is_read_through_one_fd_while_its_task_lives(memory: TaskMemory) -> None:
    child, listener = started("block")
    with listener:
        try:
            notif = next_notification(child, listener)
            before = open_fds()
            first = memory.status(notif.pid)
            assert b"\nUmask:" in first
            opened = open_fds() - before
            assert len(opened) == 1  # the cached fd
            assert memory.status(notif.pid) == first
            assert open_fds() - before == opened
            memory.forget_memory(notif.pid)  # as after an exec: the status fd stays
            assert memory.status(notif.pid) == first
            assert open_fds() - before == opened
            child.kill()
            with pytest.raises(TaskGone):
                memory.status(notif.pid)
            assert open_fds() == before  # the dead task's fd was closed
        finally:
            child.close()


def _own_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Prints the address of a marker string, waits for a line, then execs a second program that
#: does the same with another marker (a new mm at the same pid).
EXEC_PROGRAM = textwrap.dedent(
    """
    import ctypes, os, sys
    marker = ctypes.create_string_buffer(sys.argv[1].encode())
    print(ctypes.addressof(marker), flush=True)
    sys.stdin.readline()
    if len(sys.argv) > 2:
        os.execv(sys.executable, [sys.executable, "-c", sys.argv[2], sys.argv[3]])
    """
)


@contextlib.contextmanager
def exec_program(after: str) -> Iterator[tuple[subprocess.Popen[str], IO[str], IO[str]]]:
    """EXEC_PROGRAM with "before exec", then after once it exec'd; (process, stdin, stdout),
    killed and reaped on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EXEC_PROGRAM, "before exec", EXEC_PROGRAM, after],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield proc, proc.stdin, proc.stdout
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_cached_fd_is_reopened_after_exec(memory: TaskMemory) -> None:
    with exec_program("after the exec") as (proc, stdin, stdout):
        addr = int(stdout.readline())
        assert memory.read_string(proc.pid, addr) == b"before exec"
        memory.write(proc.pid, addr, b"BEFORE")
        assert memory.read(proc.pid, addr, 11) == b"BEFORE exec"
        stdin.write("\n")
        stdin.flush()
        addr = int(stdout.readline())
        # The cached fd still points at the old mm: read() notices and reopens.
        assert memory.read_string(proc.pid, addr) == b"after the exec"
        memory.forget(proc.pid)
        assert len(memory) == 0
        buf = bytearray(5)
        memory.read_into(proc.pid, addr, buf)
        assert buf == b"after"
        stdin.write("\n")
        stdin.flush()
        assert proc.wait(10) == 0
    with pytest.raises(TaskGone):
        memory.read(proc.pid, addr, 1)


def test_a_write_through_a_fresh_fd_is_confirmed_first(memory: TaskMemory) -> None:
    confirmed: list[int] = []

    def refuse() -> None:
        confirmed.append(1)
        raise TaskGone(0)  # as check_alive says when the notification is not pending

    with exec_program("after") as (proc, _, stdout):
        addr = int(stdout.readline())
        with pytest.raises(TaskGone):
            memory.write(proc.pid, addr, b"BEFORE", confirm=refuse)  # fresh fd: asked, refused
        assert confirmed == [1] and memory.read_string(proc.pid, addr) == b"before exec"
        memory.write(proc.pid, addr, b"BEFORE", confirm=refuse)  # the fd the read cached: not asked
        assert confirmed == [1] and memory.read_string(proc.pid, addr) == b"BEFORE exec"


def _make_root(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "root"
    for sub in ("data/sub", "old", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "data" / "file").write_text("in the container")
    inside = root / "data" / "hostside"
    inside.write_text("opened on the host, inside the root")
    outside = tmp_path / "outside"
    outside.write_text("opened on the host, outside the root")
    return root, inside, outside


@needs_root
@pytest.mark.parametrize("mode", ["pivot", "chroot"])
def test_paths_are_container_paths(tmp_path: Path, mode: str) -> None:
    root, inside, outside = _make_root(tmp_path)
    child, listener = started("paths", mode, str(root), str(inside), str(outside))
    with listener:
        try:
            fds = child.line()
            # Checked while the task waits in a trapped call, as the sentry would.
            notif = next_notification(child, listener)
            assert notif.nr == NR_GETPPID
            pid = notif.pid
            forget_mount_tables()
            assert task_cwd(pid) == "/data/sub"
            assert task_fd_path(pid, fds["container_fd"]) == "/data/file"
            # Opened before the task moved: a host mount, translated through the task's mounts.
            assert task_fd_path(pid, fds["inside_fd"]) == "/data/hostside"
            for fd, reason in (
                (fds["outside_fd"], "unreachable"),
                (fds["deleted_fd"], "deleted"),
                (fds["pipe_fd"], "anonymous"),
            ):
                with pytest.raises(NotAPath) as caught:
                    task_fd_path(pid, fd)
                assert caught.value.reason == reason, caught.value
            with pytest.raises(OSError) as bad_fd:
                task_fd_path(pid, 999)
            assert bad_fd.value.errno == errno.EBADF
            assert listener.respond(notif.id, val=7)
            assert child.line() == {"ret": 7, "errno": 0}
        finally:
            child.close()


def test_paths_in_our_own_namespace(tmp_path: Path) -> None:
    os.mkdir(tmp_path / "a (deleted)")
    fd = os.open(tmp_path / "a (deleted)", os.O_RDONLY | os.O_CLOEXEC)
    gone = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        me = os.getpid()
        assert task_cwd(me) == os.getcwd()
        # A name that really ends in " (deleted)" is not mistaken for a deleted file.
        assert task_fd_path(me, fd) == str(tmp_path / "a (deleted)")
        with pytest.raises(NotAPath, match="deleted"):
            task_fd_path(me, gone)
        with pytest.raises(NotAPath, match="anonymous"):
            task_fd_path(me, r)
    finally:
        for n in (fd, gone, r, w):
            os.close(n)


def test_no_fd_leaks(tmp_path: Path) -> None:
    before = open_fds()
    for _ in range(2):
        child, listener = started("block")
        with listener, TaskMemory() as memory:
            try:
                notif = next_notification(child, listener)
                memory.read(notif.pid, notif.instruction_pointer, 1)
                task_creds(memory, notif.pid)
                task_cwd(notif.pid)
                listener.respond(notif.id)
                child.line()
            finally:
                child.close()
    assert open_fds() == before


def test_errors_carry_the_errno_the_task_gets() -> None:
    bad = BadAddress(0x1000, 8, pid=5)
    assert isinstance(bad, OSError) and bad.errno == errno.EFAULT
    assert (bad.addr, bad.size, bad.pid) == (0x1000, 8, 5)
    assert BadAddress(0).errno == errno.EFAULT
    assert StringTooLong(0x1000, 4096).errno == errno.ENAMETOOLONG
    assert NotAPath("pipe:[1]", "anonymous").errno == errno.ENOTDIR
    assert NotAPath("/x (deleted)", "deleted").errno == errno.ENOENT
    assert not isinstance(TaskGone(1), OSError)
