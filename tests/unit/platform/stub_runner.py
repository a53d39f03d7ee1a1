"""Running a container init (services.platform.stub) from a test, with a real busybox rootfs.

Every container is launched by stub_driver in a single-threaded subprocess (clone in a
threaded pytest worker is unsafe); the tests read the container's output and wait status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from services.controller.oci import default_config

REPO = Path(__file__).resolve().parents[3]
#: The mounts of `runc spec`'s default config that the stub tests' containers get.
STUB_MOUNTS = ("/proc", "/dev", "/dev/pts", "/dev/shm", "/sys")


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
        "mounts": [m for m in default_config()["mounts"] if m["destination"] in STUB_MOUNTS],
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


def ok(run: Run) -> Run:
    """Assert the container ran to exit 0 and nothing was left behind."""
    assert "error" not in run.result, (run.result, run.output)
    assert run.exit_code == 0, (run.result, run.output)
    assert run.result["children_left"] is False
    return run
