"""OCI bundles: config.json (runtime-spec 1.0/1.1, as runc accepts it) into a ContainerSpec.

This module owns the bundle: finding and reading config.json, resolving the host paths in it
(root.path and bind-mount sources are relative to the bundle) and the checks that span sections
(hostname needs a UTS namespace, id mappings need a user namespace). Field-level reading lives in
``oci_fields``. It also owns ``default_config``, the config.json that ``controller spec`` writes.

Every rejection is an InvalidArgument naming the JSON path at fault, e.g.
``config.json: process.args[1]: want a string, got an integer``. Unknown properties are ignored,
as the spec requires; so are known ones zerovisor does not act on (seccomp, devices, apparmor).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from common.errors import InvalidArgument, NotFound
from common.messages.spec import ContainerSpec, Mount, ProcessSpec
from services.controller.oci_fields import (
    UINT32_MAX,
    Node,
    parse_capabilities,
    parse_hooks,
    parse_id_mappings,
    parse_resources,
    parse_rlimits,
)

#: The config file inside a bundle.
CONFIG_NAME = "config.json"
#: Namespace types a container may ask for; "time" and anything newer is refused.
NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup"})
#: OCI runtime-spec versions accepted: any 1.x (the spec is compatible within a major version).
_OCI_VERSION = re.compile(r"1\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
#: The ociVersion that `controller spec` writes (runc 1.1's).
SPEC_VERSION = "1.0.2"


def bundle_dir(bundle: str) -> str:
    """bundle made absolute, after checking that it is an existing directory."""
    bundle = os.path.abspath(bundle)
    if not os.path.isdir(bundle):
        if os.path.exists(bundle):
            raise InvalidArgument(f"bundle {bundle} is not a directory")
        raise NotFound(f"bundle {bundle} does not exist")
    return bundle


def load_bundle(bundle: str) -> ContainerSpec:
    """Read and validate bundle/config.json; bundle is made absolute first."""
    bundle = bundle_dir(bundle)
    path = os.path.join(bundle, CONFIG_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"bundle {bundle} has no {CONFIG_NAME}") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path} is a directory") from None
    try:
        config = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError and undecodable UTF-8.
        raise InvalidArgument(f"{CONFIG_NAME}: invalid JSON: {e}") from None
    if not isinstance(config, dict):
        raise Node(config).fail("want an object")
    return parse_config(config, bundle)


def _refuse_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity; JSON (and runc) do not.
    raise ValueError(f"{name} is not JSON")


def parse_config(config: dict[str, Any], bundle: str) -> ContainerSpec:
    """Validate a decoded config.json; relative host paths are resolved against bundle."""
    bundle = os.path.abspath(bundle)
    top = Node(config)
    top.as_map()
    version_node = top.req("ociVersion")
    version = version_node.as_str()
    if not _OCI_VERSION.fullmatch(version):
        raise version_node.fail(f"unsupported version {version!r}, want 1.x.y")

    root = top.req("root")
    rootfs = _host_path(root.req("path"), bundle)
    if not os.path.isdir(rootfs):
        if os.path.exists(rootfs):
            raise root.req("path").fail(f"{rootfs} is not a directory")
        raise NotFound(f"root filesystem {rootfs} does not exist")

    linux = top.get("linux") or Node({}, "linux")
    namespaces = _namespaces(linux)
    uid_mappings = parse_id_mappings(linux, "uidMappings")
    gid_mappings = parse_id_mappings(linux, "gidMappings")
    if "user" in namespaces and not (uid_mappings and gid_mappings):
        raise linux.fail("a user namespace needs both uidMappings and gidMappings")
    if "user" not in namespaces and (uid_mappings or gid_mappings):
        raise linux.fail("uidMappings and gidMappings need a user namespace")
    hostname = top.opt_str("hostname")
    if hostname and "uts" not in namespaces:
        # As runc: setting the hostname without a UTS namespace would rename the host.
        raise top.req("hostname").fail("cannot set the hostname without a uts namespace")

    return ContainerSpec(
        oci_version=version,
        bundle=bundle,
        rootfs=rootfs,
        rootfs_readonly=root.bool_or("readonly", False),
        process=_process(top.get("process")),
        hostname=hostname,
        mounts=[_mount(node, bundle) for node in top.list_of("mounts")],
        namespaces=namespaces,
        uid_mappings=uid_mappings,
        gid_mappings=gid_mappings,
        masked_paths=[n.as_container_path() for n in linux.list_of("maskedPaths")],
        readonly_paths=[n.as_container_path() for n in linux.list_of("readonlyPaths")],
        sysctl=linux.str_map("sysctl"),
        resources=parse_resources(linux),
        cgroups_path=linux.opt_str("cgroupsPath"),
        hooks=parse_hooks(top),
        annotations=top.str_map("annotations"),
    )


def _host_path(node: Node, bundle: str) -> str:
    """A host path from the config, relative ones taken from the bundle directory."""
    path = node.as_str()
    if not path:
        raise node.fail("empty path")
    return os.path.normpath(os.path.join(bundle, path))


def parse_process(text: str, source: str) -> tuple[ProcessSpec, set[str]]:
    """An OCI Process given on its own (runc exec --process), and the fields it sets.

    InvalidArgument names source and the field at fault.
    """
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{source}: not JSON: {e}") from None
    try:
        process = _process(Node(value, "process"))
    except InvalidArgument as e:
        raise InvalidArgument(str(e).replace("config.json: process", source, 1)) from None
    assert process is not None
    return process, set(value) if isinstance(value, dict) else set()


def _process(process: Node | None) -> ProcessSpec | None:
    if process is None:
        return None
    args_node = process.req("args")
    args = [n.as_str() for n in args_node.as_list()]
    if not args:
        raise args_node.fail("want at least one argument")
    cwd_node = process.get("cwd")
    user = process.get("user") or Node({}, f"{process.path}.user")
    return ProcessSpec(
        args=args,
        env=process.env("env"),
        cwd="/" if cwd_node is None else cwd_node.as_container_path(),
        uid=user.opt_int("uid", 0, UINT32_MAX) or 0,
        gid=user.opt_int("gid", 0, UINT32_MAX) or 0,
        additional_gids=[n.as_int(0, UINT32_MAX) for n in user.list_of("additionalGids")],
        terminal=process.bool_or("terminal", False),
        capabilities=parse_capabilities(process),
        rlimits=parse_rlimits(process),
        no_new_privileges=process.bool_or("noNewPrivileges", False),
        oom_score_adj=process.opt_int("oomScoreAdj", -1000, 1000),
    )


def _mount(node: Node, bundle: str) -> Mount:
    destination = node.req("destination").as_container_path()
    options = node.strs("options")
    fstype = node.str_or("type", "")
    # As runc: the bind/rbind option makes a bind mount whatever the type says ("none", "").
    if fstype == "bind" or "bind" in options or "rbind" in options:
        return Mount(
            destination=destination, type="bind", source=_host_path(node.req("source"), bundle), options=options
        )
    if not fstype:
        raise node.fail("type is required unless options contain bind or rbind")
    return Mount(destination=destination, type=fstype, source=node.str_or("source", fstype), options=options)


def _namespaces(linux: Node) -> list[str]:
    out: list[str] = []
    for node in linux.list_of("namespaces"):
        nstype = node.req("type").as_str()
        if nstype not in NAMESPACE_TYPES:
            raise node.fail(f"unknown namespace type {nstype!r}")
        if node.str_or("path", ""):
            raise node.req("path").fail("joining existing namespaces is not supported")
        if nstype in out:
            raise node.fail(f"duplicate namespace type {nstype!r}")
        out.append(nstype)
    return out


def default_config(rootless: bool = False) -> dict[str, Any]:
    """The config.json `runc spec` writes (with hostname "zerovisor"); a fresh dict each call.

    rootless applies runc's ToRootless: a user namespace mapping the caller's euid/egid to 0,
    no network namespace, /sys bind-mounted from the host, no uid=/gid= mount options and no
    cgroup resources.
    """
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    nodev = ["nosuid", "noexec", "nodev"]
    config: dict[str, Any] = {
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "zerovisor",
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
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [*nodev, "mode=1777", "size=65536k"],
            },
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": list(nodev)},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nodev, "ro"]},
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": [*nodev, "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
                "/sys/devices/virtual/tpm",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        # runc adds a cgroup namespace on cgroup v2 hosts only.
        config["linux"]["namespaces"].append({"type": "cgroup"})
    if rootless:
        _to_rootless(config)
    return config


def _to_rootless(config: dict[str, Any]) -> None:
    linux = config["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    mounts = []
    for mount in config["mounts"]:
        if mount["destination"] == "/sys":
            # sysfs cannot be mounted without owning the network namespace; bind the host's.
            mounts.append(
                {
                    "destination": "/sys",
                    "type": "none",
                    "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
                }
            )
            continue
        if "options" in mount:
            # uid= and gid= name host ids that do not exist in a single-id user namespace.
            mount["options"] = [o for o in mount["options"] if not o.startswith(("uid=", "gid="))]
        mounts.append(mount)
    config["mounts"] = mounts
    del linux["resources"]
