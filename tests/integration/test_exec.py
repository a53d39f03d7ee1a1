"""`controller exec` end to end on the busybox rootfs: every flag, the exit status, the refusals.

Each test runs a container whose init sleeps and execs into it. The exec'd process joins the
container's namespaces and cgroup, and its trapped syscalls are answered by the sentry (a file it
writes lands in the rootfs through the gofer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from services.controller.oci import default_config
from services.platform.linux import CAPABILITIES
from tests.cbuild import CBuild, cbin_fixture, install_into  # noqa: F401 - the cbin fixture
from tests.conftest import REPO
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration


def running(zv: Zerovisor, tmp_path: Path, cid: str = "c") -> Path:
    """A running container whose init sleeps; its bundle."""
    bundle = sh(tmp_path, "sleep 1000")
    zv("run", "-d", "-b", str(bundle), cid)
    return bundle


def spawn(zv: Zerovisor, tmp_path: Path, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """`controller exec` in the background, its output in tmp_path/exec.out."""
    with open(tmp_path / "exec.out", "wb") as out:
        return subprocess.Popen(
            zv.argv("exec", *args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            pass_fds=pass_fds,
        )


def cap_eff(status: str) -> int:
    line = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return int(line.split()[1], 16)


def test_exit_status_and_writes_through_the_gofer(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = running(zv, tmp_path)
    out = zv("exec", "c", "sh", "-c", "echo pid=$$; echo data > /made; exit 3", check=False)
    assert out.returncode == 3, out
    assert out.stdout.startswith("pid=") and out.stdout != "pid=1\n"
    assert (bundle / "rootfs" / "made").read_text() == "data\n"
    killed = zv("exec", "c", "sh", "-c", "kill -KILL $$", check=False)
    assert killed.returncode == 128 + signal.SIGKILL


def test_env_and_cwd(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    script = 'echo "FOO=$FOO TERM=$TERM PATH=$PATH"; pwd'
    out = zv("exec", "--env", "FOO=bar", "-e", "PATH=/bin", "--cwd", "/tmp", "c", "sh", "-c", script).stdout
    assert out.splitlines() == ["FOO=bar TERM=xterm PATH=/bin", "/tmp"]
    # Unset, they come from the spec.
    out = zv("exec", "c", "sh", "-c", script).stdout
    assert out.splitlines() == [
        "FOO= TERM=xterm PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "/",
    ]


def test_user_and_groups(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    out = zv("exec", "--user", "1000:1001", "--additional-gids", "5,6", "c", "id").stdout
    assert out.strip() == "uid=1000 gid=1001 groups=5,6"
    assert zv("exec", "-u", "7", "c", "id", "-u").stdout.strip() == "7"


def test_caps(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    status = "/proc/self/status"
    spec_caps = default_config()["process"]["capabilities"]["effective"]
    assert cap_eff(zv("exec", "c", "cat", status).stdout) == sum(1 << CAPABILITIES[name] for name in spec_caps)
    added = cap_eff(zv("exec", "--cap", "CAP_SYS_ADMIN", "--cap", "CAP_NET_ADMIN", "c", "cat", status).stdout)
    more = {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", *spec_caps}
    assert added == sum(1 << CAPABILITIES[name] for name in more)
    bad = zv("exec", "--cap", "CAP_NOPE", "c", "true", check=False)
    assert bad.returncode == 3 and "unknown capability 'CAP_NOPE'" in bad.stderr


def test_pass_fd(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    r, w = os.pipe()
    try:
        os.write(w, b"through the pipe\n")
        os.close(w)
        proc = spawn(zv, tmp_path, "--pass-fd", f"{r}:7", "c", "sh", "-c", "cat <&7; ls /proc/self/fd", pass_fds=(r,))
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(r)
    lines = (tmp_path / "exec.out").read_text().split()
    assert lines[:3] == ["through", "the", "pipe"]
    assert "7" in lines  # and nothing of ours beyond what we passed
    assert {fd for fd in lines[3:] if fd.isdigit()} <= {"0", "1", "2", "3", "7"}


def test_exec_fd_runs_a_binary_with_no_path_in_the_rootfs(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    bundle = running(zv, tmp_path)
    binary = cbin("sysinfo")
    assert not (bundle / "rootfs" / binary.name).exists()
    fd = os.open(binary, os.O_RDONLY)
    try:
        proc = spawn(zv, tmp_path, "--exec-fd", str(fd), "c", "sysinfo", pass_fds=(fd,))
        assert proc.wait(timeout=60) == 0, (tmp_path / "exec.out").read_text()
    finally:
        os.close(fd)
    total, free = (tmp_path / "exec.out").read_text().split()
    assert int(total) >= int(free) > 0


def test_process_json(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    process = {
        "args": ["sh", "-c", 'echo "A=$A TERM=$TERM"; pwd; id'],
        "env": ["A=1"],
        "user": {"uid": 5, "gid": 6, "additionalGids": [7]},
    }
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    out = zv("exec", "--process", str(path), "c").stdout.splitlines()
    # env given: the spec's is not merged; cwd unset: the spec's.
    assert out == ["A=1 TERM=", "/", "uid=5 gid=6 groups=7"]
    process["cwd"] = "relative"
    path.write_text(json.dumps(process))
    bad = zv("exec", "--process", str(path), "c", check=False)
    assert bad.returncode == 3 and "process file" in bad.stderr and "cwd" in bad.stderr


def test_pid_files(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    pid_file, internal = tmp_path / "pid", tmp_path / "internal"
    proc = spawn(
        zv,
        tmp_path,
        "--pid-file",
        str(pid_file),
        "--internal-pid-file",
        str(internal),
        "c",
        "sh",
        "-c",
        "echo $$; sleep 1",
    )
    assert proc.wait(timeout=60) == 0
    assert internal.read_text() == (tmp_path / "exec.out").read_text().strip()
    assert pid_file.read_text() == str(proc.pid)  # the command itself stands for the process


def test_detach(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    pid_file = tmp_path / "pid"
    marker = tmp_path / "rootfs-marker"
    zv("exec", "-d", "--pid-file", str(pid_file), "c", "sh", "-c", "sleep 2; exit 4")
    child = int(pid_file.read_text())
    with open(f"/proc/{child}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert b"exec" in argv and b"-d" not in argv and b"--detach" not in argv
    ps = json.loads(zv("ps", "--format", "full-json", "c").stdout)
    assert [p["cmd"] for p in ps] == ["sleep", "sh", "sleep"] or "sh" in {p["cmd"] for p in ps}
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{child}") and not _zombie(child):
        assert time.monotonic() < deadline, "the exec child never ended"
        time.sleep(0.1)
    # Without --pid-file, detach still waits for the child to start.
    zv("exec", "-d", "c", "sh", "-c", f"echo here > /{marker.name}")
    assert not marker.exists()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_signals_are_forwarded(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    script = 'trap "echo got TERM; exit 9" TERM; echo ready; while :; do sleep 0.1; done'
    proc = spawn(zv, tmp_path, "c", "sh", "-c", script)
    deadline = time.monotonic() + 60
    while "ready" not in (tmp_path / "exec.out").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 9
    assert "got TERM" in (tmp_path / "exec.out").read_text()


def test_refusals(zv: Zerovisor, tmp_path: Path) -> None:
    unknown = zv("exec", "nope", "true", check=False)
    assert unknown.returncode == 3 and "nope does not exist" in unknown.stderr.replace("'", "")
    bundle = sh(tmp_path, "true")
    zv("run", "-d", "-b", str(bundle), "done")
    zv("wait", "done")
    stopped = zv("exec", "done", "true", check=False)
    assert stopped.returncode == 3 and "in state stopped" in stopped.stderr
    running(zv, tmp_path / "r", "r")
    for args, problem in (
        (("--user", "x:y", "r", "true"), "--user"),
        (("--user", "-1", "r", "true"), "--user"),
        (("--pass-fd", "3", "r", "true"), "--pass-fd"),
        (("--pass-fd", "0:-1", "r", "true"), "--pass-fd"),
        (("--pass-fd", "999:5", "r", "true"), "--pass-fd"),
        (("r",), "command"),
        (("--process", str(tmp_path / "missing.json"), "r"), "--process"),
        (("--console-socket", "/x", "r", "true"), "terminal"),
    ):
        out = zv("exec", *args, check=False)
        assert out.returncode == 2, (args, out)
        assert problem in out.stderr, (args, out.stderr)
    (tmp_path / "p.json").write_text('{"args": ["true"]}')
    both = zv("exec", "--process", str(tmp_path / "p.json"), "r", "true", check=False)
    assert both.returncode == 2 and "only the container id" in both.stderr
    missing = zv("exec", "r", "/no/such/binary", check=False)
    assert missing.returncode == 3 and "exec /no/such/binary: [Errno 2] No such file or directory" in missing.stderr


def test_cpu_usage_counts_exited_processes(zv: Zerovisor, tmp_path: Path) -> None:
    """events --stats reports the container's CPU time, reaped exec'd processes included (the
    seed's ContainerUsage)."""
    running(zv, tmp_path)

    def cpu_ns() -> int:
        stats = json.loads(zv("events", "--stats", "c").stdout)
        return int(stats["data"]["cpu_usage_ns"])

    before = cpu_ns()
    zv("exec", "c", "sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done")
    # The shell has exited and been reaped; the CPU it spent is still the container's.
    spent = cpu_ns() - before
    assert spent >= 50_000_000, f"only {spent} ns counted for a 100000-step shell loop"


def test_trapped_calls_of_the_exec_are_answered_by_the_sentry(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    """The sentry's counts rise by exactly the exec'd program's uname calls."""
    bundle = running(zv, tmp_path)
    install_into(bundle / "rootfs", cbin("uname_loop"))

    def unames() -> int:
        stats = json.loads(zv("events", "--stats", "c").stdout)
        return int(stats["data"]["syscalls"].get("system", 0))

    before = unames()
    zv("exec", "c", "/uname_loop", "250")
    assert unames() - before == 250


def test_exec_joins_the_user_namespace(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = sh(tmp_path, "sleep 1000")
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        config["linux"][key] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    (bundle / "config.json").write_text(json.dumps(config))
    for parent in [tmp_path, *tmp_path.parents]:  # reachable by the namespace's ids
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    zv("run", "-d", "-b", str(bundle), "u")
    out = zv("exec", "--user", "5", "u", "sh", "-c", "id -u; cat /proc/self/uid_map").stdout.split()
    assert out == ["5", "0", "200000", "65536"]
    # On the host, the exec'd process runs as the mapped id.
    proc = spawn(zv, tmp_path, "--user", "7", "u", "sleep", "7")
    try:
        deadline = time.monotonic() + 30
        while not (owners := _host_uids_of([b"sleep", b"7"])):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert owners == [200007]
    finally:
        zv("kill", "--all", "u", "KILL")
        proc.wait(timeout=60)


def _host_uids_of(argv: list[bytes]) -> list[int]:
    """Real uids of the host's processes whose command line is argv."""
    uids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] != argv:
                    continue
            with open(f"/proc/{pid}/status") as f:
                uids.append(int(next(line for line in f if line.startswith("Uid:")).split()[1]))
        except (OSError, StopIteration):
            continue
    return uids


def test_the_exec_command_imports_no_zmq(zv: Zerovisor, tmp_path: Path) -> None:
    running(zv, tmp_path)
    returncode, loaded = zv.run_loading("zmq", "exec", "c", "sh", "-c", "exit 4")
    assert returncode == 4
    assert not loaded
