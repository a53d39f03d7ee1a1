"""What a restart must not lose or double, each on real services, made to happen on purpose
rather than by a random kill: a repeated exec (with a terminal too) or create request, a create that a sentry death
cut short, a record a controller death left "creating", and a repeated start, pause or delete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from common import fdpass, wire
from common.client import FdClient
from common.errors import ErrCode, RemoteError
from common.messages.containers import ContainerState, CreateArgs, CreateResult, IdArgs
from common.messages.lifecycle import ContainerList, CreateContainerArgs, ListContainersArgs
from common.messages.proc import ExecRequest, ExecResult, ProcessArgs, ProcessExit
from common.messages.spec import ContainerSpec
from common.rundir import RunDir
from services.controller import oci
from services.controller.commands.base import CliContext, _settled
from services.controller.registry import ContainerRecord, Registry
from services.controller.services import ServiceManager
from tests.integration.test_exec_tty import read_until
from tests.integration.zerovisor import REPO, Zerovisor, cgroup_dirs, sh

pytestmark = pytest.mark.integration


def kill_service(zv: Zerovisor, service: str) -> None:
    """SIGKILL service and wait until its lock is free (it is gone)."""
    rd = RunDir.at(zv.root)
    pid = rd.running_pid(service)
    assert pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rd.running_pid(service) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rd.running_pid(service) is None


def sentry_containers(zv: Zerovisor) -> list[str]:
    with FdClient(RunDir.at(zv.root).socket_path("sentry")) as sentry:
        listing, _ = sentry.call("Lifecycle.ListContainers", ListContainersArgs(), ContainerList)
    return sorted(c.cid for c in listing.containers)


def create_behind_the_controllers_back(zv: Zerovisor, tmp_path: Path, cid: str) -> ContainerSpec:
    """What a create cut short leaves: a container the sentry made that no record names; its spec."""
    spec = oci.load_bundle(str(sh(tmp_path, "sleep 1000", name=f"bundle-{cid}")))
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        with FdClient(RunDir.at(zv.root).socket_path("sentry"), timeout=60) as sentry:
            _, fds = sentry.call("Lifecycle.CreateContainer", CreateContainerArgs(cid=cid, spec=spec), fds=[null] * 3)
            fdpass.close_all(fds)
    finally:
        os.close(null)
    return spec


def test_a_repeated_exec_request_runs_the_process_once(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    request = ExecRequest(
        id="c", args=["sh", "-c", "echo ran >> /tmp/x; cat /tmp/x; exit 5"], guest_fds=[1], token="same", fds=[out]
    )
    try:
        with FdClient(RunDir.at(zv.root).socket_path("controller"), timeout=60) as controller:
            first, _ = controller.call("Proc.Exec", request, ExecResult, request.fds)
            again, _ = controller.call("Proc.Exec", request, ExecResult, request.fds)  # its reply was "lost"
            assert (again.pid, again.host_pid) == (first.pid, first.host_pid)
            waits = [
                controller.call("Proc.WaitPid", ProcessArgs(cid="c", pid=first.pid), ProcessExit, wait_forever=True)[0]
                for _ in range(2)  # a controller that died before passing the status on is asked again
            ]
    finally:
        os.close(out)
    assert [w.exit_code for w in waits] == [5, 5]
    assert (tmp_path / "out").read_text() == "ran\n"  # one process, one line


def test_a_repeated_exec_on_a_terminal_gets_the_master_back(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    request = ExecRequest(id="c", args=["sh", "-c", "read line; echo got $line; exit 3"], tty=True, token="tty")
    controller_path = RunDir.at(zv.root).socket_path("controller")
    with FdClient(controller_path, timeout=60) as controller:
        first, lost = controller.call("Proc.Exec", request, ExecResult)
    assert len(lost) == 1
    fdpass.close_all(lost)  # the reply that carried it was "lost", and every copy on its way
    kill_service(zv, "sentry")  # a restarted sentry finds the process by its token too
    zv("up")
    with FdClient(controller_path, timeout=60) as controller:
        again, fds = controller.call("Proc.Exec", request, ExecResult)
        assert (again.pid, again.host_pid) == (first.pid, first.host_pid) and len(fds) == 1
        master = fds[0]
        try:
            controller.call("Proc.ReleaseConsole", ProcessArgs(cid="c", pid=first.pid))
            os.set_blocking(master, False)
            os.write(master, b"hello\n")  # the terminal never hung up: the shell still reads it
            assert b"got hello" in read_until(master, b"got hello")
            done, _ = controller.call(
                "Proc.WaitPid", ProcessArgs(cid="c", pid=first.pid), ProcessExit, wait_forever=True
            )
        finally:
            os.close(master)
    assert done.exit_code == 3


def copies_held_by(pid: int, fd: int) -> int:
    """How many fds of process pid are the file fd is (same device and inode)."""
    mine = os.fstat(fd)
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            theirs = os.stat(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue
        count += (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino)
    return count


def settled_copies(pid: int, fd: int, want: int, timeout: float = 10.0) -> int:
    """copies_held_by(pid, fd) once it is want, or as it is after timeout: a service closes
    its copy of a file it sent on just after the send, and on a busy machine the reply can
    reach us through the other services before it gets the CPU back to do so."""
    deadline = time.monotonic() + timeout
    while (count := copies_held_by(pid, fd)) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def test_a_released_master_hangs_up_the_terminal_when_closed(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "c")
    forkserver = RunDir.at(zv.root).running_pid("forkserver")
    assert forkserver
    request = ExecRequest(id="c", args=["sleep", "1000"], tty=True, token="tty")
    with FdClient(RunDir.at(zv.root).socket_path("controller"), timeout=60) as controller:
        started, fds = controller.call("Proc.Exec", request, ExecResult)
        assert len(fds) == 1
        assert settled_copies(forkserver, fds[0], 1) == 1  # kept for a repeated request
        controller.call("Proc.ReleaseConsole", ProcessArgs(cid="c", pid=started.pid))
        assert settled_copies(forkserver, fds[0], 0) == 0
        os.close(fds[0])  # the CLI went: nothing else holds the master, as with runc
        done, _ = controller.call("Proc.WaitPid", ProcessArgs(cid="c", pid=started.pid), ProcessExit, wait_forever=True)
    assert done.exit_code == 128 + signal.SIGHUP


def create_call(zv: Zerovisor, bundle: Path, cid: str, token: str, foreground: bool = False) -> CreateResult:
    """Containers.Create with token, the CLI's stdio replaced by /dev/null; the caller closes
    the result's fds."""
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    args = CreateArgs(id=cid, bundle=str(bundle), token=token, foreground=foreground)
    try:
        with FdClient(RunDir.at(zv.root).socket_path("controller"), timeout=60) as controller:
            result, fds = controller.call("Containers.Create", args, CreateResult, [null] * 3)
    finally:
        os.close(null)
    return CreateResult(state=result.state, fds=fds)


def test_a_repeated_create_request_gets_the_container_the_first_made(zv: Zerovisor, tmp_path: Path) -> None:
    zv("up")
    bundle = sh(tmp_path, "echo ran >> /tmp/x; sleep 1000")
    first = create_call(zv, bundle, "c", "t1")
    again = create_call(zv, bundle, "c", "t1")  # the first reply was "lost"
    assert again.state.pid == first.state.pid and again.state.status == "created"
    kill_service(zv, "sentry")  # the token survives with the fork server
    zv("up")
    assert create_call(zv, bundle, "c", "t1").state.pid == first.state.pid
    with pytest.raises(RemoteError) as refused:
        create_call(zv, bundle, "c", "t2")  # somebody else's create of the same id
    assert refused.value.remote_code == ErrCode.CONFLICT and "already exists" in str(refused.value)
    zv("start", "c")
    with pytest.raises(RemoteError):
        create_call(zv, bundle, "c", "t1")  # started: no longer a create's to repeat
    assert zv("exec", "c", "cat", "/tmp/x").stdout == "ran\n"  # one init ran
    zv("delete", "-f", "c")


def test_a_repeated_create_of_a_terminal_makes_it_again_for_a_new_master(zv: Zerovisor, tmp_path: Path) -> None:
    zv("up")
    bundle = sh(tmp_path, "sleep 1000")
    config = bundle / "config.json"
    config.write_text(config.read_text().replace('"terminal": false', '"terminal": true'))
    first = create_call(zv, bundle, "t", "tok", foreground=True)
    again = create_call(zv, bundle, "t", "tok", foreground=True)
    try:
        assert len(first.fds) == 1 and len(again.fds) == 1  # a pty master each time
        assert again.state.pid != first.state.pid and again.state.status == "created"
        assert not Path(f"/proc/{first.state.pid}").exists() or "Z" in Path(f"/proc/{first.state.pid}/stat").read_text()
    finally:
        fdpass.close_all([*first.fds, *again.fds])
    assert sentry_containers(zv) == ["t"]
    zv("delete", "-f", "t")


def test_a_create_cut_short_is_deleted_when_the_sentry_comes_back(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "kept")
    create_behind_the_controllers_back(zv, tmp_path, "orphan")
    assert sentry_containers(zv) == ["kept", "orphan"]
    kill_service(zv, "sentry")
    zv("up")
    listed = zv("list", "--format", "json").stdout  # the controller reconnects: it reconciles first
    assert '"kept"' in listed and "orphan" not in listed
    assert sentry_containers(zv) == ["kept"]  # rebuilt from the platform, the orphan deleted
    assert zv.state("kept")["status"] == "running"
    status = zv("status", "--format", "json").stdout
    assert '"orphans": 1' in status


def test_records_left_creating_are_settled_when_the_controller_starts(zv: Zerovisor, tmp_path: Path) -> None:
    zv("up")
    spec = create_behind_the_controllers_back(zv, tmp_path, "made")  # the sentry finished this one
    kill_service(zv, "controller")
    with Registry.open(str(zv.root)) as registry:
        for cid in ("made", "never"):
            registry.add(ContainerRecord(id=cid, bundle=spec.bundle, rootfs=spec.rootfs, config=wire.to_wire(spec)))
    zv("up")
    assert zv.state("made")["status"] == "created"
    assert int(str(zv.state("made")["pid"])) > 0
    missing = zv("state", "never", check=False)
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    zv("start", "made")
    assert zv.state("made")["status"] == "running"
    zv("delete", "-f", "made")


def test_a_repeated_move_refused_because_the_first_took_effect_counts_as_done(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "m")
    obj = CliContext(root=str(zv.root), run_dir=str(zv.root), log_format="text", debug=False)
    conflict = RemoteError(ErrCode.CONFLICT, "cannot start container 'm' in state running")
    settled = _settled(obj, "Containers.Start", IdArgs(id="m"), conflict)
    assert settled is not None and isinstance(settled[0], ContainerState) and settled[0].status == "running"
    assert _settled(obj, "Containers.Pause", IdArgs(id="m"), conflict) is None  # not paused: a real refusal
    gone = RemoteError(ErrCode.NOT_FOUND, "container 'x' does not exist")
    assert _settled(obj, "Containers.Delete", IdArgs(id="x"), gone) == (None,)
    assert _settled(obj, "Containers.Delete", IdArgs(id="m"), gone) is None  # still there
    ServiceManager(RunDir.at(zv.root), str(zv.root)).stop()


def test_a_hostname_the_container_set_survives_a_sentry_restart(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "h")
    zv("exec", "--cap", "CAP_SYS_ADMIN", "h", "hostname", "renamed")
    kill_service(zv, "sentry")
    zv("up")
    assert zv("exec", "h", "uname", "-n").stdout == "renamed\n"
    zv("delete", "-f", "h")
    assert not RunDir.at(zv.root).hostname_path("h").exists()


def test_a_wait_outlives_a_controller_restart(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "w")
    with (tmp_path / "wait.err").open("w") as err:
        waiting = subprocess.Popen(zv.argv("wait", "w"), stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        try:
            time.sleep(1.0)  # it has asked by now: Containers.Wait answers on its connection
            kill_service(zv, "controller")  # the connection breaks; the CLI asks a new controller
            time.sleep(0.5)
            zv("kill", "w", "KILL")
            assert waiting.wait(timeout=60) == 137, (tmp_path / "wait.err").read_text()
        finally:
            waiting.kill()
            waiting.wait()


def test_a_container_that_died_while_every_service_was_down_is_listed_stopped(zv: Zerovisor, tmp_path: Path) -> None:
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "lost")
    init = int(str(zv.state("lost")["pid"]))
    zv("down")  # the container outlives its services: nothing watches it now
    os.kill(init, signal.SIGKILL)
    listed = json.loads(zv("list", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in listed] == [("lost", "stopped")]
    assert zv.state("lost")["status"] == "stopped"
    zv("delete", "lost")


def test_a_cgroup_removed_behind_our_back_does_not_stop_a_restart(zv: Zerovisor, tmp_path: Path) -> None:
    # An administrator (or a cleaner of empty groups) removes a stopped container's cgroup.
    zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000")), "gone")
    pid = zv.state("gone")["pid"]
    dirs = cgroup_dirs(Path(f"/proc/{pid}/cgroup").read_text())
    zv("kill", "gone", "KILL")
    deadline = time.monotonic() + 30
    while zv.state("gone")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    for directory in dirs.values():
        directory.rmdir()
    kill_service(zv, "sentry")
    zv("up")
    assert zv.state("gone")["status"] == "stopped"
    zv("delete", "gone")
    assert zv("run", "-b", str(sh(tmp_path, "echo fine", name="next")), "next").stdout == "fine\n"
