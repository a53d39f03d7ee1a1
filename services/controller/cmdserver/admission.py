"""Whether the command server may run a caller's command: only when the worker, a fork of the
server, could not be told apart from the caller by anything the caller did not send.

The caller sends its files, environment, working directory, umask and signal state; everything
else a process carries, the worker inherits from the server. So the server compares that rest,
read from /proc for the process at the other end of the connection (not from anything the
caller says), with its own: a caller with fewer privileges (capabilities dropped, a seccomp
filter, no_new_privs, another user or group, a tighter cgroup or limits, another namespace, root
or LSM label) is refused, so that nobody gains a thing by asking the server.
"""

from __future__ import annotations

import os
import select
import socket

from common.fdpass import peer_credentials

#: Lines of /proc/PID/status that describe privileges.
STATUS_FIELDS = (
    "Uid:",
    "Gid:",
    "Groups:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "CapAmb:",
    "NoNewPrivs:",
    "Seccomp:",
    "Seccomp_filters:",
)
#: Files of /proc/PID read whole: the cgroup, resource limits, OOM preference and LSM label.
WHOLE_FILES = ("cgroup", "limits", "oom_score_adj", "attr/current")
#: The namespaces of /proc/PID/ns.
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
#: SO_PEERPIDFD (Linux 6.5): a pidfd of the peer, which Python 3.11's socket module does not name.
SO_PEERPIDFD = 77

#: What a worker inherits from the server that matters: read by process_view.
ProcessView = tuple[object, ...]


def process_view(proc: str) -> ProcessView:
    """The privileges, confinement and namespaces of the process whose /proc directory is proc."""
    with open(f"{proc}/status") as f:
        status = tuple(line for line in f if line.startswith(STATUS_FIELDS))
    return (status, *(_read(f"{proc}/{name}") for name in WHOLE_FILES), *_identities(proc))


def _read(path: str) -> str | None:
    """A file's text; None where the kernel has none (no LSM: attr/current says EINVAL)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _identities(proc: str) -> list[tuple[int, int] | None]:
    """(device, inode) of each namespace, then of the root directory."""
    out: list[tuple[int, int] | None] = []
    for path in [*(f"{proc}/ns/{ns}" for ns in NAMESPACES), f"{proc}/root"]:
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino))
        except OSError:
            out.append(None)
    return out


def admitted(conn: socket.socket, own: ProcessView) -> bool:
    """Whether the process at the other end of conn looks, to a worker, exactly like own.

    The peer is pinned by a pidfd: if it is still alive after its /proc was read, its pid was
    not reused by another process in between.
    """
    pid, _, _ = peer_credentials(conn)
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return False  # an older kernel: the peer cannot be pinned
    try:
        try:
            view = process_view(f"/proc/{pid}")
        except OSError:
            return False  # gone already
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return not poller.poll(0) and view == own
    finally:
        os.close(pidfd)
