"""A real busybox root filesystem for tests, from Debian's busybox-static.

Each test builds its own under its tmp_path: a copy of the static binary plus one symlink per
applet, and the few files a container expects (/etc/passwd, /etc/group, /etc/hostname).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def has_interpreter(path: Path) -> bool:
    """True for a dynamically linked ELF (one with a PT_INTERP program header)."""
    data = path.read_bytes()
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def busybox_path() -> Path:
    """The host's static busybox; fails the test (it is a setup dependency) when missing."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        # Debian's dynamic busybox would need the host's libc inside the rootfs.
        if path.exists() and not has_interpreter(path):
            return path
    pytest.fail("busybox-static is not installed: the README's setup installs it")


def make_rootfs(path: Path) -> Path:
    """Populate path with a busybox rootfs and return it."""
    busybox = busybox_path()
    bin_dir = path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, bin_dir / "busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = bin_dir / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    for directory in ("etc", "proc", "sys", "dev", "tmp", "root", "home", "var", "usr/bin", "sbin"):
        (path / directory).mkdir(parents=True, exist_ok=True)
    (path / "tmp").chmod(0o1777)
    (path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (path / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (path / "etc" / "hostname").write_text("busybox\n")
    return path


def make_bundle(path: Path, args: list[str], **overrides: object) -> Path:
    """A bundle at path: a busybox rootfs and `runc spec`'s default config running args.

    The process gets no terminal and the root stays writable (tests look at what programs
    wrote); overrides are merged into the config's top level (shallowly) so that tests state
    only what they change.
    """
    from services.controller.oci import default_config

    make_rootfs(path / "rootfs")
    config = default_config()
    config["process"].update(terminal=False, args=args)
    config["root"]["readonly"] = False
    config["hostname"] = "zerovisor-test"
    config.update(overrides)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path
