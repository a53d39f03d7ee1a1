"""config.json maps for the OCI bundle tests: runc's default without its host-dependent part, edited by path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from services.controller.oci import default_config


class _Delete:
    """Marks a field set_path removes; its repr keeps test ids equal across xdist workers."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


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
