"""The run directory and the per-service instance lock (common.rundir)."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import common
from common.errors import ConflictError, InvalidArgument
from common.rundir import InstanceLock, RunDir

#: Children import common from this tree, whether or not it is installed.
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(common.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
    ),
}

#: A child that tries to take the lock and reports what happened on stdout.
TRY_LOCK = textwrap.dedent(
    """
    import sys
    from common.errors import ConflictError
    from common.rundir import InstanceLock, RunDir
    try:
        InstanceLock(RunDir.at(sys.argv[1]), sys.argv[2])
    except ConflictError as e:
        print("conflict:", e)
    else:
        print("locked")
    """
)

#: A child that takes the lock, says so, and holds it until its stdin closes.
HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from common.rundir import InstanceLock, RunDir
    InstanceLock(RunDir.at(sys.argv[1]), sys.argv[2])
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    return RunDir.at(tmp_path / "run").ensure()


@pytest.fixture
def lock(run_dir: RunDir) -> Iterator[InstanceLock]:
    held = InstanceLock(run_dir, "sentry")
    yield held
    held.release()


def test_ensure_creates_private_dir_with_parents(tmp_path: Path) -> None:
    rd = RunDir.at(tmp_path / "a" / "b").ensure()
    assert rd.path.is_dir()
    assert _mode(rd.path) == 0o700


def test_ensure_fixes_a_0755_dir(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    path.chmod(0o755)
    RunDir.at(path).ensure()
    assert _mode(path) == 0o700


def test_ensure_refuses_a_path_too_long_for_a_socket(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120)
    with pytest.raises(InvalidArgument, match="too long for a Unix socket"):
        RunDir.at(path).ensure()
    assert not path.exists()


def test_at_makes_the_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rd = RunDir.at("run")
    assert rd.path == tmp_path / "run"
    assert rd.endpoint("gofer") == f"ipc://{tmp_path}/run/gofer.zmq"
    assert rd.socket_path("gofer") == tmp_path / "run" / "gofer.fds"
    assert rd.events_endpoint == f"ipc://{tmp_path}/run/events.zmq"


def test_lock_writes_our_pid(lock: InstanceLock, run_dir: RunDir) -> None:
    assert run_dir.pid_path("sentry").read_text() == f"{os.getpid()}\n"
    assert run_dir.running_pid("sentry") == os.getpid()


def test_a_lock_whose_file_still_names_a_dead_holder_reads_as_being_written(
    lock: InstanceLock, run_dir: RunDir
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # What a reader sees between the new holder's flock and its pid write.
    os.pwrite(lock.fd, f"{dead.pid}\n".encode(), 0)
    assert run_dir.running_pid("sentry") == 0
    os.pwrite(lock.fd, f"{os.getpid()}\n".encode(), 0)
    assert run_dir.running_pid("sentry") == os.getpid()


def test_second_lock_in_same_process_conflicts_without_leaking(lock: InstanceLock, run_dir: RunDir) -> None:
    before = _open_fds()
    with pytest.raises(ConflictError, match=f"sentry is already running .*pid {os.getpid()}"):
        InstanceLock(run_dir, "sentry")
    assert _open_fds() == before
    assert run_dir.pid_path("sentry").read_text() == f"{os.getpid()}\n"  # not clobbered


def test_other_services_do_not_conflict(lock: InstanceLock, run_dir: RunDir) -> None:
    other = InstanceLock(run_dir, "gofer")
    try:
        assert run_dir.running_pid("gofer") == os.getpid()
    finally:
        other.release()


def test_second_lock_in_child_process_conflicts(lock: InstanceLock, run_dir: RunDir) -> None:
    out = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(run_dir.path), "sentry"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=CHILD_ENV,
    )
    assert out.stdout.startswith("conflict: sentry is already running"), out.stderr


def test_lock_after_release_in_child_process(lock: InstanceLock, run_dir: RunDir) -> None:
    lock.release()
    out = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(run_dir.path), "sentry"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=CHILD_ENV,
    )
    assert out.stdout.strip() == "locked", out.stderr


def test_lock_held_by_child_then_dropped_when_it_dies(run_dir: RunDir) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir.path), "platform"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        assert run_dir.running_pid("platform") == child.pid
        with pytest.raises(ConflictError, match=f"pid {child.pid}"):
            InstanceLock(run_dir, "platform")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    # The child died without release(): its pid file remains, but not its lock.
    assert run_dir.pid_path("platform").exists()
    assert run_dir.running_pid("platform") is None
    InstanceLock(run_dir, "platform").release()


def test_release_removes_pid_file_and_frees_lock(lock: InstanceLock, run_dir: RunDir) -> None:
    lock.release()
    assert not run_dir.pid_path("sentry").exists()
    assert run_dir.running_pid("sentry") is None
    lock.release()  # idempotent
    again = InstanceLock(run_dir, "sentry")
    assert run_dir.running_pid("sentry") == os.getpid()
    again.release()


def test_running_pid_none_without_pid_file(run_dir: RunDir) -> None:
    assert run_dir.running_pid("controller") is None


def test_running_pid_ignores_unlocked_stale_file(run_dir: RunDir) -> None:
    run_dir.pid_path("controller").write_text("12345\n")
    assert run_dir.running_pid("controller") is None


def test_release_racing_a_new_lock_leaves_one_instance(
    lock: InstanceLock, run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_flock = fcntl.flock

    def release_between_open_and_flock(fd: int, op: int) -> None:
        # The new instance has opened the old pid file; the old instance now releases.
        monkeypatch.setattr(fcntl, "flock", real_flock)
        lock.release()
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", release_between_open_and_flock)
    second = InstanceLock(run_dir, "sentry")  # must not settle for the unlinked inode
    try:
        assert os.path.samestat(os.fstat(second.fd), os.stat(run_dir.pid_path("sentry")))
        assert run_dir.running_pid("sentry") == os.getpid()
        with pytest.raises(ConflictError):
            third = InstanceLock(run_dir, "sentry")
            third.release()
    finally:
        second.release()
