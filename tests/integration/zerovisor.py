"""What the container tests share: the controller CLI on a root of a test's own (`Zerovisor`),
`sh` bundles, and where a container's zerovisor cgroups are on the host (`cgroup_dirs`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO
from tests.rootfs import make_bundle


class Zerovisor:
    """The controller CLI on a root of this test's own; stops its services at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def argv(self, *args: str) -> list[str]:
        """The command line of `controller --root root *args`, run by this interpreter."""
        return [sys.executable, "-m", "services.controller", "--root", str(self.root), *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: int | None = subprocess.DEVNULL
    ) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a detached container keeps the stdio it inherited open, and a pipe
        # would then never reach EOF (runc's callers use files or fifos for the same reason).
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            returncode = subprocess.run(
                self.argv(*args),
                stdout=out,
                stderr=err,
                timeout=timeout,
                cwd=REPO,
                stdin=stdin,
                check=False,
            ).returncode
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(args, returncode, out.read(), err.read())
        if check and proc.returncode != 0:
            raise AssertionError(f"controller {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def state(self, cid: str) -> dict[str, object]:
        out = json.loads(self("state", cid).stdout)
        assert isinstance(out, dict)
        return out

    def run_loading(self, module: str, *args: str) -> tuple[int, bool]:
        """Run `controller *args` in a fresh interpreter: (its exit status, whether module was
        imported by the time it exited)."""
        with tempfile.TemporaryDirectory() as tmp:
            flag = Path(tmp) / "loaded"
            program = (
                "import atexit, sys\n"
                f"atexit.register(lambda: open({str(flag)!r}, 'w').write(str({module!r} in sys.modules)))\n"
                "from services.controller.cli import main\n"
                f"sys.argv = ['controller', '--root', {str(self.root)!r}, *{list(args)!r}]\n"
                "main()\n"
            )
            done = subprocess.run([sys.executable, "-c", program], cwd=REPO, stdin=subprocess.DEVNULL, check=False)
            return done.returncode, flag.read_text() == "True"

    @property
    def instance(self) -> str:
        """The name of this root's group: a container's cgroup is zerovisor/<instance>/<cid>."""
        return hashlib.sha256(os.fsencode(self.root.resolve())).hexdigest()[:12]


def sh(tmp_path: Path, script: str, name: str = "bundle", **overrides: object) -> Path:
    """A bundle running `sh -c script`."""
    return make_bundle(tmp_path / name, ["sh", "-c", script], **overrides)


def assert_no_such_container(zv: Zerovisor, cid: str) -> None:
    """`state cid` fails as it does for an id the controller never knew."""
    missing = zv("state", cid, check=False)
    assert missing.returncode == 3, missing
    assert f"container {cid} does not exist" in missing.stderr.replace("'", ""), missing.stderr


def cgroup_dirs(proc_cgroup: str) -> dict[str, Path]:
    """Controllers ("" for v2) -> host directory, of each zerovisor cgroup a /proc/PID/cgroup text names."""
    mounts: list[tuple[set[str], str, str]] = []  # (controllers, or {} for v2; mount root; mount point)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype, options = fields[fields.index("-") + 1], fields[fields.index("-") + 3]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((set(options.split(",")) if fstype == "cgroup" else set(), fields[3], fields[4]))
    dirs: dict[str, Path] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if "/zerovisor/" not in path:
            continue
        wanted = set(controllers.split(",")) if controllers else set()
        for have, root, point in mounts:
            if (wanted <= have if wanted else not have) and (path + "/").startswith(root.rstrip("/") + "/"):
                dirs[controllers] = Path(point, os.path.relpath(path, root))
                break
        else:
            raise AssertionError(f"no mount for {line!r}")
    return dirs
