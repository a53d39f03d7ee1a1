"""openat2's RESOLVE_* flags on a trapped open for write: the sentry walks the program's path
from the program's own dirfd, cwd or root with the program's flags, so each case answers as the
kernel does natively (the expected results were taken from the same binary run in a chroot).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.controller.oci import default_config
from tests.cbuild import CBuild, cbin_fixture, install_into  # noqa: F401 - the cbin fixture
from tests.integration.test_kernel import DOCKER_CAPS, config_of, with_caps, write_config
from tests.integration.zerovisor import Zerovisor
from tests.rootfs import make_bundle

pytestmark = pytest.mark.integration

ELOOP, EXDEV, EBADF = "Too many levels of symbolic links", "Invalid cross-device link", "Bad file descriptor"

#: case -> what openat2(O_WRONLY|O_CREAT) answers natively, and where "ok" puts the file.
EXPECTED: dict[str, tuple[str, str | None]] = {
    "no_symlinks_through_link": (ELOOP, None),
    "no_symlinks_plain": ("ok", "work/dir/b"),
    "beneath_dotdot": (EXDEV, None),
    "beneath_absolute": (EXDEV, None),
    "beneath_inside": ("ok", "work/dir/e"),
    "beneath_abs_symlink": (EXDEV, None),
    "in_root_absolute": ("ok", "work/dir/g"),
    "in_root_abs_symlink": ("ok", "work/dir/h"),
    "in_root_dotdot": ("ok", "work/dir/i"),
    "no_xdev_into_mount": (EXDEV, None),
    "no_xdev_inside_mount": ("ok", "mnt:k"),
    "no_magiclinks": (ELOOP, None),
    "cwd_relative_beneath": ("ok", "work/m"),
    "bad_fd": (EBADF, None),
}


def test_resolve_flags_answer_as_the_kernel_does(zv: Zerovisor, tmp_path: Path, cbin: CBuild) -> None:
    mnt = tmp_path / "mnt_src"
    mnt.mkdir()
    bundle = with_caps(make_bundle(tmp_path / "bundle", ["/openat2_scope", "/mnt"]), DOCKER_CAPS)
    rootfs = bundle / "rootfs"
    install_into(rootfs, cbin("openat2_scope"))
    for name in ("work", "mnt"):
        (rootfs / name).mkdir()
    config = config_of(bundle)
    config["mounts"] = [
        *default_config()["mounts"],
        {"destination": "/mnt", "type": "bind", "source": str(mnt), "options": ["bind", "rw"]},
    ]
    write_config(bundle, config)
    out = zv("run", "-b", str(bundle), "scope", timeout=120).stdout
    got = dict(line.split(" ", 1) for line in out.splitlines())
    assert got == {case: answer for case, (answer, _) in EXPECTED.items()}, out
    made = {str(p.relative_to(rootfs)) for p in (rootfs / "work").rglob("*") if p.is_file()}
    made |= {f"mnt:{p.name}" for p in mnt.iterdir()}
    assert made == {where for _, where in EXPECTED.values() if where}
    # Nothing landed beside the rootfs or at its top.
    assert not {"c", "d", "f", "j", "l", "n"} & {p.name for p in rootfs.iterdir()}
