"""Schemas of the Gofer domain (sentry -> gofer): a container's files, operated on its behalf.

Every path is a container path, absolute (the sentry has joined it to the task's cwd or dirfd),
and is resolved by the gofer inside the mount it falls under with
openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS). A failed operation comes back as an error
carrying the errno the program should see (EROFS on a read-only mount, EACCES, ENOENT, ...).
Every call names the caller's file-system credentials, under which the gofer acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: A time in PathOpArgs.times_ns that Utimens leaves as it is (utimensat's UTIME_OMIT).
TIME_OMIT = -(1 << 63)


@dataclass(frozen=True, slots=True, kw_only=True)
class Creds:
    """The file-system identity of the task the gofer acts for, in host ids."""

    #: fsuid.
    uid: int
    #: fsgid.
    gid: int
    #: Supplementary groups.
    groups: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class MountPolicy:
    """One host directory the gofer serves under a container path."""

    #: Container path where it is mounted (absolute, clean); "/" for the rootfs.
    destination: str
    #: Host directory (absolute).
    source: str
    #: Refuse every write with EROFS.
    readonly: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachArgs:
    """Arguments to Gofer.Attach: open a container's rootfs and bind mounts."""

    #: Container id.
    cid: str
    #: The rootfs first (destination "/"), then the bind mounts in mount order.
    mounts: list[MountPolicy]
    #: Container paths the program may not touch (OCI maskedPaths).
    masked_paths: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class DetachArgs:
    """Arguments to Gofer.Detach: forget a container's mounts."""

    #: Container id.
    cid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MountFdsArgs:
    """Arguments to Gofer.MountFds: the mounts of an attached container, for directfs."""

    #: Container id.
    cid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MountFdsResult:
    """Result of Gofer.MountFds."""

    #: A dup of each mount's fd (the detached clone the gofer opened, its policy set on it), in
    #: the order of AttachArgs.mounts, sent as SCM_RIGHTS (the receiver's).
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenArgs:
    """Arguments to Gofer.Open: open (maybe create or truncate) a file."""

    #: Container id.
    cid: str
    #: Container path.
    path: str
    #: open(2) flags as the program passed them.
    flags: int
    #: Mode for a created file (before the umask, which the sentry applied).
    mode: int = 0
    #: The caller's credentials.
    creds: Creds
    #: openat2 resolve flags the program asked for (RESOLVE_*), 0 for open/openat.
    resolve: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenResult:
    """Result of Gofer.Open."""

    #: The opened file, sent as SCM_RIGHTS (exactly one).
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class PathOpArgs:
    """Arguments to the path operations: Gofer.Mkdir, Mknod, Unlink, Rmdir, Symlink, Link,
    Rename, Chmod, Chown, Truncate, Utimens, SetXattr, RemoveXattr, Access.

    Each uses the fields its syscall has; the rest keep their defaults.
    """

    #: Container id.
    cid: str
    #: The path operated on (the new name for Link and Symlink, the old one for Rename).
    path: str
    #: The caller's credentials.
    creds: Creds
    #: Second path: Rename's new name, Link's existing file, Symlink's target (not resolved).
    other: str = ""
    #: Mode for Mkdir, Mknod, Chmod (umask already applied for the creating calls); Access's mask.
    mode: int = 0
    #: Device number for Mknod.
    dev: int = 0
    #: New owner for Chown (-1 keeps it).
    uid: int = -1
    #: New group for Chown (-1 keeps it).
    gid: int = -1
    #: New length for Truncate.
    length: int = 0
    #: [atime_ns, mtime_ns] for Utimens (TIME_OMIT keeps one); None sets both to now.
    times_ns: list[int] | None = None
    #: Follow a final symlink (chmod, chown, truncate, utimes, link with AT_SYMLINK_FOLLOW).
    follow: bool = True
    #: renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE); setxattr flags.
    flags: int = 0
    #: Extended attribute name.
    name: str = ""
    #: Extended attribute value.
    value: bytes = b""
