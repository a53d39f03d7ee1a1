"""OCI bundles: rejected config.json files, each rejection naming its JSON path, and bundle and file errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidArgument, NotFound
from services.controller.oci import load_bundle, parse_config
from tests.unit.controller.oci_configs import DELETE, base_config, set_path, write_config

REJECTIONS: list[tuple[str, object, str]] = [
    ("ociVersion", DELETE, "config.json: ociVersion: required"),
    ("ociVersion", 1, "config.json: ociVersion: want a string, got an integer"),
    ("ociVersion", "2.0.0", "config.json: ociVersion: unsupported version '2.0.0'"),
    ("ociVersion", "1.0", "unsupported version '1.0'"),
    ("root", DELETE, "config.json: root: required"),
    ("root", "rootfs", "config.json: root: want an object, got a string"),
    ("root.path", DELETE, "config.json: root.path: required"),
    ("root.path", "", "config.json: root.path: empty path"),
    ("root.readonly", "yes", "config.json: root.readonly: want a boolean, got a string"),
    ("process", "sh", "config.json: process: want an object, got a string"),
    ("process.args", DELETE, "config.json: process.args: required"),
    ("process.args", [], "config.json: process.args: want at least one argument"),
    ("process.args", "sh", "config.json: process.args: want an array, got a string"),
    ("process.args", ["sh", 1], "config.json: process.args[1]: want a string, got an integer"),
    ("process.args", ["sh\0-c"], "config.json: process.args[0]: contains a NUL byte"),
    ("process.cwd", "tmp", "config.json: process.cwd: 'tmp' is not an absolute path"),
    ("process.cwd", "", "config.json: process.cwd: '' is not an absolute path"),
    ("process.env", ["PATH"], "config.json: process.env[0]: 'PATH' is not KEY=VALUE"),
    ("process.env", ["A=1", "=x"], "config.json: process.env[1]: '=x' is not KEY=VALUE"),
    ("process.env", {"A": "1"}, "config.json: process.env: want an array, got an object"),
    ("process.terminal", "true", "config.json: process.terminal: want a boolean, got a string"),
    ("process.user", [0], "config.json: process.user: want an object, got an array"),
    ("process.user.uid", -1, "config.json: process.user.uid: -1 is out of range 0..4294967295"),
    ("process.user.uid", 1 << 32, "config.json: process.user.uid: 4294967296 is out of range"),
    ("process.user.uid", 1.5, "config.json: process.user.uid: want an integer, got a number"),
    ("process.user.gid", True, "config.json: process.user.gid: want an integer, got a boolean"),
    ("process.user.additionalGids", [1, "2"], "config.json: process.user.additionalGids[1]: want an integer"),
    (
        "process.rlimits",
        [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}],
        "config.json: process.rlimits[0]: unknown rlimit type 'RLIMIT_BOGUS'",
    ),
    (
        "process.rlimits",
        [{"type": "RLIMIT_NOFILE", "hard": 5, "soft": 10}],
        "config.json: process.rlimits[0]: soft limit 10 is above hard limit 5",
    ),
    (
        "process.rlimits",
        [{"type": "RLIMIT_NOFILE", "hard": 5, "soft": 1}, {"type": "RLIMIT_NOFILE", "hard": 5, "soft": 1}],
        "config.json: process.rlimits[1]: duplicate rlimit type 'RLIMIT_NOFILE'",
    ),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 1}], "config.json: process.rlimits[0].hard: required"),
    ("process.rlimits.0.soft", -1, "config.json: process.rlimits[0].soft: -1 is out of range"),
    (
        "process.capabilities.bounding",
        ["chown"],
        "config.json: process.capabilities.bounding[0]: 'chown' is not a capability name",
    ),
    ("process.capabilities.ambient", "CAP_KILL", "config.json: process.capabilities.ambient: want an array"),
    ("process.noNewPrivileges", 1, "config.json: process.noNewPrivileges: want a boolean, got an integer"),
    ("process.oomScoreAdj", 1001, "config.json: process.oomScoreAdj: 1001 is out of range -1000..1000"),
    ("hostname", 5, "config.json: hostname: want a string, got an integer"),
    ("mounts", {}, "config.json: mounts: want an array, got an object"),
    ("mounts.0.destination", "proc", "config.json: mounts[0].destination: 'proc' is not an absolute path"),
    ("mounts.0.destination", DELETE, "config.json: mounts[0].destination: required"),
    ("mounts.1.options", "ro", "config.json: mounts[1].options: want an array, got a string"),
    ("mounts.1.options", ["ro", None], "config.json: mounts[1].options[1]: want a string, got null"),
    ("mounts", [{"destination": "/x"}], "config.json: mounts[0]: type is required unless options contain bind"),
    ("mounts", [{"destination": "/x", "options": ["rbind"]}], "config.json: mounts[0].source: required"),
    ("mounts", [{"destination": "/x", "type": "bind", "source": ""}], "config.json: mounts[0].source: empty path"),
    ("linux", [], "config.json: linux: want an object, got an array"),
    ("linux.namespaces", [{"type": "time"}], "config.json: linux.namespaces[0]: unknown namespace type 'time'"),
    ("linux.namespaces", [{}], "config.json: linux.namespaces[0].type: required"),
    ("linux.namespaces.0", "pid", "config.json: linux.namespaces[0]: want an object, got a string"),
    (
        "linux.namespaces",
        [{"type": "uts"}, {"type": "network", "path": "/proc/1/ns/net"}],
        "config.json: linux.namespaces[1].path: joining existing namespaces is not supported",
    ),
    (
        "linux.namespaces",
        [{"type": "pid"}, {"type": "uts"}, {"type": "pid"}],
        "config.json: linux.namespaces[2]: duplicate namespace type 'pid'",
    ),
    ("linux.namespaces", [{"type": "pid"}], "config.json: hostname: cannot set the hostname without a uts namespace"),
    (
        "linux.namespaces",
        [{"type": "uts"}, {"type": "user"}],
        "config.json: linux: a user namespace needs both uidMappings and gidMappings",
    ),
    (
        "linux.uidMappings",
        [{"containerID": 0, "hostID": 1000, "size": 1}],
        "config.json: linux: uidMappings and gidMappings need a user namespace",
    ),
    (
        "linux.gidMappings",
        [{"containerID": 0, "hostID": 1000, "size": 0}],
        "config.json: linux.gidMappings[0].size: 0 is out of range",
    ),
    ("linux.uidMappings", [{"containerID": 0, "size": 1}], "config.json: linux.uidMappings[0].hostID: required"),
    ("linux.maskedPaths", ["proc/kcore"], "config.json: linux.maskedPaths[0]: 'proc/kcore' is not an absolute path"),
    ("linux.readonlyPaths", ["/proc/sys", 3], "config.json: linux.readonlyPaths[1]: want a string, got an integer"),
    (
        "linux.sysctl",
        {"net.ipv4.ip_forward": 1},
        "config.json: linux.sysctl['net.ipv4.ip_forward']: want a string, got an integer",
    ),
    ("linux.resources.memory", {"limit": "1G"}, "config.json: linux.resources.memory.limit: want an integer"),
    (
        "linux.resources.memory",
        {"limit": 2000, "swap": 1000},
        "config.json: linux.resources.memory.swap: memory+swap limit 1000 is below the memory limit 2000",
    ),
    ("linux.resources.memory", {"limit": -2}, "config.json: linux.resources.memory.limit: -2 is out of range"),
    ("linux.resources.cpu", {"shares": -1}, "config.json: linux.resources.cpu.shares: -1 is out of range"),
    ("linux.resources.cpu", {"period": 1.0}, "config.json: linux.resources.cpu.period: want an integer, got a number"),
    ("linux.resources.pids", {"limit": "64"}, "config.json: linux.resources.pids.limit: want an integer"),
    ("linux.cgroupsPath", 1, "config.json: linux.cgroupsPath: want a string, got an integer"),
    ("hooks", [], "config.json: hooks: want an object, got an array"),
    ("hooks", {"prestart": [{"path": "hook"}]}, "config.json: hooks.prestart[0].path: 'hook' is not an absolute path"),
    ("hooks", {"poststop": [{"args": ["x"]}]}, "config.json: hooks.poststop[0].path: required"),
    (
        "hooks",
        {"createRuntime": [{"path": "/bin/h", "timeout": 0}]},
        "config.json: hooks.createRuntime[0].timeout: 0 is out of range",
    ),
    ("hooks", {"poststart": [{"path": "/h", "env": ["X"]}]}, "config.json: hooks.poststart[0].env[0]: 'X' is not"),
    ("annotations", ["a"], "config.json: annotations: want an object, got an array"),
    ("annotations", {"a": 1}, "config.json: annotations.a: want a string, got an integer"),
    ("annotations", {"": "x"}, "config.json: annotations: empty key"),
]


@pytest.mark.parametrize(("path", "value", "message"), REJECTIONS, ids=[f"{p}={v!r}"[:60] for p, v, _ in REJECTIONS])
def test_rejections(bundle: Path, path: str, value: object, message: str) -> None:
    config = set_path(base_config(), path, value)
    with pytest.raises(InvalidArgument) as info:
        parse_config(config, str(bundle))
    assert message in str(info.value)


def test_rejections_come_through_load_bundle(bundle: Path) -> None:
    write_config(bundle, set_path(base_config(), "process.args", ["sh", 1]))
    with pytest.raises(InvalidArgument, match=r"^config\.json: process\.args\[1\]: want a string"):
        load_bundle(str(bundle))


# ---- bundle and file errors ----


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="bundle .*/nope does not exist"):
        load_bundle(str(tmp_path / "nope"))


def test_bundle_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgument, match="is not a directory"):
        load_bundle(str(tmp_path / "file"))


def test_bundle_without_config(bundle: Path) -> None:
    with pytest.raises(NotFound, match=f"^bundle {bundle} has no config.json$"):
        load_bundle(str(bundle))


def test_rootfs_is_a_file(bundle: Path) -> None:
    (bundle / "image").write_text("")
    with pytest.raises(InvalidArgument, match=r"^config\.json: root\.path: .*/image is not a directory$"):
        parse_config(set_path(base_config(), "root.path", "image"), str(bundle))


def test_missing_rootfs(bundle: Path) -> None:
    write_config(bundle, set_path(base_config(), "root.path", "nothere"))
    with pytest.raises(NotFound, match="root filesystem .*/nothere does not exist"):
        load_bundle(str(bundle))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "config.json: invalid JSON"),
        (b'{"ociVersion": NaN}', "config.json: invalid JSON: NaN is not JSON"),
        (b'{"ociVersion": "\xff"}', "config.json: invalid JSON"),
        (b"[" * 100_000, "config.json: invalid JSON"),
        (b"[]", "config.json: (top level): want an object"),
        (b'"1.0.2"', "config.json: (top level): want an object"),
    ],
    ids=["truncated", "nan", "bad-utf8", "deep", "array", "string"],
)
def test_unreadable_config(bundle: Path, raw: bytes, message: str) -> None:
    (bundle / "config.json").write_bytes(raw)
    with pytest.raises(InvalidArgument) as info:
        load_bundle(str(bundle))
    assert message in str(info.value)
