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
    """A bundle at path: a busybox rootfs and a config.json running args; overrides are merged
    into the config's top level (shallowly) so that tests state only what they change."""
    make_rootfs(path / "rootfs")
    config: dict[str, object] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "zerovisor-test",
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
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    config.update(overrides)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path
