"""The container's filesystem view, built by its init before the program runs (child side).

This module owns what runc's rootfs_linux.go does: the spec's mounts inside the rootfs (with
mount(8)-style options parsed into flags and data), the default devices and /dev symlinks
when /dev is a tmpfs, pivot_root, masked and read-only paths and the read-only root. It runs
in the freshly cloned init, in its own mount namespace, and never in a service process.

Destinations are resolved inside the rootfs without following symlinks out of it (as
filepath-securejoin does); bind sources are host paths and are followed like mount(8) does.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from common.messages.spec import ContainerSpec, Mount
from services.platform import linux
from services.platform.linux import (
    MS_ATIME_MASK,
    MS_BIND,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    mount,
)

#: A sink for messages the parent should log (the sync channel's {"log": ...}).
LogFn = Callable[[str], None]


class SetupError(Exception):
    """One setup step failed; str() names the step and the cause."""


@contextmanager
def doing(what: str) -> Iterator[None]:
    """Name the step in any error raised inside, once (the innermost name wins)."""
    try:
        yield
    except SetupError:
        raise
    except Exception as e:
        raise SetupError(f"{what}: {e}") from e


# option -> (clear instead of set, flag), after runc's parseMountOptions.
_FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, linux.MS_SYNCHRONOUS),
    "atime": (True, linux.MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, linux.MS_NODEV),
    "diratime": (True, linux.MS_NODIRATIME),
    "dirsync": (False, linux.MS_DIRSYNC),
    "exec": (True, linux.MS_NOEXEC),
    "lazytime": (False, linux.MS_LAZYTIME),
    "loud": (True, linux.MS_SILENT),
    "mand": (False, linux.MS_MANDLOCK),
    "noatime": (False, linux.MS_NOATIME),
    "nodev": (False, linux.MS_NODEV),
    "nodiratime": (False, linux.MS_NODIRATIME),
    "noexec": (False, linux.MS_NOEXEC),
    "nolazytime": (True, linux.MS_LAZYTIME),
    "nomand": (True, linux.MS_MANDLOCK),
    "norelatime": (True, linux.MS_RELATIME),
    "nostrictatime": (True, linux.MS_STRICTATIME),
    "nosuid": (False, linux.MS_NOSUID),
    "nosymfollow": (False, linux.MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, linux.MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "silent": (False, linux.MS_SILENT),
    "strictatime": (False, linux.MS_STRICTATIME),
    "suid": (True, linux.MS_NOSUID),
    "sync": (False, linux.MS_SYNCHRONOUS),
}
_PROPAGATION_OPTIONS: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": linux.MS_SHARED,
    "rshared": linux.MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": linux.MS_UNBINDABLE,
    "runbindable": linux.MS_UNBINDABLE | MS_REC,
}
# Recursive attributes need mount_setattr(2); silently dropping "rro" would leave a mount
# writable, so they are refused instead.
_UNSUPPORTED_OPTIONS = frozenset(
    {"rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnoatime", "ratime"}
    | {"rnodiratime", "rdiratime", "rrelatime", "rnorelatime", "rstrictatime", "rnosymfollow", "rsymfollow"}
    | {"idmap", "ridmap"}
)
# runc-only options with no kernel meaning here.
_IGNORED_OPTIONS = frozenset({"tmpcopyup"})

# statvfs f_flag bits -> mount flags (ST_RELATIME is not MS_RELATIME).
_ST_TO_MS = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, linux.MS_NOSUID),
    (os.ST_NODEV, linux.MS_NODEV),
    (os.ST_NOEXEC, linux.MS_NOEXEC),
    (os.ST_NOATIME, linux.MS_NOATIME),
    (os.ST_NODIRATIME, linux.MS_NODIRATIME),
    (os.ST_RELATIME, linux.MS_RELATIME),
)

#: Device nodes every container gets when /dev is a tmpfs (runc's DefaultSimpleDevices).
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: /dev symlinks runc creates.
DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    # The devpts instance mounted with newinstance has its own ptmx; /dev/ptmx must use it.
    ("pts/ptmx", "ptmx"),
)


@dataclass(frozen=True, slots=True)
class MountOptions:
    """mount(8)-style options split into what mount(2) takes."""

    #: MS_* flags for the mount itself.
    flags: int
    #: Propagation changes (MS_PRIVATE, MS_SLAVE|MS_REC, ...), applied one by one afterwards.
    propagation: tuple[int, ...]
    #: The filesystem's own options, comma-separated ("mode=755,size=65536k").
    data: str


def parse_options(options: list[str]) -> MountOptions:
    """Split options into flags, propagation and data; ValueError for unsupported ones."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in _FLAG_OPTIONS:
            clear, flag = _FLAG_OPTIONS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION_OPTIONS:
            propagation.append(_PROPAGATION_OPTIONS[option])
        elif option in _UNSUPPORTED_OPTIONS:
            raise ValueError(f"mount option {option!r} is not supported")
        elif option not in _IGNORED_OPTIONS:
            data.append(option)
    return MountOptions(flags, tuple(propagation), ",".join(data))


def secure_join(root: str, unsafe: str) -> str:
    """root + unsafe with every symlink resolved as if root were "/" (filepath-securejoin).

    Missing components are kept as they are, so the result may not exist yet. The result is
    only as good as the tree staying unchanged until it is used: fine in a container's init,
    where nothing else runs in the rootfs yet.
    """
    parts = unsafe.split("/")
    parts.reverse()
    resolved = ""
    links = 0
    while parts:
        part = parts.pop()
        if part in ("", "."):
            continue
        if part == "..":
            resolved = resolved.rsplit("/", 1)[0]
            continue
        candidate = f"{resolved}/{part}"
        try:
            st = os.lstat(root + candidate)
        except FileNotFoundError:
            resolved = candidate
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > 255:
            raise OSError(errno.ELOOP, f"too many symlinks resolving {unsafe}")
        target = os.readlink(root + candidate)
        if target.startswith("/"):
            resolved = ""
        parts.extend(reversed(target.split("/")))
    return root + resolved if resolved else root


def _mount_flags_of(path: str) -> int:
    """The MS_* flags the mount holding path has now."""
    current = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if current & st)


def remount_bind(path: str, flags: int) -> None:
    """Change the flags of the bind mount at path (MS_BIND|MS_REMOUNT).

    In a user namespace the kernel refuses to clear flags that were locked when the mount
    was copied from a more privileged namespace (EPERM); retry with those kept, as runc does.
    """
    wanted = MS_BIND | MS_REMOUNT | (flags & ~(MS_BIND | MS_REC | MS_REMOUNT))
    try:
        mount(None, path, None, wanted)
    except PermissionError:
        locked = _mount_flags_of(path) & linux.MS_LOCKABLE
        if locked & MS_ATIME_MASK:
            wanted &= ~MS_ATIME_MASK
        mount(None, path, None, wanted | locked)


def _create_mountpoint(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, 0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    if not os.path.lexists(path):
        # The placeholder only carries the mount; it is closed at once.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644))


def is_bind(m: Mount) -> bool:
    """True for a bind mount, whether said by its type or by its options."""
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def mount_entry(rootfs: str, m: Mount, has_cgroupns: bool, log: LogFn) -> None:
    """Mount one spec entry inside rootfs (before pivot_root)."""
    opts = parse_options(m.options)
    dest = secure_join(rootfs, m.destination)
    if is_bind(m):
        with doing(f"bind-mounting {m.source} on {m.destination}"):
            # mount(2) follows a host symlink too; ENOENT here says what is missing.
            source_is_dir = stat.S_ISDIR(os.stat(m.source).st_mode)
            _create_mountpoint(dest, source_is_dir)
            mount(m.source, dest, None, MS_BIND | (opts.flags & MS_REC))
            # A bind mount ignores every other flag until it is remounted.
            if opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT):
                remount_bind(dest, opts.flags)
    else:
        fstype, source, data = m.type, m.source, opts.data
        if fstype in ("cgroup", "cgroup2"):
            if not has_cgroupns:
                # Without a cgroup namespace a cgroup2 mount would show the host's whole tree.
                log(f"no cgroup namespace: {m.destination} gets an empty read-only tmpfs")
                fstype, source, data = "tmpfs", "tmpfs", ""
                opts = MountOptions(opts.flags | MS_RDONLY, opts.propagation, "")
            else:
                fstype, data = "cgroup2", ""
        with doing(f"mounting {m.type} on {m.destination}"):
            os.makedirs(dest, 0o755, exist_ok=True)
            mount(source, dest, fstype, opts.flags & ~MS_REMOUNT, data or None)
    with doing(f"setting propagation of {m.destination}"):
        for propagation in opts.propagation:
            mount(None, dest, None, propagation)


def needs_dev_setup(spec: ContainerSpec) -> bool:
    """True when the spec mounts a tmpfs on /dev, which then needs runc's default devices."""
    return any(m.destination == "/dev" and m.type == "tmpfs" and not is_bind(m) for m in spec.mounts)


def setup_dev(rootfs: str) -> None:
    """Default devices, /dev symlinks and /dev/ptmx on the container's /dev tmpfs.

    Devices are bind mounts of the host's nodes onto empty files, as runc does in a user
    namespace: mknod would need CAP_MKNOD on the host and a tmpfs without nodev.
    """
    dev = secure_join(rootfs, "/dev")
    for name in DEFAULT_DEVICES:
        with doing(f"bind-mounting /dev/{name}"):
            _create_mountpoint(f"{dev}/{name}", directory=False)
            mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for target, name in DEV_SYMLINKS:
        with doing(f"linking /dev/{name} to {target}"):
            if os.path.lexists(f"{dev}/{name}"):
                os.unlink(f"{dev}/{name}")
            os.symlink(target, f"{dev}/{name}")


def enter_rootfs(rootfs: str) -> None:
    """pivot_root into rootfs and detach the old root, the way runc does it."""
    with doing(f"pivoting into {rootfs}"):
        os.chdir(rootfs)
        # pivot_root(".", ".") stacks the old root under the new one, so no put_old directory
        # is needed in the rootfs, then the old root is detached from "." below.
        linux.pivot_root(".", ".")
        # rslave first so that the detach cannot propagate to any peer outside.
        mount(None, ".", None, MS_SLAVE | MS_REC)
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")


def mask_paths(paths: list[str]) -> None:
    """Hide paths (after pivot_root): files under /dev/null, directories under an empty ro tmpfs."""
    if paths and not os.path.exists("/dev/null"):
        raise SetupError("masking paths: the container has no /dev/null")
    for path in paths:
        with doing(f"masking {path}"):
            try:
                mount("/dev/null", path, None, MS_BIND)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                mount("tmpfs", path, "tmpfs", MS_RDONLY)


def readonly_paths(paths: list[str]) -> None:
    """Make paths read-only (after pivot_root) by bind-mounting each onto itself."""
    for path in paths:
        with doing(f"making {path} read-only"):
            try:
                mount(path, path, None, MS_BIND | MS_REC)
            except FileNotFoundError:
                continue
            remount_bind(path, MS_RDONLY)


def readonly_root() -> None:
    """Remount the new root read-only (after pivot_root)."""
    with doing("remounting / read-only"):
        remount_bind("/", MS_RDONLY)


def prepare_root(rootfs: str) -> None:
    """Make every mount private, then make rootfs a mount point of its own for pivot_root."""
    with doing("making / private"):
        # On a systemd host "/" is shared: without this our mounts would appear outside.
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    with doing(f"bind-mounting the rootfs {rootfs} onto itself"):
        mount(rootfs, rootfs, None, MS_BIND | MS_REC)
