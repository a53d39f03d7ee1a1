"""The container init's filesystem, each container run by stub_driver (see stub_runner).

Covers masked and read-only paths, bind and cgroup mounts, and the pure helpers of
services.platform.mounts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.platform import mounts
from services.platform.linux import MS_BIND, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC
from tests.unit.platform.stub_runner import base_spec, ok, run_container, sh

# ---- filesystem ---------------------------------------------------------------------------


def test_masked_paths(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("wc -c < /proc/keys; wc -c < /etc/passwd; ls -A /sys/firmware | wc -l"))
    spec["masked_paths"] = [*spec["masked_paths"], "/etc/passwd", "/no/such/path"]
    assert ok(run_container(tmp_path, spec)).lines == ["0", "0", "0"]


def test_readonly_paths(tmp_path: Path, rootfs: Path) -> None:
    script = "echo 1 > /proc/sys/kernel/ns_last_pid && echo wrote; echo x > /etc/x && echo rw-elsewhere; true"
    spec = base_spec(rootfs, sh(script), readonly_paths=["/proc/sys", "/etc", "/missing"])
    run = ok(run_container(tmp_path, spec))
    assert "wrote" not in run.lines and "rw-elsewhere" not in run.lines
    assert "Read-only file system" in run.output


def test_readonly_root(tmp_path: Path, rootfs: Path) -> None:
    run = run_container(tmp_path, base_spec(rootfs, sh("touch /x"), rootfs_readonly=True))
    assert run.exit_code != 0
    assert "Read-only file system" in run.output
    assert not (rootfs / "x").exists()


def test_writable_root_by_default(tmp_path: Path, rootfs: Path) -> None:
    ok(run_container(tmp_path, base_spec(rootfs, sh("touch /x"))))
    assert (rootfs / "x").exists()


def test_bind_mounts_ro_rw_and_file(tmp_path: Path, rootfs: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("from the host\n")
    note = tmp_path / "note.txt"
    note.write_text("a file\n")
    spec = base_spec(rootfs, sh("cat /ro/in /etc/note; touch /ro/new || echo ro-refused; touch /rw/new && echo rw-ok"))
    spec["mounts"] += [
        {"destination": "/ro", "type": "bind", "source": str(data), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/rw", "type": "none", "source": str(data), "options": ["bind"]},
        {"destination": "/etc/note", "type": "bind", "source": str(note), "options": ["bind", "ro"]},
    ]
    run = ok(run_container(tmp_path, spec))
    assert run.lines[:2] == ["from the host", "a file"]
    assert "ro-refused" in run.lines and "rw-ok" in run.lines
    assert (data / "new").exists()
    assert (rootfs / "etc" / "note").is_file() and (rootfs / "ro").is_dir()


def test_bind_destination_symlink_stays_in_rootfs(tmp_path: Path, rootfs: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "escape").symlink_to(str(outside))  # absolute: resolves inside the rootfs
    source = tmp_path / "src"
    source.mkdir()
    (source / "marker").write_text("m\n")
    spec = base_spec(rootfs, ["cat", "/escape/marker"])
    spec["mounts"] += [{"destination": "/escape", "type": "bind", "source": str(source), "options": ["rbind"]}]
    assert ok(run_container(tmp_path, spec)).output == "m\n"
    assert (rootfs / str(outside).lstrip("/")).is_dir()  # created inside the rootfs
    assert list(outside.iterdir()) == []


def test_cgroup_mount_without_namespace_is_an_empty_tmpfs_and_logged(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("ls -A /sys/fs/cgroup | wc -l"))
    spec["mounts"] += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
    ]
    run = ok(run_container(tmp_path, spec))
    assert run.output == "0\n"
    assert "INFO services.platform.stub: container test init: no cgroup namespace" in run.stderr


def test_cgroup_mount_with_namespace(tmp_path: Path, rootfs: Path) -> None:
    spec = base_spec(rootfs, sh("grep ' /sys/fs/cgroup ' /proc/mounts"))
    spec["namespaces"] = [*spec["namespaces"], "cgroup"]
    spec["mounts"] += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
    ]
    assert ok(run_container(tmp_path, spec)).output.split()[2] == "cgroup2"


# ---- mounts.py helpers (pure) -------------------------------------------------------------


def test_parse_options() -> None:
    opts = mounts.parse_options(["nosuid", "noexec", "rbind", "ro", "rprivate", "mode=755", "size=1k", "tmpcopyup"])
    flags = MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NOEXEC
    assert opts == mounts.MountOptions(flags, (MS_PRIVATE | MS_REC,), "mode=755,size=1k")
    assert mounts.parse_options(["ro", "rw", "nodev", "dev"]).flags == 0


def test_parse_options_refuses_recursive_attributes() -> None:
    with pytest.raises(ValueError, match="'rro' is not supported"):
        mounts.parse_options(["rbind", "rro"])


def test_secure_join(tmp_path: Path) -> None:
    root = str(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "abs").symlink_to("/etc")
    (tmp_path / "rel").symlink_to("../../../etc")
    (tmp_path / "loop").symlink_to("loop")
    assert mounts.secure_join(root, "/abs/passwd") == f"{root}/etc/passwd"
    assert mounts.secure_join(root, "/rel/x/../y") == f"{root}/etc/y"
    assert mounts.secure_join(root, "/../../..") == root
    assert mounts.secure_join(root, "/missing/../etc") == f"{root}/etc"
    with pytest.raises(OSError, match="too many symlinks"):
        mounts.secure_join(root, "/loop")
