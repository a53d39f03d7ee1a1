"""Typed reading of config.json, with every error naming the JSON path of the field at fault.

This module owns ``Node`` (a JSON value plus its path, with checked accessors) and the sections
of the OCI runtime spec that map one to one onto ``common.messages.spec`` without needing the
bundle: rlimits, capabilities, id mappings, cgroup resources and hooks. ``oci.py`` owns the
bundle and the sections that do (root, process, mounts, namespaces).

Decoding follows Go's encoding/json, which is what runc uses: ``null`` is the same as absent,
a number with a fraction is not an integer, and JSON's true/false are never numbers.
"""

from __future__ import annotations

import posixpath
import re

from common.errors import InvalidArgument
from common.limits import RLIMITS
from common.messages.spec import Capabilities, Hook, Hooks, IdMapping, Resources, Rlimit

UINT32_MAX = (1 << 32) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

#: Every rlimit runc knows (its rlimitMap); any other name is refused rather than ignored.
RLIMIT_TYPES = frozenset(RLIMITS)

#: OCI hook phase -> field of common.messages.spec.Hooks, in the order the runtime runs them.
HOOK_PHASES: dict[str, str] = {
    "prestart": "prestart",
    "createRuntime": "create_runtime",
    "createContainer": "create_container",
    "startContainer": "start_container",
    "poststart": "poststart",
    "poststop": "poststop",
}

_CAPABILITY = re.compile(r"CAP_[A-Z0-9_]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Node:
    """One JSON value of config.json and where it sits, e.g. ``process.args[1]``.

    Accessors check the type and raise InvalidArgument("config.json: <path>: <problem>").
    """

    __slots__ = ("path", "value")

    def __init__(self, value: object, path: str = "") -> None:
        #: The decoded JSON value.
        self.value = value
        #: JSON path from the top of config.json; "" for the document itself.
        self.path = path

    def fail(self, problem: str) -> InvalidArgument:
        """The error for this field; the caller raises it."""
        return InvalidArgument(f"config.json: {self.path or '(top level)'}: {problem}")

    def _key_path(self, key: str) -> str:
        # Map keys such as sysctl names contain dots; quote them so the path stays unambiguous.
        member = f".{key}" if _IDENTIFIER.fullmatch(key) else f"[{key!r}]"
        return member.removeprefix(".") if not self.path else f"{self.path}{member}"

    # ---- the value itself ----

    def as_map(self) -> dict[str, object]:
        """This value as a JSON object."""
        if not isinstance(self.value, dict):
            raise self.fail(f"want an object, got {_kind(self.value)}")
        return self.value

    def as_list(self) -> list[Node]:
        """This value as a JSON array, one Node per element."""
        if not isinstance(self.value, list):
            raise self.fail(f"want an array, got {_kind(self.value)}")
        return [Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def as_str(self) -> str:
        """This value as a string; NUL bytes are refused since no syscall could carry them."""
        if not isinstance(self.value, str):
            raise self.fail(f"want a string, got {_kind(self.value)}")
        if "\0" in self.value:
            raise self.fail("contains a NUL byte")
        return self.value

    def as_bool(self) -> bool:
        """This value as true or false."""
        if not isinstance(self.value, bool):
            raise self.fail(f"want a boolean, got {_kind(self.value)}")
        return self.value

    def as_int(self, lo: int, hi: int) -> int:
        """This value as an integer in [lo, hi] (the range of the Go type runc decodes into)."""
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"want an integer, got {_kind(self.value)}")
        if not lo <= self.value <= hi:
            raise self.fail(f"{self.value} is out of range {lo}..{hi}")
        return self.value

    def as_container_path(self) -> str:
        """This value as an absolute path inside the container, normalized."""
        path = self.as_str()
        if not path.startswith("/"):
            raise self.fail(f"{path!r} is not an absolute path")
        # normpath keeps a leading "//" (POSIX leaves it implementation-defined); Linux does not.
        return "/" + posixpath.normpath(path).lstrip("/")

    # ---- members of an object ----

    def get(self, key: str) -> Node | None:
        """Member key of this object, or None when it is absent or null."""
        value = self.as_map().get(key)
        return None if value is None else Node(value, self._key_path(key))

    def req(self, key: str) -> Node:
        """Member key of this object, which must be present."""
        node = self.get(key)
        if node is None:
            raise Node(None, self._key_path(key)).fail("required")
        return node

    def str_or(self, key: str, default: str) -> str:
        """String member key, or default when absent."""
        node = self.get(key)
        return default if node is None else node.as_str()

    def opt_str(self, key: str) -> str | None:
        """String member key, or None when absent."""
        node = self.get(key)
        return None if node is None else node.as_str()

    def bool_or(self, key: str, default: bool) -> bool:
        """Boolean member key, or default when absent."""
        node = self.get(key)
        return default if node is None else node.as_bool()

    def opt_int(self, key: str, lo: int, hi: int) -> int | None:
        """Integer member key in [lo, hi], or None when absent."""
        node = self.get(key)
        return None if node is None else node.as_int(lo, hi)

    def list_of(self, key: str) -> list[Node]:
        """Array member key as Nodes; [] when absent."""
        node = self.get(key)
        return [] if node is None else node.as_list()

    def strs(self, key: str) -> list[str]:
        """Array-of-strings member key; [] when absent."""
        return [n.as_str() for n in self.list_of(key)]

    def env(self, key: str) -> list[str]:
        """Environment member key: KEY=VALUE strings with a non-empty KEY."""
        out = []
        for node in self.list_of(key):
            entry = node.as_str()
            name, sep, _ = entry.partition("=")
            if not sep or not name:
                raise node.fail(f"{entry!r} is not KEY=VALUE")
            out.append(entry)
        return out

    def str_map(self, key: str) -> dict[str, str]:
        """Object-of-strings member key; {} when absent."""
        node = self.get(key)
        if node is None:
            return {}
        out: dict[str, str] = {}
        for name in node.as_map():
            if not name:
                raise node.fail("empty key")
            out[name] = node.req(name).as_str()
        return out


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "an object"
    )


def parse_rlimits(process: Node) -> list[Rlimit]:
    """process.rlimits: known types only, each at most once, soft <= hard."""
    out: list[Rlimit] = []
    for node in process.list_of("rlimits"):
        rtype = node.req("type").as_str()
        if rtype not in RLIMIT_TYPES:
            raise node.fail(f"unknown rlimit type {rtype!r}")
        if any(r.type == rtype for r in out):
            raise node.fail(f"duplicate rlimit type {rtype!r}")
        hard = node.req("hard").as_int(0, UINT64_MAX)
        soft = node.req("soft").as_int(0, UINT64_MAX)
        if soft > hard:
            raise node.fail(f"soft limit {soft} is above hard limit {hard}")
        out.append(Rlimit(type=rtype, hard=hard, soft=soft))
    return out


def parse_capabilities(process: Node) -> Capabilities | None:
    """process.capabilities: the five sets by name; None when absent (runc's default set)."""
    caps = process.get("capabilities")
    if caps is None:
        return None
    sets: dict[str, list[str]] = {}
    for name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        sets[name] = []
        for node in caps.list_of(name):
            cap = node.as_str()
            if not _CAPABILITY.fullmatch(cap):
                raise node.fail(f"{cap!r} is not a capability name (CAP_...)")
            sets[name].append(cap)
    return Capabilities(**sets)


def parse_id_mappings(linux: Node, key: str) -> list[IdMapping]:
    """linux.uidMappings or linux.gidMappings."""
    return [
        IdMapping(
            container_id=node.req("containerID").as_int(0, UINT32_MAX),
            host_id=node.req("hostID").as_int(0, UINT32_MAX),
            size=node.req("size").as_int(1, UINT32_MAX),
        )
        for node in linux.list_of(key)
    ]


def _limit(section: Node | None, key: str, lo: int, hi: int) -> int | None:
    # runc reads 0 as "not set" and -1 as "unlimited": both mean no limit to apply.
    value = None if section is None else section.opt_int(key, lo, hi)
    return value if value is not None and value > 0 else None


def parse_resources(linux: Node) -> Resources:
    """linux.resources: the memory, cpu and pids limits; other controllers are not applied."""
    res = linux.get("resources")
    if res is None:
        return Resources()
    memory, cpu, pids = res.get("memory"), res.get("cpu"), res.get("pids")
    limit = _limit(memory, "limit", -1, INT64_MAX)
    swap = _limit(memory, "swap", -1, INT64_MAX)
    if memory is not None and limit is not None and swap is not None and swap < limit:
        # swap is memory+swap, as in cgroup v1's memsw: it cannot be below the memory limit.
        raise memory.req("swap").fail(f"memory+swap limit {swap} is below the memory limit {limit}")
    return Resources(
        memory_limit=limit,
        memory_swap=swap,
        cpu_shares=_limit(cpu, "shares", 0, UINT64_MAX),
        cpu_quota=_limit(cpu, "quota", -1, INT64_MAX),
        cpu_period=_limit(cpu, "period", 0, UINT64_MAX),
        pids_limit=_limit(pids, "limit", INT64_MIN, INT64_MAX),
    )


def _hook(node: Node) -> Hook:
    path_node = node.req("path")
    path = path_node.as_str()
    if not path.startswith("/"):
        raise path_node.fail(f"{path!r} is not an absolute path")
    # Go's exec.Cmd uses the path as argv[0] when args is empty; keep that behaviour explicit.
    args = node.strs("args") or [path]
    return Hook(path=path, args=args, env=node.env("env"), timeout=node.opt_int("timeout", 1, INT64_MAX))


def parse_hooks(config: Node) -> Hooks:
    """hooks: the six phases; an unknown phase is ignored, as OCI says of unknown properties."""
    hooks = config.get("hooks")
    if hooks is None:
        return Hooks()
    phases = {attr: [_hook(n) for n in hooks.list_of(key)] for key, attr in HOOK_PHASES.items()}
    return Hooks(**phases)
