"""services.sentry.seccomp: a real child traps its calls, this process answers them.

The notifying task is always the notify_child program; this process only serves (it must
never trap its own interpreter's calls).
"""

from __future__ import annotations

import errno
import os
import select
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from services.sentry.seccomp import (
    NOTIF_STRUCT,
    Listener,
    Notification,
    as_int,
    as_long,
)
from services.sentry.taskmem import TaskMemory
from tests.conftest import open_fds
from tests.unit.sentry.notify_child import Child, started

AUDIT_ARCH_X86_64 = 0xC000003E
NR_UNAME = 63
NR_MKDIR = 83
NR_GETPPID = 110
NR_OPENAT = 257
NR_MKDIRAT = 258


@pytest.fixture
def memory() -> Iterator[TaskMemory]:
    with TaskMemory() as mem:
        yield mem


def serve_one(child: Child, listener: Listener, *nrs: int) -> Notification:
    """Wait for the child's next notification, which must be for one of the system calls nrs."""
    revents = child.wait_readable(listener.fileno())
    assert revents & select.POLLIN, f"revents {revents:#x}; stderr: {child.stderr()}"
    notif = listener.recv()
    assert notif is not None
    assert notif.nr in nrs, notif
    assert notif.pid == child.pid
    assert notif.arch == AUDIT_ARCH_X86_64
    return notif


def test_respond_with_a_value() -> None:
    child, listener = started("getppid", "2")
    with listener:
        try:
            for val in (4242, 0):
                notif = serve_one(child, listener, NR_GETPPID)
                assert listener.id_valid(notif.id)
                assert listener.respond(notif.id, val=val)
                assert child.line() == {"ret": val, "errno": 0}
            assert child.proc.wait(10) == 0
        finally:
            child.close()


def test_respond_with_an_errno() -> None:
    child, listener = started("getppid")
    with listener:
        try:
            notif = serve_one(child, listener, NR_GETPPID)
            assert listener.respond(notif.id, error=errno.EPERM)
            assert child.line() == {"ret": -1, "errno": errno.EPERM}
        finally:
            child.close()


def test_respond_continue_runs_the_real_call(tmp_path: os.PathLike[str], memory: TaskMemory) -> None:
    target = os.path.join(tmp_path, "made")
    child, listener = started("mkdir", target)
    with listener:
        try:
            notif = serve_one(child, listener, NR_MKDIR, NR_MKDIRAT)
            path_arg = notif.args[0] if notif.nr == NR_MKDIR else notif.args[1]
            assert memory.read_string(notif.pid, path_arg) == os.fsencode(target)
            assert listener.id_valid(notif.id)
            assert listener.respond_continue(notif.id)
            assert child.line() == {"ok": True, "exists": True}
        finally:
            child.close()


def test_errno_answer_skips_the_real_call(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "refused")
    child, listener = started("mkdir", target)
    with listener:
        try:
            notif = serve_one(child, listener, NR_MKDIR, NR_MKDIRAT)
            assert listener.respond(notif.id, error=errno.EROFS)
            assert child.line() == {"ok": False, "errno": errno.EROFS, "exists": False}
        finally:
            child.close()


@contextmanager
def open_creat_child(tmp_path: os.PathLike[str]) -> Iterator[tuple[Child, Listener, int, int]]:
    """A child about to make a creating open, its listener, and a pipe (r, w) whose write end
    a test installs as the file it opens; all closed after."""
    child, listener = started("open_creat", os.path.join(tmp_path, "created"))
    r, w = os.pipe2(os.O_CLOEXEC)
    with listener:
        try:
            yield child, listener, r, w
        finally:
            child.close()
            os.close(r)
            os.close(w)


def wrote_through(child: Child, r: int, installed: int) -> None:
    """The child's open returned installed, and what it wrote there came out of our pipe."""
    assert child.line() == {"fd": installed, "fifo": True, "created": False}
    assert os.read(r, 100) == b"hello from the child"


def test_add_fd_send_completes_the_open_with_our_fd(tmp_path: os.PathLike[str], memory: TaskMemory) -> None:
    with open_creat_child(tmp_path) as (child, listener, r, w):
        notif = serve_one(child, listener, NR_OPENAT)  # the read-only open before was not trapped
        assert as_int(notif.args[0]) == -100  # AT_FDCWD
        assert notif.args[2] & os.O_CREAT
        assert memory.read_string(notif.pid, notif.args[1]) == os.fsencode(os.path.join(tmp_path, "created"))
        installed = listener.add_fd(notif.id, w, os.O_CLOEXEC, send=True)
        assert installed >= 0
        wrote_through(child, r, installed)
        assert not listener.id_valid(notif.id)  # SEND answered it


def test_add_fd_without_send_then_respond(tmp_path: os.PathLike[str]) -> None:
    with open_creat_child(tmp_path) as (child, listener, r, w):
        notif = serve_one(child, listener, NR_OPENAT)
        installed = listener.add_fd(notif.id, w, send=False, target_fd=77)
        assert installed == 77
        assert listener.id_valid(notif.id)  # still pending
        assert listener.respond(notif.id, val=installed)
        wrote_through(child, r, 77)


def test_install_fd_installs_then_answers(tmp_path: os.PathLike[str]) -> None:
    with open_creat_child(tmp_path) as (child, listener, r, w):
        notif = serve_one(child, listener, NR_OPENAT)
        installed = listener.install_fd(notif.id, w)
        assert installed >= 0
        assert not listener.id_valid(notif.id)  # answered
        wrote_through(child, r, installed)


def test_answers_to_a_killed_task_report_it_gone() -> None:
    child, listener = started("block")
    r, w = os.pipe2(os.O_CLOEXEC)
    with listener:
        try:
            notif = serve_one(child, listener, NR_GETPPID)
            assert listener.id_valid(notif.id)
            child.kill()
            assert not listener.id_valid(notif.id)
            assert listener.respond(notif.id, val=1) is False
            assert listener.respond_continue(notif.id) is False
            assert listener.add_fd(notif.id, w, send=True) == -1
        finally:
            child.close()
            os.close(r)
            os.close(w)


def test_recv_is_none_when_the_task_died_before_it() -> None:
    child, listener = started("block")
    with listener:
        try:
            assert child.wait_readable(listener.fileno()) & select.POLLIN
            child.kill()
            assert listener.recv() is None
        finally:
            child.close()


def test_pollhup_once_every_task_is_gone() -> None:
    child, listener = started("exit")
    with listener:
        try:
            assert child.proc.wait(10) == 0
            assert child.wait_readable(listener.fileno()) & select.POLLHUP
        finally:
            child.close()


def test_uname_answered_by_writing_the_tasks_memory(memory: TaskMemory) -> None:
    child, listener = started("uname")
    with listener:
        try:
            notif = serve_one(child, listener, NR_UNAME)
            fields = (b"Linux", b"zerovisor-box", b"4.4.0", b"#1 SMP zerovisor", b"x86_64", b"(none)")
            memory.write(notif.pid, notif.args[0], struct.pack("65s" * 6, *fields))
            assert listener.id_valid(notif.id)
            assert listener.respond(notif.id)
            assert child.line() == {
                "sysname": "Linux",
                "nodename": "zerovisor-box",
                "release": "4.4.0",
                "machine": "x86_64",
            }
        finally:
            child.close()


def test_many_round_trips_with_sync_wakeup() -> None:
    child, listener = started("getppid", "200")
    with listener:
        try:
            listener.set_sync_wakeup()
            for i in range(200):
                notif = serve_one(child, listener, NR_GETPPID)
                assert listener.respond(notif.id, val=i)
                assert child.line()["ret"] == i
        finally:
            child.close()


def test_no_fd_leaks(tmp_path: os.PathLike[str]) -> None:
    before = open_fds()
    for _ in range(3):
        child, listener = started("open_creat", os.path.join(tmp_path, "x"))
        r, w = os.pipe2(os.O_CLOEXEC)
        with listener, TaskMemory() as memory:
            try:
                notif = serve_one(child, listener, NR_OPENAT)
                memory.read_string(notif.pid, notif.args[1])
                assert len(memory) == 1
                assert listener.add_fd(notif.id, w, send=True) >= 0
                child.line()
            finally:
                child.close()
                os.close(r)
                os.close(w)
        assert listener.closed and listener.fileno() == -1
        assert len(memory) == 0
    assert open_fds() == before


def test_close_and_detach() -> None:
    r, w = os.pipe()
    os.close(w)
    listener = Listener(r)
    assert listener.detach() == r
    listener.close()  # no longer ours: must not close r
    os.fstat(r)
    Listener(r).close()
    with pytest.raises(OSError):
        os.fstat(r)


def test_argument_helpers() -> None:
    assert as_int(0xFFFFFF9C) == -100
    assert as_int(0xFFFFFFFFFFFFFF9C) == -100
    assert as_int(0x12345678_00000007) == 7
    assert as_long(0xFFFFFFFFFFFFFFFF) == -1
    assert as_long(5) == 5
    assert NOTIF_STRUCT.size == 80
