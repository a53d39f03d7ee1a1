"""The suite's C helper programs (tests/c/*.c), compiled with `gcc -static -O2` at test time.

`cbin` is a session fixture (a test module imports `cbin_fixture` to use it): `cbin("denied")`
compiles tests/c/denied.c once per session and returns the binary's path. Under pytest-xdist
each worker has its own session and its own tmp_path_factory directory, so workers never share
(or race on) an output file. Static binaries run inside a busybox rootfs, which has no libc:
copy one in with `install_into`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

C_DIR = Path(__file__).resolve().parent / "c"

#: Builds (once) and returns the static binary of tests/c/<name>.c.
CBuild = Callable[[str], Path]


def compile_c(source: Path, out: Path) -> Path:
    """Compile source into the static binary out; fails the test on a compiler error."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: the README's setup installs it")
    tmp = out.with_name(out.name + ".tmp")
    proc = subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Werror", "-pthread", "-o", str(tmp), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"gcc {source.name} failed ({proc.returncode}):\n{proc.stderr}")
    tmp.rename(out)
    return out


@pytest.fixture(scope="session", name="cbin")
def cbin_fixture(tmp_path_factory: pytest.TempPathFactory) -> CBuild:
    """name -> the static binary of tests/c/<name>.c, compiled once per session (per xdist worker)."""
    out_dir = tmp_path_factory.mktemp("cbin")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            built[name] = compile_c(C_DIR / f"{name}.c", out_dir / name)
        return built[name]

    return build


def install_into(rootfs: Path, binary: Path, dest: str | None = None) -> str:
    """Copy binary into rootfs (at /<its name> unless dest says where); return its container path."""
    target = dest or f"/{binary.name}"
    shutil.copy2(binary, rootfs / target.lstrip("/"))
    return target
