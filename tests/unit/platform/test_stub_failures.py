"""The container init failing: each error names its stage and step, and nothing is left behind.

Specs the stub refuses are refused before any clone, so those tests run in this threaded
process; the others run their container under stub_driver (see stub_runner).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.errors import ErrCode, InvalidArgument
from common.messages.spec import ContainerSpec, Resources
from common.wire import from_wire
from services.platform import stub as stub_module
from services.platform.cgroups import Cgroup
from services.platform.stub import StubError, launch
from tests.unit.platform.stub_runner import base_spec, ok, run_container, sh, with_process

# ---- failures -----------------------------------------------------------------------------


def test_failing_setup_raises_and_leaves_nothing(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("echo never"))
    spec["mounts"] += [{"destination": "/mnt", "type": "bind", "source": "/no/such/source", "options": ["rbind"]}]
    run = run_container(tmp_path, spec)
    assert run.result["stage"] == "launch"
    assert run.result["error"] == (
        "container init: bind-mounting /no/such/source on /mnt: [Errno 2] No such file or directory: '/no/such/source'"
    )
    assert run.result["children_left"] is False
    assert run.output == ""


def test_failing_mount_names_the_step(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("echo never"))
    spec["mounts"] += [{"destination": "/x", "type": "nosuchfs", "source": "none"}]
    run = run_container(tmp_path, spec)
    assert run.result["error"] == "container init: mounting nosuchfs on /x: [Errno 19] No such device"
    assert run.result["children_left"] is False


def test_missing_binary_fails_release(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, ["/bin/nosuch", "arg"]))
    assert run.result["stage"] == "release"
    assert run.result["error"] == "exec /bin/nosuch: [Errno 2] No such file or directory"
    assert run.exit_code == 127
    assert run.result["children_left"] is False


def test_exec_failure_with_donated_fds_fails_release(tmp_path: Path, rootfs: Path) -> None:
    # The sync socket moves above the donated fds: the error must still reach the parent.
    run = run_container(tmp_path, base_spec(rootfs, ["/bin/nosuch"]), mode="donate")
    assert run.result["stage"] == "release"
    assert run.result["error"] == "exec /bin/nosuch: [Errno 2] No such file or directory"
    assert run.exit_code == 127


def test_no_process_launches_but_does_not_release(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, ["true"], process=None))
    assert run.result["stage"] == "release"
    assert run.result["error"] == "container has no process"
    assert run.result["children_left"] is False


def test_before_setup_sees_the_waiting_child(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, ["true"]), mode="before-setup"))
    assert run.result["before_setup"] == {"pid": run.result["pid"], "alive": True}


def test_before_setup_failure_kills_the_child(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, ["true"]), mode="before-setup-fails")
    assert run.result["stage"] == "launch"
    assert run.result["error"] == "no cgroup for you"
    assert run.result["children_left"] is False


def test_child_that_does_not_answer_is_killed(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, ["true"]), mode="before-setup-stop-child")
    assert run.result["stage"] == "launch"
    assert run.result["error"] == f"container init {run.result['before_setup']['pid']} did not answer within 0.5 s"
    assert run.result["children_left"] is False


def test_child_that_dies_before_ready(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, ["true"]), mode="before-setup-kill-child")
    assert run.result["stage"] == "launch"
    assert run.result["error"].startswith(f"container init {run.result['before_setup']['pid']} exited before")
    assert run.result["error"].endswith("(killed by SIGKILL)")
    assert run.result["children_left"] is False


# ---- validated before any clone (safe in the threaded test process) -----------------------


@pytest.fixture
def no_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail instead of cloning in this threaded process, should validation ever let a spec through."""

    def refuse(flags: int) -> int:
        raise AssertionError(f"launch cloned (flags {flags:#x}) instead of refusing the spec")

    monkeypatch.setattr(stub_module, "clone_process", refuse)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespaces": ["pid", "uts"]}, "a container needs a mount namespace"),
        ({"namespaces": ["mount", "time"]}, "unknown namespace type 'time'"),
        ({"namespaces": ["mount", "user"]}, "a user namespace needs uid and gid mappings"),
        ({"sysctl": {"net.ipv4.ip_forward": "1"}, "namespaces": ["mount"]}, "needs its own network namespace"),
        ({"sysctl": {"kernel.shmmax": "1"}, "namespaces": ["mount"]}, "needs its own ipc namespace"),
        ({"sysctl": {"vm.swappiness": "1"}}, "'vm.swappiness' is not namespaced"),
    ],
)
@pytest.mark.usefixtures("no_clone")
def test_spec_refused_before_clone(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    spec = from_wire(ContainerSpec, base_spec(tmp_path, ["true"], **change))
    with pytest.raises(InvalidArgument, match=message):
        launch(spec, "test", [0, 1, 2])


@pytest.mark.usefixtures("no_clone")
def test_unknown_capability_and_rlimit_refused(tmp_path: Path) -> None:
    caps = {"bounding": ["CAP_NOPE"]}
    spec = from_wire(ContainerSpec, with_process(base_spec(tmp_path, ["true"]), capabilities=caps))
    with pytest.raises(InvalidArgument, match="unknown capability 'CAP_NOPE'"):
        launch(spec, "test", [0, 1, 2])
    limits = [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]
    spec = from_wire(ContainerSpec, with_process(base_spec(tmp_path, ["true"]), rlimits=limits))
    with pytest.raises(InvalidArgument, match="unknown rlimit 'RLIMIT_NOPE'"):
        launch(spec, "test", [0, 1, 2])


def test_stub_error_is_an_os_error() -> None:
    err = StubError("container init: x: [Errno 1] Operation not permitted", 1)
    assert err.code == ErrCode.OS_ERROR
    assert err.errno == 1
    assert str(err) == "container init: x: [Errno 1] Operation not permitted"


def test_kill_leaves_a_child_that_cannot_die_yet_to_the_reaper(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child frozen by the v1 freezer ignores SIGKILL until thawed: kill() gives up on it
    after REAP_TIMEOUT, says where it sleeps, and returns instead of blocking the fork server."""
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    monkeypatch.setattr(stub_module, "REAP_TIMEOUT", 0.3)
    cgroup = Cgroup.create(f"test-{uuid.uuid4().hex}", Resources())
    child = subprocess.Popen(["sleep", "1000"])
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child_end.close()
    try:
        cgroup.add(child.pid)
        cgroup.freeze()
        with caplog.at_level(logging.WARNING, logger=stub_module.__name__):
            assert stub_module.kill(stub_module.Stub(pid=child.pid, sync=parent_end, container_id="c")) is None
        assert f"process {child.pid} is not dead 0.3 s after SIGKILL (state " in caplog.text
        assert "left to the reaper" in caplog.text and parent_end.fileno() == -1
        assert child.poll() is None  # still there, frozen
        cgroup.thaw()
        assert child.wait(timeout=10) == -signal.SIGKILL  # the SIGKILL lands once thawed
    finally:
        child.kill()
        child.wait(timeout=10)
        cgroup.destroy()
