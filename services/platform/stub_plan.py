"""What a container's init needs, validated and computed before clone (for stub.launch).

Nothing in the cloned child may fail for a reason the parent could have seen: this module
refuses such specs with InvalidArgument and turns the rest into a stub_child.ChildPlan
(clone flags, capability masks, the compiled seccomp filter).
"""

from __future__ import annotations

from common.errors import InvalidArgument
from common.limits import RLIMITS
from common.messages.spec import DEFAULT_CAPABILITIES, Capabilities, ContainerSpec
from services.platform.clone import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    namespace_flags,
)
from services.platform.filters import DEFAULT_POLICY, UNTRAPPED_POLICY, build_filter
from services.platform.linux import CAPABILITIES
from services.platform.program import CapSets
from services.platform.stub_child import ChildPlan


def child_plan(
    spec: ContainerSpec, container_id: str, stdio: list[int], trap: bool, cgroup_fds: tuple[int, ...] = ()
) -> ChildPlan:
    """Validate spec for this code and precompute all the child needs (nothing fails there);
    the child joins its cgroup through cgroup_fds (Cgroup.membership_files).

    Raises InvalidArgument for a spec this code cannot run.
    """
    try:
        clone_flags = namespace_flags(spec.namespaces)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    if not clone_flags & CLONE_NEWNS:
        raise InvalidArgument("a container needs a mount namespace")
    if clone_flags & CLONE_NEWUSER and not (spec.uid_mappings and spec.gid_mappings):
        raise InvalidArgument("a user namespace needs uid and gid mappings")
    for key in spec.sysctl:
        _check_sysctl(key, clone_flags)
    process = spec.process
    for limit in process.rlimits if process else []:
        if limit.type not in RLIMITS:
            raise InvalidArgument(f"unknown rlimit {limit.type!r}")
    return ChildPlan(
        spec=spec,
        container_id=container_id,
        stdio=list(stdio),
        clone_flags=clone_flags,
        caps=cap_sets(process.capabilities if process else None),
        seccomp=build_filter(DEFAULT_POLICY if trap else UNTRAPPED_POLICY),
        trap=trap,
        cgroup_fds=cgroup_fds,
    )


#: sysctls of the IPC namespace (runc's validator list).
_IPC_SYSCTLS = frozenset(
    {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax"}
    | {"kernel.shmmni", "kernel.shm_rmid_forced"}
)


def _check_sysctl(key: str, clone_flags: int) -> None:
    """Refuse a sysctl that the container's namespaces do not make private (it would be the host's)."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        needed, name = CLONE_NEWIPC, "ipc"
    elif key.startswith("net."):
        needed, name = CLONE_NEWNET, "network"
    elif key in ("kernel.hostname", "kernel.domainname"):
        needed, name = CLONE_NEWUTS, "uts"
    else:
        raise InvalidArgument(f"sysctl {key!r} is not namespaced: it would change the host")
    if not clone_flags & needed:
        raise InvalidArgument(f"sysctl {key!r} needs its own {name} namespace")


def _mask(names: list[str] | tuple[str, ...]) -> int:
    mask = 0
    for name in names:
        if name not in CAPABILITIES:
            raise InvalidArgument(f"unknown capability {name!r}")
        mask |= 1 << CAPABILITIES[name]
    return mask


def cap_sets(caps: Capabilities | None) -> CapSets:
    """The masks for OCI capability sets (runc's default set for None); InvalidArgument names
    an unknown capability."""
    if caps is None:
        default = _mask(DEFAULT_CAPABILITIES)
        return CapSets(bounding=default, effective=default, permitted=default, inheritable=0)
    _mask(caps.ambient)
    return CapSets(
        bounding=_mask(caps.bounding),
        effective=_mask(caps.effective),
        permitted=_mask(caps.permitted),
        inheritable=_mask(caps.inheritable),
        ambient=[CAPABILITIES[name] for name in caps.ambient],
    )
