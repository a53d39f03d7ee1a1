"""The container init (services.platform.stub, stub_child, mounts) with a real busybox rootfs.

Every container is launched by stub_driver in a single-threaded subprocess (clone in a
threaded pytest worker is unsafe); the tests read the container's output and wait status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import ErrCode, InvalidArgument
from common.messages.spec import ContainerSpec
from common.wire import from_wire
from services.platform import mounts
from services.platform import stub as stub_module
from services.platform.linux import MS_BIND, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC
from services.platform.stub import StubError, launch
from tests.rootfs import make_rootfs

REPO = Path(__file__).resolve().parents[3]
#: CapEff of runc's default set (what a spec without capabilities gets).
DEFAULT_CAP_EFF = "00000000a80425fb"


def base_spec(rootfs: Path, args: list[str], **overrides: Any) -> dict[str, Any]:
    """A ContainerSpec map as the controller would build it from tests.rootfs.make_bundle's config."""
    spec: dict[str, Any] = {
        "oci_version": "1.0.2",
        "bundle": str(rootfs.parent),
        "rootfs": str(rootfs),
        "process": {
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "no_new_privileges": True,
        },
        "hostname": "zerovisor-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "namespaces": ["pid", "network", "ipc", "uts", "mount"],
        "masked_paths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
        "readonly_paths": ["/proc/sys", "/proc/sysrq-trigger"],
    }
    spec.update(overrides)
    return spec


def sh(script: str) -> list[str]:
    """argv running script with the container's busybox sh."""
    return ["sh", "-c", script]


def with_process(spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """spec with fields merged into its process."""
    spec["process"] = {**spec["process"], **fields}
    return spec


class Run:
    """One driver run: its result map, the container's output and the driver's stderr."""

    def __init__(self, result: dict[str, Any], output: str, stderr: str) -> None:
        self.result = result
        self.output = output
        self.stderr = stderr

    @property
    def exit_code(self) -> int:
        """The container's exit code (negative: killed by that signal)."""
        return int(self.result["exit_code"])

    @property
    def lines(self) -> list[str]:
        """The container's output, line by line."""
        return self.output.splitlines()


def run_container(tmp_path: Path, spec: dict[str, Any], mode: str = "") -> Run:
    """Launch, release and reap spec's container in a stub_driver subprocess."""
    out = tmp_path / "container.out"
    argv = [sys.executable, "-m", "tests.unit.platform.stub_driver", json.dumps(spec), str(out)]
    proc = subprocess.run(
        [*argv, mode] if mode else argv, capture_output=True, text=True, timeout=90, cwd=REPO, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout}\n{proc.stderr}"
    output = out.read_text() if out.exists() else ""
    return Run(json.loads(proc.stdout.splitlines()[-1]), output, proc.stderr)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A fresh busybox rootfs for this test."""
    return make_rootfs(tmp_path / "rootfs")


def ok(run: Run) -> Run:
    """Assert the container ran to exit 0 and nothing was left behind."""
    assert "error" not in run.result, (run.result, run.output)
    assert run.exit_code == 0, (run.result, run.output)
    assert run.result["children_left"] is False
    return run


# ---- running a program -------------------------------------------------------------------


def test_echo_hello(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, sh("echo hello"))))
    assert run.output == "hello\n"


def test_exit_code_comes_back(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, sh("exit 3")))
    assert run.exit_code == 3
    assert "error" not in run.result


def test_argv0_is_resolved_on_the_containers_path(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(base_spec(rootfs, ["echo", "from", "PATH"]), env=["PATH=/usr/bin:/bin"])
    assert ok(run_container(tmp_path, spec)).output == "from PATH\n"


def test_env_and_cwd(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(base_spec(rootfs, sh("pwd; echo $FOO; umask")), env=["PATH=/bin", "FOO=bar=baz"], cwd="/work")
    assert ok(run_container(tmp_path, spec)).lines == ["/work", "bar=baz", "0022"]


def test_init_is_pid_1(tmp_path: Path, rootfs: Path) -> None:
    assert ok(run_container(tmp_path, base_spec(rootfs, sh("echo $$")))).output == "1\n"


def test_init_does_not_see_host_processes(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, sh("ls /proc"))))
    pids = [name for name in run.lines if name.isdigit()]
    assert "1" in pids
    assert len(pids) <= 3, pids  # sh, ls, and nothing of the host's


def test_hostname(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, ["hostname"], hostname="box-42")))
    assert run.output == "box-42\n"
    assert os.uname().nodename != "box-42"


def test_sysctl_is_written(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, ["cat", "/proc/sys/net/ipv4/ip_forward"], sysctl={"net.ipv4.ip_forward": "1"})
    assert ok(run_container(tmp_path, spec)).output == "1\n"


def test_parent_fds_do_not_leak(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, ["ls", "/proc/self/fd"])))
    # 3 is ls's own directory fd; the driver's inheritable fd and the sync socket are gone.
    assert set(run.lines) <= {"0", "1", "2", "3"}, run.lines
    assert run.result["leaked_fd"] > 3


def test_stdio_is_the_given_fds(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, sh("echo out; echo err >&2; cat; readlink /proc/self/fd/0"))))
    assert run.lines == ["out", "err", "/dev/null"]


def test_terminal_becomes_the_controlling_tty(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(base_spec(rootfs, sh("test -t 0 && echo tty; cut -d' ' -f7 /proc/self/stat")), terminal=True)
    run = ok(run_container(tmp_path, spec, mode="terminal"))
    assert run.lines[0] == "tty"
    assert int(run.lines[1]) != 0  # tty_nr: the init's session has a controlling terminal


def test_donated_file_is_the_guest_fd(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, sh("echo donated >&7; ls /proc/self/fd")), mode="donate"))
    assert (tmp_path / "container.out.donated").read_text() == "donated\n"
    assert set(run.lines) <= {"0", "1", "2", "3", "7"}, run.lines


def test_default_devices_and_links(tmp_path: Path, rootfs: Path) -> None:
    script = "for d in null zero full random urandom tty; do test -c /dev/$d || echo missing $d; done;"
    script += "for l in ptmx fd stdin; do readlink /dev/$l; done; echo x > /dev/null && head -c 3 /dev/zero | wc -c"
    run = ok(run_container(tmp_path, base_spec(rootfs, sh(script))))
    assert run.lines == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0", "3"]


# ---- limits, credentials, capabilities ----------------------------------------------------


def test_rlimit_nofile(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(
        base_spec(rootfs, ["grep", "Max open files", "/proc/self/limits"]),
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
    )
    assert ok(run_container(tmp_path, spec)).output.split()[3:5] == ["123", "456"]


def test_user_group_and_supplementary_groups(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(base_spec(rootfs, sh("id -u; id -g; id -G")), uid=1000, gid=1001, additional_gids=[10, 20])
    assert ok(run_container(tmp_path, spec)).lines == ["1000", "1001", "1001 10 20"]


def test_oom_score_adj(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(base_spec(rootfs, ["cat", "/proc/self/oom_score_adj"]), oom_score_adj=500)
    assert ok(run_container(tmp_path, spec)).output == "500\n"


def _status_fields(run: Run) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in run.lines if ":\t" in line)


def test_capabilities_and_no_new_privs(tmp_path: Path, rootfs: Path) -> None:
    names = ["CAP_CHOWN", "CAP_KILL"]  # bits 0 and 5
    caps = {"bounding": names, "effective": names, "permitted": names, "inheritable": [], "ambient": []}
    spec = with_process(base_spec(rootfs, ["cat", "/proc/self/status"]), capabilities=caps)
    status = _status_fields(ok(run_container(tmp_path, spec)))
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0000000000000021"
    assert status["CapInh"] == status["CapAmb"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def test_default_capabilities(tmp_path: Path, rootfs: Path) -> None:
    spec = with_process(base_spec(rootfs, ["cat", "/proc/self/status"]), no_new_privileges=False)
    status = _status_fields(ok(run_container(tmp_path, spec)))
    assert status["CapEff"] == status["CapBnd"] == DEFAULT_CAP_EFF
    assert status["NoNewPrivs"] == "0"
    assert status["Seccomp"] == "2"  # loaded before the capabilities were dropped


def test_ambient_capability_survives_setuid(tmp_path: Path, rootfs: Path) -> None:
    names = ["CAP_NET_BIND_SERVICE"]  # bit 10
    caps = {"bounding": names, "effective": names, "permitted": names, "inheritable": names, "ambient": names}
    spec = with_process(base_spec(rootfs, ["cat", "/proc/self/status"]), uid=1000, gid=1000, capabilities=caps)
    status = _status_fields(ok(run_container(tmp_path, spec)))
    assert status["Uid"].split() == ["1000"] * 4
    assert status["CapEff"] == status["CapAmb"] == status["CapBnd"] == "0000000000000400"


# ---- filesystem ---------------------------------------------------------------------------


def test_masked_paths(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("wc -c < /proc/keys; wc -c < /etc/passwd; ls -A /sys/firmware | wc -l"))
    spec["masked_paths"] = [*spec["masked_paths"], "/etc/passwd", "/no/such/path"]
    assert ok(run_container(tmp_path, spec)).lines == ["0", "0", "0"]


def test_readonly_paths(tmp_path: Path, rootfs: Path) -> None:
    script = "echo 1 > /proc/sys/kernel/ns_last_pid && echo wrote; echo x > /etc/x && echo rw-elsewhere; true"
    spec = base_spec(rootfs, sh(script), readonly_paths=["/proc/sys", "/etc", "/missing"])
    run = ok(run_container(tmp_path, spec))
    assert "wrote" not in run.lines and "rw-elsewhere" not in run.lines
    assert "Read-only file system" in run.output


def test_readonly_root(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, sh("touch /x"), rootfs_readonly=True))
    assert run.exit_code != 0
    assert "Read-only file system" in run.output
    assert not (rootfs / "x").exists()


def test_writable_root_by_default(tmp_path: Path, rootfs: Path) -> None:
    ok(run_container(tmp_path, base_spec(rootfs, sh("touch /x"))))
    assert (rootfs / "x").exists()


def test_bind_mounts_ro_rw_and_file(tmp_path: Path, rootfs: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("from the host\n")
    note = tmp_path / "note.txt"
    note.write_text("a file\n")
    spec = base_spec(rootfs, sh("cat /ro/in /etc/note; touch /ro/new || echo ro-refused; touch /rw/new && echo rw-ok"))
    spec["mounts"] += [
        {"destination": "/ro", "type": "bind", "source": str(data), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/rw", "type": "none", "source": str(data), "options": ["bind"]},
        {"destination": "/etc/note", "type": "bind", "source": str(note), "options": ["bind", "ro"]},
    ]
    run = ok(run_container(tmp_path, spec))
    assert run.lines[:2] == ["from the host", "a file"]
    assert "ro-refused" in run.lines and "rw-ok" in run.lines
    assert (data / "new").exists()
    assert (rootfs / "etc" / "note").is_file() and (rootfs / "ro").is_dir()


def test_bind_destination_symlink_stays_in_rootfs(tmp_path: Path, rootfs: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "escape").symlink_to(str(outside))  # absolute: resolves inside the rootfs
    source = tmp_path / "src"
    source.mkdir()
    (source / "marker").write_text("m\n")
    spec = base_spec(rootfs, ["cat", "/escape/marker"])
    spec["mounts"] += [{"destination": "/escape", "type": "bind", "source": str(source), "options": ["rbind"]}]
    assert ok(run_container(tmp_path, spec)).output == "m\n"
    assert (rootfs / str(outside).lstrip("/")).is_dir()  # created inside the rootfs
    assert list(outside.iterdir()) == []


def test_cgroup_mount_without_namespace_is_an_empty_tmpfs_and_logged(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("ls -A /sys/fs/cgroup | wc -l"))
    spec["mounts"] += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
    ]
    run = ok(run_container(tmp_path, spec))
    assert run.output == "0\n"
    assert "INFO services.platform.stub: container test init: no cgroup namespace" in run.stderr


def test_cgroup_mount_with_namespace(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("grep ' /sys/fs/cgroup ' /proc/mounts"))
    spec["namespaces"] = [*spec["namespaces"], "cgroup"]
    spec["mounts"] += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
    ]
    assert ok(run_container(tmp_path, spec)).output.split()[2] == "cgroup2"


# ---- the seccomp filter inside ------------------------------------------------------------


def test_filter_denies_unshare(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, sh("unshare -m true; echo rc=$?")))
    assert "Operation not permitted" in run.output
    assert run.lines[-1] == "rc=1"


def test_filter_allows_fork(tmp_path: Path, rootfs: Path) -> None:
    run = ok(run_container(tmp_path, base_spec(rootfs, sh("(echo child) | cat; sh -c 'echo grandchild'"))))
    assert run.lines == ["child", "grandchild"]


# ---- user namespace -----------------------------------------------------------------------


@pytest.fixture
def open_rootfs() -> Iterator[Path]:
    """A rootfs the container's mapped root can reach: pytest's tmp dirs are 0700 root."""
    top = Path(tempfile.mkdtemp(prefix="zerovisor-userns-"))
    try:
        top.chmod(0o755)
        yield make_rootfs(top / "rootfs")
    finally:
        shutil.rmtree(top)


def test_user_namespace(tmp_path: Path, open_rootfs: Path) -> None:
    mapping = [{"container_id": 0, "host_id": 100000, "size": 65536}]
    spec = base_spec(open_rootfs, sh("id -u; cat /proc/self/uid_map /proc/self/gid_map; id -G; stat -c %u /dev/shm"))
    spec.update(namespaces=[*spec["namespaces"], "user"], uid_mappings=mapping, gid_mappings=mapping)
    spec = with_process(spec, additional_gids=[7])
    run = ok(run_container(tmp_path, spec))
    assert run.lines[0] == "0"
    assert [line.split() for line in run.lines[1:3]] == [["0", "100000", "65536"]] * 2
    assert run.lines[3:] == ["0 7", "0"]


def test_user_namespace_as_another_user(tmp_path: Path, open_rootfs: Path) -> None:
    mapping = [{"container_id": 0, "host_id": 200000, "size": 65536}]
    spec = base_spec(open_rootfs, sh("id -u; grep CapEff /proc/self/status"), rootfs_readonly=True)
    spec.update(namespaces=[*spec["namespaces"], "user"], uid_mappings=mapping, gid_mappings=mapping)
    run = ok(run_container(tmp_path, with_process(spec, uid=1000, gid=1000)))
    assert run.lines == ["1000", "CapEff:\t0000000000000000"]


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


# ---- mounts.py helpers (pure) -------------------------------------------------------------


def test_parse_options() -> None:
    opts = mounts.parse_options(["nosuid", "noexec", "rbind", "ro", "rprivate", "mode=755", "size=1k", "tmpcopyup"])
    flags = MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NOEXEC
    assert opts == mounts.MountOptions(flags, (MS_PRIVATE | MS_REC,), "mode=755,size=1k")
    assert mounts.parse_options(["ro", "rw", "nodev", "dev"]).flags == 0


def test_parse_options_refuses_recursive_attributes() -> None:
    with pytest.raises(ValueError, match="'rro' is not supported"):
        mounts.parse_options(["rbind", "rro"])


def test_secure_join(tmp_path: Path) -> None:
    root = str(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "abs").symlink_to("/etc")
    (tmp_path / "rel").symlink_to("../../../etc")
    (tmp_path / "loop").symlink_to("loop")
    assert mounts.secure_join(root, "/abs/passwd") == f"{root}/etc/passwd"
    assert mounts.secure_join(root, "/rel/x/../y") == f"{root}/etc/y"
    assert mounts.secure_join(root, "/../../..") == root
    assert mounts.secure_join(root, "/missing/../etc") == f"{root}/etc"
    with pytest.raises(OSError, match="too many symlinks"):
        mounts.secure_join(root, "/loop")
