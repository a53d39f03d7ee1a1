"""The escape corpus: a program in a container tries every known way to reach a host file.

Beside each test's bundle sits a sentinel tree, tmp_path/host_sentinel (files, a directory,
symlinks, a fifo, fixed modes and mtimes), and a run directory holding the services' sockets.
Every case runs real programs in a container (as root, with Docker's default capabilities)
that aim at the sentinel by `../` chains, absolute and swapped symlinks, /proc magic links,
directory fds, racing path buffers and bind mounts; afterwards the sentinel and everything
else under tmp_path outside the rootfs must be exactly as before, and no file named after the
test's token may exist in any ancestor of the rootfs.

Resolved as the kernel resolves them inside the container, the escaping paths land in the
rootfs's own copies of the sentinel (rootfs/host_sentinel and rootfs/<absolute sentinel path>,
holding "MIRROR" where the host holds "HOST-SECRET"); several cases check that they did.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyseccomp
import pytest

from services.controller.oci import default_config
from services.platform.filters import DENIED_SYSCALLS
from tests.cbuild import CBuild, cbin_fixture, install_into  # noqa: F401 - the cbin fixture
from tests.integration.test_kernel import DOCKER_CAPS
from tests.integration.zerovisor import Zerovisor
from tests.rootfs import make_bundle

pytestmark = pytest.mark.integration

#: Far more "../" than any path here is deep: from anywhere, they reach "/".
UP = "../" * 24
#: mtime of everything in the sentinel trees (2001-09-09).
OLD = 1_000_000_000
Snapshot = dict[str, tuple[object, ...]]


def build_sentinel(path: Path, secret: str, seen_as: Path | None = None) -> None:
    """Files, a directory, symlinks (relative, absolute, to a directory) and a fifo, all with old
    mtimes; seen_as is where the tree's absolute symlink takes path to be."""
    (path / "dir").mkdir(parents=True)
    for name, text, mode in (
        ("f", "f\n", 0o644),
        ("g", "g\n", 0o640),
        ("secret", f"{secret}\n", 0o600),
        ("dir/inner", "inner\n", 0o644),
    ):
        (path / name).write_text(text)
        (path / name).chmod(mode)
    os.mkfifo(path / "fifo", 0o600)
    (path / "link_rel").symlink_to("f")
    (path / "link_abs").symlink_to((seen_as or path) / "secret")
    (path / "link_dir").symlink_to("dir")
    for p in [*path.rglob("*"), path]:
        os.utime(p, (OLD, OLD), follow_symlinks=False)


def snapshot(top: Path, skip: set[Path]) -> Snapshot:
    """rel path -> (type, mode, uid, gid, (size, links, inode), contents or target, mtime) of all
    under top but skip."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            data: object = None
            if stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(path)
            out[str(path.relative_to(top))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                None if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_nlink, st.st_ino),
                data,
                st.st_mtime_ns,
            )
    return out


class Escape:
    """A test's host side: the sentinel, a bundle whose rootfs mirrors it, and the checks."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.sentinel = tmp_path / "host_sentinel"
        self.token = f"zv-escape-{secrets.token_hex(6)}"
        self.rw = tmp_path / "rwdir"
        build_sentinel(self.sentinel, "HOST-SECRET")
        self.rw.mkdir()
        (self.rw / "up").symlink_to("..")
        (self.rw / "upsent").symlink_to("../host_sentinel")
        (self.rw / "abs").symlink_to(self.sentinel)
        (self.rw / "tosent").symlink_to("/sent/f")
        # The run directory exists before the first snapshot, so that it is the only thing that grows.
        (tmp_path / "root").mkdir(mode=0o700)
        self.bundle_dir = tmp_path / "bundle"
        self.rootfs = self.bundle_dir / "rootfs"

    def bundle(
        self,
        args: list[str],
        mounts: Sequence[dict[str, Any]] = (),
        caps: Sequence[str] = tuple(DOCKER_CAPS),
        **env: str,
    ) -> Path:
        """The bundle running args, with extra mounts and env, its rootfs holding the mirrors."""
        config_mounts = [*default_config()["mounts"], *mounts]
        bundle = make_bundle(self.bundle_dir, args, mounts=config_mounts)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
        config["process"]["env"] += [f"{k}={v}" for k, v in env.items()]
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        build_sentinel(self.rootfs / "host_sentinel", "MIRROR", Path("/host_sentinel"))
        build_sentinel(self.rootfs / str(self.sentinel).lstrip("/"), "MIRROR", self.sentinel)
        for mount in mounts:
            (self.rootfs / mount["destination"].lstrip("/")).mkdir(parents=True, exist_ok=True)
        (self.rootfs / "work").mkdir()
        # Absolute symlinks at host files, and relative ones that leave the rootfs from its root.
        (self.rootfs / "evil").symlink_to(self.sentinel / "f")
        (self.rootfs / "evil_dir").symlink_to(self.sentinel)
        (self.rootfs / "evil_secret").symlink_to(self.sentinel / "secret")
        (self.rootfs / "evil_rel").symlink_to("../../host_sentinel/f")
        (self.rootfs / "work" / "evil_deep").symlink_to("../../../host_sentinel")
        return bundle

    def fill(self, text: str) -> str:
        """text with @S@ (the sentinel's absolute path), @SR@ (the same without its leading /),
        @UP@ and @T@ (the token) filled in."""
        sentinel = str(self.sentinel)
        text = text.replace("@SR@", sentinel.lstrip("/")).replace("@S@", sentinel)
        return text.replace("@UP@", UP).replace("@T@", self.token)

    def script(self, text: str) -> str:
        """A shell script of text, filled in, with stderr joining stdout."""
        return "exec 2>&1\n" + self.fill(text)

    def mirror(self, rel: str = "f") -> str:
        """The text of rel in the rootfs's copy at the sentinel's absolute path."""
        return (self.rootfs / str(self.sentinel).lstrip("/") / rel).read_text()

    @contextlib.contextmanager
    def untouched(self) -> Iterator[None]:
        """Nothing outside the rootfs changes within the block, but the run directory and the
        rw bind mount's source; no file named after the token appears in an ancestor of the rootfs."""
        skip = {self.tmp / "root", self.rootfs, self.rw}
        before = snapshot(self.tmp, skip)
        assert "host_sentinel/secret" in before and "bundle/config.json" in before
        yield
        after = snapshot(self.tmp, skip)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert not changed, {k: (before.get(k), after.get(k)) for k in sorted(changed)}
        for ancestor in self.rootfs.parents:
            assert not any(p.name.startswith(self.token) for p in ancestor.iterdir()), ancestor


@pytest.fixture
def host(tmp_path: Path) -> Escape:
    return Escape(tmp_path)


def sh_escape(zv: Zerovisor, host: Escape, script: str, cid: str, **kw: Any) -> str:
    """Run `sh -c script` in host's bundle, leaving the host untouched; its output."""
    bundle = host.bundle(["sh", "-c", host.script(script)], **kw)
    with host.untouched():
        out = zv("run", "-b", str(bundle), cid, timeout=300, check=False)
    assert "HOST-SECRET" not in out.stdout, out.stdout
    return out.stdout


#: Mutations aimed at directory @D@ (a host sentinel path, when resolved on the host).
MUTATIONS = """
echo pwned > @D@/f; echo pwned >> @D@/g; echo pwned > @D@/new
mkdir @D@/m; mkdir -p @D@/p/q; mkfifo @D@/ff; mknod @D@/nod p
chmod 777 @D@/f; chown 65534:65534 @D@/g; chgrp 65534 @D@/dir
touch @D@/secret; touch -d '2020-01-01' @D@/dir/inner; truncate -s 0 @D@/g
ln @D@/secret hl_$$ && echo pwned >> hl_$$; ln -s /etc/passwd @D@/sl
mv @D@/dir/inner moved_$$; mv @D@/link_rel @D@/renamed; mv @D@/secret @D@/dir/
rm -f @D@/link_abs; rm -f @D@/fifo; rm -rf @D@/link_dir
"""


def test_dotdot_chains(zv: Zerovisor, host: Escape) -> None:
    lines = ["mkdir -p /work/a/b/c"]
    for cwd, depth in (("/", 0), ("/work", 1), ("/work/a/b/c", 4), ("/dev", 1), ("/tmp", 1)):
        lines.append(f"cd {cwd}")
        # The rootfs is tmp_path/bundle/rootfs: depth+2 "../" reach tmp_path on the host.
        for target in ("../" * (depth + 2) + "host_sentinel", "@UP@@SR@", "@S@/@UP@@SR@"):
            lines.append(MUTATIONS.replace("@D@", target))
    lines += ["echo x > @UP@@T@", "mkdir @UP@@T@.d", "mv /work/a @UP@@T@.moved"]
    sh_escape(zv, host, "\n".join(lines), "dotdot")
    # Resolved in the container's root, they reached the rootfs's copies.
    assert "pwned" in (host.rootfs / "host_sentinel" / "f").read_text()
    assert "pwned" in host.mirror()
    assert (host.rootfs / host.token).exists()


def test_absolute_symlinks_at_host_files(zv: Zerovisor, host: Escape) -> None:
    script = (
        """
cat /evil_secret /evil_dir/secret /evil_dir/link_abs
echo pwned > /evil; echo pwned >> /evil_rel; chmod 777 /evil; chown 65534 /evil_rel
truncate -s 0 /evil_secret; touch /evil_secret; touch -d '2020-01-01' /evil
"""
        + MUTATIONS.replace("@D@", "/evil_dir")
        + MUTATIONS.replace("@D@", "/work/evil_deep")
        + """
ln -sf @S@/g /work/new_abs; echo pwned > /work/new_abs
cp /etc/passwd /evil_dir/link_abs; cp /etc/passwd /evil_secret
rm /evil /evil_secret; rm -r /evil_dir
"""
    )
    out = sh_escape(zv, host, script, "abssym")
    assert out.startswith("MIRROR\nMIRROR\nMIRROR\n"), out
    assert "pwned" in host.mirror()
    assert "pwned" in (host.rootfs / "host_sentinel" / "f").read_text()


def test_proc_self_root_and_cwd(zv: Zerovisor, host: Escape) -> None:
    script = "cat /proc/self/root/../../host_sentinel/secret /proc/1/root@S@/secret\nmkdir -p /work/a\n"
    for base in (
        "/proc/self/root/../../host_sentinel",
        "/proc/self/root@S@",
        "/proc/1/root/../../host_sentinel",
        "/proc/self/cwd/../../host_sentinel",
        "/proc/self/fd/3/../../host_sentinel",
        "/proc/$$/fd/3/@UP@@SR@",
        "/proc/thread-self/root/../../host_sentinel",
    ):
        script += f"exec 3< /work/a\ncd /work/a\n{MUTATIONS.replace('@D@', base)}\n"
    script += """
cd /proc/self/cwd/..; echo pwned > ../../host_sentinel/f; mkdir ../../host_sentinel/m2
cd /proc/self/root; echo pwned > ../../host_sentinel/f; echo pwned > @UP@@T@
exec 4< /; cd /proc/self/fd/4; echo pwned > ../../host_sentinel/f
cd /proc/1/cwd; echo pwned > ../../host_sentinel/f; cd /
ln -s /proc/self/root/../../host_sentinel /work/plink; echo pwned > /work/plink/f; mkdir /work/plink/m3
ln -s /proc/1/root /work/rootlink; echo pwned > /work/rootlink/../../host_sentinel/f
"""
    out = sh_escape(zv, host, script, "procroot")
    assert out.startswith("MIRROR\nMIRROR\n"), out


def test_bind_mounts_do_not_lead_out(zv: Zerovisor, host: Escape) -> None:
    """`..` above a bind mount's root is the container's, not the host's; a read-only bind of
    the sentinel itself stays read-only whatever path reaches it."""
    mounts = [
        {"destination": "/rw", "type": "bind", "source": str(host.rw), "options": ["bind", "rw"]},
        {"destination": "/sent", "type": "bind", "source": str(host.sentinel), "options": ["bind", "ro"]},
    ]
    script = (
        MUTATIONS.replace("@D@", "/rw/../host_sentinel")
        + "cd /rw\n"
        + MUTATIONS.replace("@D@", "../host_sentinel")
        + MUTATIONS.replace("@D@", "/rw/upsent")
        + MUTATIONS.replace("@D@", "/rw/up/host_sentinel")
        + MUTATIONS.replace("@D@", "/rw/abs")
        + MUTATIONS.replace("@D@", "/sent")
        + MUTATIONS.replace("@D@", "/rw/../sent")
        + """
echo pwned > /rw/tosent; echo pwned > /rw/up/@T@
mv /sent/f /rw/stolen; ln /sent/g /rw/hl; echo pwned >> /rw/hl; mv /rw/up/host_sentinel /sent/moved
cat /sent/f
"""
    )
    bundle = host.bundle(["sh", "-c", host.script(script)], mounts=mounts)
    with host.untouched():
        out = zv("run", "-b", str(bundle), "binds", timeout=300, check=False).stdout
    assert "Read-only file system" in out
    assert out.rstrip().endswith("f"), out  # /sent/f is the host's f, unchanged
    assert "pwned" in (host.rootfs / "host_sentinel" / "f").read_text()


def test_symlink_swapped_during_the_call(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    bundle = host.bundle(["sh", "-c", "for t in $TARGETS; do rm -rf /race; /swap_race $t 3000 || exit 1; done"])
    targets = ["/@UP@@SR@", "@S@", "../../../host_sentinel", "@UP@@SR@"]
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["env"].append("TARGETS=" + " ".join(host.fill(t) for t in targets))
    (bundle / "config.json").write_text(json.dumps(config))
    install_into(host.rootfs, cbin("swap_race"))
    with host.untouched():
        out = zv("run", "-b", str(bundle), "swap", timeout=600).stdout
    lines = out.splitlines()
    assert len(lines) == len(targets), out
    for line in lines:
        flips, ops = (int(part.split("=")[1]) for part in line.split())
        assert flips > 0 and ops > 0, out


def test_path_buffer_flipped_during_the_call(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    pairs = []
    for escape in (f"/{UP}{str(host.sentinel).lstrip('/')}/f", "../../host_sentinel/f", f"{host.sentinel}/g"):
        prefix = "/work/" if escape.startswith("/") else "work/"
        pairs += [prefix + "s" * (len(escape) - len(prefix)), escape]  # as long: torn reads mix the two
    args = " ".join(f"/flip_path {a} {b} 4000 || exit 1;" for a, b in zip(pairs[::2], pairs[1::2], strict=True))
    bundle = host.bundle(["sh", "-c", args])
    install_into(host.rootfs, cbin("flip_path"))
    with host.untouched():
        out = zv("run", "-b", str(bundle), "flip", timeout=600).stdout
    assert [int(line.split("=")[1]) > 0 for line in out.splitlines()] == [True] * 3, out


def test_fd_relative_opens(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    bundle = host.bundle(["/dirfd_escape", str(host.sentinel), "writes"])
    install_into(host.rootfs, cbin("dirfd_escape"))
    with host.untouched():
        out = zv("run", "-b", str(bundle), "dirfd", timeout=300).stdout
    assert "HOST-SECRET" not in out, out
    assert "read rootfd MIRROR" in out, out
    # Through a directory fd the kernel keeps `..` in the root: the writes reached the copy.
    assert "rootfd:openat-append 0" in out and "pwned" in host.mirror(), out


def test_opened_directories_give_no_host_fd(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    """open("/", O_PATH|O_WRONLY) and the like are trapped: what comes back must not be a
    directory fd of the host's, from which `..` would walk out of the container."""
    bundle = host.bundle(["/dirfd_escape", str(host.sentinel), "inject"])
    install_into(host.rootfs, cbin("dirfd_escape"))
    with host.untouched():
        out = zv("run", "-b", str(bundle), "inject", timeout=300).stdout
    assert "HOST-SECRET" not in out, out
    assert "read rootfd MIRROR" in out, out
    assert out.count("inject:") >= 20, out  # it got through every open


def test_int80_is_killed(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    bundle = host.bundle(["/int80"])
    install_into(host.rootfs, cbin("int80"))
    with host.untouched():
        out = zv("run", "-b", str(bundle), "int80", timeout=120, check=False)
    assert out.returncode == 128 + 31, out  # SIGSYS
    assert out.stdout == "before\n", out


def native_number(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


#: What the issue names; every other name in DENIED_SYSCALLS this arch has is checked too.
REQUIRED_DENIED = (
    *("mount", "umount2", "pivot_root", "ptrace", "process_vm_writev", "bpf", "kexec_load", "kexec_file_load"),
    *("init_module", "finit_module", "delete_module", "keyctl", "add_key", "request_key", "perf_event_open"),
    *("userfaultfd", "unshare", "setns", "reboot", "swapon", "swapoff", "acct"),
)


def test_each_denied_syscall_fails_with_eperm(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    from services.platform.linux import CAPABILITIES

    # Every capability we have: the filter alone must refuse (mount would otherwise get to ENOENT).
    status = Path("/proc/self/status").read_text()
    bounding = int(next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1], 16)
    caps = sorted(name for name, number in CAPABILITIES.items() if bounding >> number & 1)
    bundle = host.bundle(["/denied"], caps=caps)
    install_into(host.rootfs, cbin("denied"))
    with host.untouched():
        out = zv("run", "-b", str(bundle), "denied", timeout=120).stdout
    results: dict[str, str] = {}
    for line in out.splitlines():
        label, result = line.rsplit(" ", 1)
        results[label] = result
    by_name = {label.split("(")[0]: r for label, r in results.items()}
    for name in REQUIRED_DENIED:
        assert by_name.get(name, "missing") != "skip", (name, out)
    expected = {name for name in DENIED_SYSCALLS if native_number(name) >= 0}
    assert expected <= by_name.keys(), expected - by_name.keys()
    wrong = {label: r for label, r in results.items() if label != "clone3" and r not in ("skip", str(errno.EPERM))}
    assert not wrong, {label: errno.errorcode.get(int(r), r) for label, r in wrong.items() if r.isdigit()}
    assert results["clone3"] == str(errno.ENOSYS)


def test_device_nodes_do_not_reach_host_devices(zv: Zerovisor, host: Escape) -> None:
    """With CAP_MKNOD a root program may make nodes, and a rootfs may ship some; neither reads
    the host's disk or kernel log, or writes that log (the only device written here: harmless)."""
    dev = os.stat("/").st_dev
    if os.major(dev) == 0:  # an overlay or tmpfs: take the first real disk
        disks = [p for p in Path("/sys/block").iterdir() if not p.name.startswith(("loop", "ram", "zram"))]
        assert disks, "no disk on this machine"
        dev = os.makedev(*map(int, (disks[0] / "dev").read_text().split(":")))
    script = f"""
mknod /work/disk b {os.major(dev)} {os.minor(dev)}; echo "disk=$(head -c 4096 /work/disk | wc -c)"
echo "disk_pre=$(head -c 4096 /work/disk_pre | wc -c)"
mknod /work/kmsg c 1 11; echo "@T@" > /work/kmsg
echo "kmsg_read=$(head -n 1 /work/kmsg_pre | wc -c)"
echo "@T@" > /work/kmsg_pre; echo "@T@" >> /work/kmsg_pre
"""
    bundle = host.bundle(["sh", "-c", host.script(script)])
    os.mknod(host.rootfs / "work" / "disk_pre", stat.S_IFBLK | 0o600, dev)
    os.mknod(host.rootfs / "work" / "kmsg_pre", stat.S_IFCHR | 0o644, os.makedev(1, 11))
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(kmsg, 0, os.SEEK_END)
        with host.untouched():
            out = zv("run", "-b", str(bundle), "devices", timeout=120, check=False).stdout
        logged = b""
        with contextlib.suppress(BlockingIOError):
            while record := os.read(kmsg, 8192):
                logged += record
    finally:
        os.close(kmsg)
    for line in ("disk=0", "disk_pre=0", "kmsg_read=0"):
        assert line in out.splitlines(), out
    assert host.token.encode() not in logged, out


def test_services_sockets_are_out_of_reach(zv: Zerovisor, host: Escape, cbin: CBuild) -> None:
    name = f"zerovisor-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name)
        listener.listen(8)
        binary = cbin("connect")
        bundle = host.bundle(["/connect"], ZV_RUN_DIR=str(zv.root), ZV_ABSTRACT=name)
        install_into(host.rootfs, binary)
        with host.untouched():
            out = zv("run", "-b", str(bundle), "sockets", timeout=120).stdout
        # From the host the same program reaches them all: the container's failures are its walls.
        native = subprocess.run(
            [str(binary)], env={"ZV_RUN_DIR": str(zv.root), "ZV_ABSTRACT": name}, capture_output=True, text=True
        )
    inside = dict(line.split() for line in out.splitlines())
    outside = dict(line.split() for line in native.stdout.splitlines())
    assert outside["abstract"] == "0" and outside["controller.fds"] == "0", native
    assert inside.pop("abstract") == str(errno.ECONNREFUSED), out
    assert len(inside) == 9 and set(inside.values()) == {str(errno.ENOENT)}, out
