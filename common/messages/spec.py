"""ContainerSpec: an OCI bundle's config.json, validated and normalized by the controller.

The controller builds it (services/controller/oci.py); the sentry and the platform consume it.
Paths on the host are absolute; paths inside the container are absolute and clean. Only what
zerovisor acts on is kept; the raw config stays in the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Rlimit:
    """One POSIX rlimit."""

    #: Resource name as OCI spells it, e.g. "RLIMIT_NOFILE".
    type: str
    #: Hard limit.
    hard: int
    #: Soft limit.
    soft: int


#: runc's default capabilities, kept when the spec sets none.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """The five capability sets, by name (e.g. "CAP_CHOWN")."""

    #: Bounding set.
    bounding: list[str] = field(default_factory=list)
    #: Effective set.
    effective: list[str] = field(default_factory=list)
    #: Inheritable set.
    inheritable: list[str] = field(default_factory=list)
    #: Permitted set.
    permitted: list[str] = field(default_factory=list)
    #: Ambient set.
    ambient: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSpec:
    """The program to run: OCI `process`."""

    #: argv, argv[0] included; never empty.
    args: list[str]
    #: Environment as KEY=VALUE strings.
    env: list[str] = field(default_factory=list)
    #: Working directory inside the container (absolute).
    cwd: str = "/"
    #: User id inside the container.
    uid: int = 0
    #: Group id inside the container.
    gid: int = 0
    #: Supplementary group ids.
    additional_gids: list[int] = field(default_factory=list)
    #: Allocate a pseudo-terminal for the process.
    terminal: bool = False
    #: Capability sets; None keeps runc's default set.
    capabilities: Capabilities | None = None
    #: rlimits to set before exec.
    rlimits: list[Rlimit] = field(default_factory=list)
    #: Set no_new_privs before exec.
    no_new_privileges: bool = False
    #: Value for /proc/self/oom_score_adj, if set.
    oom_score_adj: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One OCI mount, in order."""

    #: Absolute path inside the container.
    destination: str
    #: Filesystem type ("proc", "tmpfs", "bind", ...).
    type: str
    #: Source: a host path for bind mounts (absolute), else the fs source name.
    source: str
    #: mount(8)-style options ("ro", "nosuid", "rbind", "mode=755", ...).
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdMapping:
    """One line of uid_map or gid_map."""

    #: First id inside the container.
    container_id: int
    #: First id on the host.
    host_id: int
    #: How many ids.
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """The subset of OCI `linux.resources` zerovisor applies (cgroups)."""

    #: memory.limit in bytes, if set.
    memory_limit: int | None = None
    #: memory.swap (memory+swap) in bytes, if set.
    memory_swap: int | None = None
    #: cpu.shares, if set.
    cpu_shares: int | None = None
    #: cpu.quota in microseconds per period, if set.
    cpu_quota: int | None = None
    #: cpu.period in microseconds, if set.
    cpu_period: int | None = None
    #: pids.limit, if set (> 0).
    pids_limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hook:
    """One OCI hook."""

    #: Absolute host path of the executable.
    path: str
    #: argv, argv[0] included (defaults to [path]).
    args: list[str] = field(default_factory=list)
    #: Environment as KEY=VALUE strings.
    env: list[str] = field(default_factory=list)
    #: Seconds before the hook is killed, if set.
    timeout: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks:
    """OCI hooks by phase."""

    #: Deprecated phase, run with createRuntime.
    prestart: list[Hook] = field(default_factory=list)
    #: After the namespaces exist, in the runtime's namespace.
    create_runtime: list[Hook] = field(default_factory=list)
    #: After the namespaces exist, in the container's namespace.
    create_container: list[Hook] = field(default_factory=list)
    #: At start, before the program runs, in the container's namespace.
    start_container: list[Hook] = field(default_factory=list)
    #: After the program started.
    poststart: list[Hook] = field(default_factory=list)
    #: After the container was deleted.
    poststop: list[Hook] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSpec:
    """Everything the sentry and the platform need to create one container."""

    #: OCI version of the config.
    oci_version: str
    #: Absolute host path of the bundle.
    bundle: str
    #: Absolute host path of the root filesystem.
    rootfs: str
    #: Mount the root filesystem read-only.
    rootfs_readonly: bool = False
    #: The init process; None when config.json has no `process` (create works, start fails).
    process: ProcessSpec | None = None
    #: Hostname, if set.
    hostname: str | None = None
    #: Mounts in order.
    mounts: list[Mount] = field(default_factory=list)
    #: Namespace types to create: "pid", "mount", "uts", "ipc", "network", "user", "cgroup".
    namespaces: list[str] = field(default_factory=list)
    #: uid_map lines (user namespace only).
    uid_mappings: list[IdMapping] = field(default_factory=list)
    #: gid_map lines (user namespace only).
    gid_mappings: list[IdMapping] = field(default_factory=list)
    #: Container paths to hide (files under /dev/null, directories under an empty tmpfs).
    masked_paths: list[str] = field(default_factory=list)
    #: Container paths to remount read-only.
    readonly_paths: list[str] = field(default_factory=list)
    #: sysctl settings.
    sysctl: dict[str, str] = field(default_factory=dict)
    #: cgroup limits.
    resources: Resources = field(default_factory=Resources)
    #: cgroupsPath from the config, if set.
    cgroups_path: str | None = None
    #: Hooks by phase.
    hooks: Hooks = field(default_factory=Hooks)
    #: Annotations, passed through to `state`.
    annotations: dict[str, str] = field(default_factory=dict)
