"""OCI bundles: config.json into ContainerSpec, every rejection naming its JSON path."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from common.errors import InvalidArgument, NotFound
from common.messages.spec import Capabilities, ContainerSpec, Hook, IdMapping, Mount, Resources, Rlimit
from common.wire import from_wire, to_wire
from services.controller.oci import NAMESPACE_TYPES, default_config, load_bundle, parse_config
from services.controller.oci_fields import RLIMIT_TYPES


class _Delete:
    """Marks a field set_path removes; its repr keeps test ids equal across xdist workers."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle directory with an empty rootfs/ and no config.json yet."""
    path = tmp_path / "bundle"
    (path / "rootfs").mkdir(parents=True)
    return path


def write_config(bundle: Path, config: object) -> None:
    (bundle / "config.json").write_text(json.dumps(config))


def base_config() -> dict[str, Any]:
    """runc spec's config with the host-dependent cgroup namespace removed."""
    config = default_config()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "cgroup"]
    return config


def set_path(config: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of config with the dotted path ("mounts.0.type") set, or deleted when value is DELETE."""
    out = copy.deepcopy(config)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return out


# ---- accepted configs ----


def test_default_config_loads(bundle: Path) -> None:
    write_config(bundle, default_config())
    spec = load_bundle(str(bundle))
    assert spec.oci_version == "1.0.2"
    assert spec.bundle == str(bundle)
    assert spec.rootfs == str(bundle / "rootfs")
    assert spec.rootfs_readonly is True
    assert spec.hostname == "zerovisor"
    assert spec.process is not None
    assert spec.process.args == ["sh"]
    assert spec.process.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]
    assert spec.process.cwd == "/"
    assert spec.process.terminal is True
    assert spec.process.no_new_privileges is True
    assert spec.process.rlimits == [Rlimit(type="RLIMIT_NOFILE", hard=1024, soft=1024)]
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert spec.process.capabilities == Capabilities(bounding=caps, effective=caps, permitted=caps)
    assert spec.namespaces[:5] == ["pid", "network", "ipc", "uts", "mount"]
    assert [m.destination for m in spec.mounts] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert spec.mounts[1] == Mount(
        destination="/dev", type="tmpfs", source="tmpfs", options=["nosuid", "strictatime", "mode=755", "size=65536k"]
    )
    assert "/proc/kcore" in spec.masked_paths
    assert "/proc/sysrq-trigger" in spec.readonly_paths
    assert spec.resources == Resources()


def test_default_config_matches_runc_spec() -> None:
    config = default_config()
    assert config["ociVersion"] == "1.0.2"
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert config["linux"]["maskedPaths"][:3] == ["/proc/acpi", "/proc/asound", "/proc/kcore"]
    assert config["linux"]["readonlyPaths"] == [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    assert ({"type": "cgroup"} in config["linux"]["namespaces"]) is cgroup_v2
    # Each call returns a fresh dict: callers may edit it.
    config["process"]["args"].append("-x")
    assert default_config()["process"]["args"] == ["sh"]


def test_rootless_default_config(bundle: Path) -> None:
    config = default_config(rootless=True)
    assert "resources" not in config["linux"]
    write_config(bundle, config)
    spec = load_bundle(str(bundle))
    assert "user" in spec.namespaces
    assert "network" not in spec.namespaces
    assert spec.uid_mappings == [IdMapping(container_id=0, host_id=os.geteuid(), size=1)]
    assert spec.gid_mappings == [IdMapping(container_id=0, host_id=os.getegid(), size=1)]
    sys_mount = next(m for m in spec.mounts if m.destination == "/sys")
    # runc writes type "none" with rbind; the bind option makes it a bind mount of the host's /sys.
    assert sys_mount == Mount(
        destination="/sys", type="bind", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"]
    )
    pts = next(m for m in spec.mounts if m.destination == "/dev/pts")
    assert not any(o.startswith(("uid=", "gid=")) for o in pts.options)


def test_spec_survives_the_wire_with_its_types(bundle: Path) -> None:
    """from_wire checks every field's type, so this proves parse_config built a well-typed spec."""
    config = set_path(base_config(), "hooks", {"poststop": [{"path": "/bin/true", "timeout": 3}]})
    config = set_path(config, "linux.resources.memory", {"limit": 1 << 20})
    spec = parse_config(config, str(bundle))
    assert from_wire(ContainerSpec, to_wire(spec)) == spec


def test_absent_process_is_none(bundle: Path) -> None:
    spec = parse_config(set_path(base_config(), "process", DELETE), str(bundle))
    assert spec.process is None


def test_null_is_absent(bundle: Path) -> None:
    config = set_path(base_config(), "process.env", None)
    config = set_path(config, "hostname", None)
    spec = parse_config(config, str(bundle))
    assert spec.process is not None
    assert spec.process.env == []
    assert spec.hostname is None


def test_minimal_config(bundle: Path) -> None:
    spec = parse_config({"ociVersion": "1.1.0", "root": {"path": "rootfs"}, "process": {"args": ["true"]}}, str(bundle))
    assert spec.process is not None
    assert (spec.process.cwd, spec.process.uid, spec.process.gid, spec.process.terminal) == ("/", 0, 0, False)
    assert spec.process.capabilities is None
    assert (spec.rootfs_readonly, spec.namespaces, spec.mounts) == (False, [], [])


def test_unknown_keys_are_ignored(bundle: Path) -> None:
    config = base_config() | {"vm": {"hypervisor": {}}, "x-vendor": [1, 2], "domainname": "example"}
    config["process"]["apparmorProfile"] = "unconfined"
    spec = parse_config(config, str(bundle))
    assert spec.hostname == "zerovisor"


def test_container_paths_are_normalized(bundle: Path) -> None:
    config = set_path(base_config(), "process.cwd", "/srv/../home//user/")
    config = set_path(config, "mounts.3.destination", "//dev///shm/")
    config = set_path(config, "linux.maskedPaths", ["/proc/./kcore", "/a/b/.."])
    spec = parse_config(config, str(bundle))
    assert spec.process is not None
    assert spec.process.cwd == "/home/user"
    assert spec.mounts[3].destination == "/dev/shm"
    assert spec.masked_paths == ["/proc/kcore", "/a"]


def test_bind_mounts(bundle: Path) -> None:
    mounts = [
        {"destination": "/data", "source": "data", "options": ["bind", "ro"]},
        {"destination": "/etc/hosts", "type": "none", "source": "/etc/hosts", "options": ["rbind"]},
        {"destination": "/x", "type": "bind", "source": "../shared/./x"},
        {"destination": "/tmp", "type": "tmpfs"},
    ]
    spec = parse_config(set_path(base_config(), "mounts", mounts), str(bundle))
    assert spec.mounts == [
        Mount(destination="/data", type="bind", source=str(bundle / "data"), options=["bind", "ro"]),
        Mount(destination="/etc/hosts", type="bind", source="/etc/hosts", options=["rbind"]),
        Mount(destination="/x", type="bind", source=str(bundle.parent / "shared" / "x")),
        Mount(destination="/tmp", type="tmpfs", source="tmpfs"),
    ]


def test_root_path_absolute_and_relative(bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = parse_config(set_path(base_config(), "root.path", str(elsewhere)), str(bundle))
    assert spec.rootfs == str(elsewhere)
    spec = parse_config(set_path(base_config(), "root.path", "../elsewhere/"), str(bundle))
    assert spec.rootfs == str(elsewhere)


def test_relative_bundle_is_made_absolute(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(bundle, base_config())
    monkeypatch.chdir(bundle.parent)
    spec = load_bundle("bundle")
    assert spec.bundle == str(bundle)
    assert spec.rootfs == str(bundle / "rootfs")


def test_full_linux_section(bundle: Path) -> None:
    config = base_config()
    config["process"]["user"] = {"uid": 1000, "gid": 100, "additionalGids": [10, 20]}
    config["process"]["oomScoreAdj"] = -500
    config["process"]["rlimits"].append({"type": "RLIMIT_CORE", "hard": 0, "soft": 0})
    config["linux"]["namespaces"].append({"type": "user", "path": ""})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    config["linux"]["cgroupsPath"] = "/zerovisor/c1"
    config["linux"]["resources"] = {
        "memory": {"limit": 1 << 30, "swap": 2 << 30},
        "cpu": {"shares": 512, "quota": -1, "period": 100000},
        "pids": {"limit": 64},
        "devices": [{"allow": False, "access": "rwm"}],
    }
    config["annotations"] = {"org.example/owner": "alice"}
    spec = parse_config(config, str(bundle))
    assert spec.process is not None
    assert (spec.process.uid, spec.process.gid, spec.process.additional_gids) == (1000, 100, [10, 20])
    assert spec.process.oom_score_adj == -500
    assert [r.type for r in spec.process.rlimits] == ["RLIMIT_NOFILE", "RLIMIT_CORE"]
    assert spec.namespaces[-1] == "user"
    assert spec.uid_mappings == [IdMapping(container_id=0, host_id=100000, size=65536)]
    assert spec.sysctl == {"net.ipv4.ip_forward": "1"}
    assert spec.cgroups_path == "/zerovisor/c1"
    assert spec.resources == Resources(
        memory_limit=1 << 30, memory_swap=2 << 30, cpu_shares=512, cpu_quota=None, cpu_period=100000, pids_limit=64
    )
    assert spec.annotations == {"org.example/owner": "alice"}


def test_unlimited_resources_are_none(bundle: Path) -> None:
    config = set_path(base_config(), "linux.resources", {"memory": {"limit": -1, "swap": 0}, "pids": {"limit": -1}})
    assert parse_config(config, str(bundle)).resources == Resources()


def test_hooks(bundle: Path) -> None:
    hooks = {
        "prestart": [{"path": "/bin/a"}],
        "createRuntime": [{"path": "/bin/b", "args": ["b", "-x"], "env": ["K=v"], "timeout": 5}],
        "createContainer": [],
        "startContainer": [{"path": "/bin/c"}],
        "poststart": [{"path": "/bin/d"}, {"path": "/bin/e"}],
        "poststop": [{"path": "/bin/f"}],
        "futurePhase": [{"path": "relative is fine: ignored"}],
    }
    spec = parse_config(set_path(base_config(), "hooks", hooks), str(bundle))
    assert spec.hooks.prestart == [Hook(path="/bin/a", args=["/bin/a"])]
    assert spec.hooks.create_runtime == [Hook(path="/bin/b", args=["b", "-x"], env=["K=v"], timeout=5)]
    assert spec.hooks.create_container == []
    assert [h.path for h in spec.hooks.start_container] == ["/bin/c"]
    assert [h.path for h in spec.hooks.poststart] == ["/bin/d", "/bin/e"]
    assert [h.path for h in spec.hooks.poststop] == ["/bin/f"]


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.0+build.5", "1.0.0-rc5"])
def test_accepted_versions(bundle: Path, version: str) -> None:
    assert parse_config(set_path(base_config(), "ociVersion", version), str(bundle)).oci_version == version


def test_known_names() -> None:
    assert len(RLIMIT_TYPES) == 16
    assert "RLIMIT_NOFILE" in RLIMIT_TYPES
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} == NAMESPACE_TYPES


# ---- rejected configs ----

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
