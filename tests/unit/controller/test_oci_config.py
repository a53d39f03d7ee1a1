"""OCI bundles: accepted config.json files and the ContainerSpec parse_config builds from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.messages.spec import Capabilities, ContainerSpec, Hook, IdMapping, Mount, Resources, Rlimit
from common.wire import from_wire, to_wire
from services.controller.oci import NAMESPACE_TYPES, default_config, load_bundle, parse_config
from services.controller.oci_fields import RLIMIT_TYPES
from tests.unit.controller.oci_configs import DELETE, base_config, set_path, write_config


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
