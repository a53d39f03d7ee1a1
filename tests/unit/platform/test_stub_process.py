"""The container init running a program, each container run by stub_driver (see stub_runner).

Covers argv, environment and stdio, limits, credentials and capabilities, the seccomp filter
inside and user namespaces.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import make_rootfs
from tests.unit.platform.stub_runner import Run, base_spec, ok, run_container, sh, with_process

#: CapEff of runc's default set (what a spec without capabilities gets).
DEFAULT_CAP_EFF = "00000000a80425fb"


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
