"""The run directory: where a set of services keep their sockets, pid locks and logs.

Layout of ``$RUN`` (mode 0700, owned by the service user, so the sandbox never sees it):

    <service>.zmq    ZMQ ROUTER endpoint (ipc://)
    <service>.fds    fd channel, AF_UNIX SOCK_SEQPACKET
    <service>.pid    instance lock: flock()ed by the live service, holding its pid
    <service>.log    the service's log when it was started by `controller up`
    <service>.starts how many times the service started here since `controller down` (an integer)
    forkserver.sock  the platform's fork server (forkserver.pid its lock): it outlives the platform
    events.zmq       the sentry's PUB endpoint for container events
    platform-events.zmq  the platform's PUB endpoint for task exits
    exits/           exits the fork server reaped, one JSON file per pid, written durably and
                     kept until the container is destroyed (an exec'd process's: until waited for)
    hostnames/       <id>.hostname: a hostname a container set, kept by the sentry for its next
                     instance until the container is deleted
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConflictError, InvalidArgument, PermissionDenied

#: The four services, in the order they start.
SERVICES: tuple[str, ...] = ("platform", "gofer", "sentry", "controller")
#: The platform's fork server: it has an instance lock of its own, for it outlives the platform.
FORKSERVER = "forkserver"
#: Default root (and run directory) when neither --root nor ZEROVISOR_ROOT says otherwise.
DEFAULT_ROOT = "/run/zerovisor"
#: sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class RunDir:
    """Names of everything inside one run directory. Creating it is ``ensure()``'s job."""

    #: Absolute path of the directory.
    path: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> RunDir:
        """A RunDir for path, made absolute so that socket names do not depend on the cwd."""
        return cls(Path(os.path.abspath(path)))

    def ensure(self) -> RunDir:
        """Create the directory (mode 0700), or check an existing one is ours and private."""
        longest = self.socket_path("controller")
        if len(os.fsencode(longest)) > _MAX_SOCKET_PATH:
            raise InvalidArgument(f"run directory {self.path} is too long for a Unix socket path ({longest})")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.path.stat()
        if st.st_uid != os.geteuid():
            raise PermissionDenied(f"run directory {self.path} is owned by uid {st.st_uid}, not {os.geteuid()}")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.path, 0o700)
        return self

    def zmq_path(self, service: str) -> Path:
        """Filesystem path behind the service's ZMQ endpoint."""
        return self.path / f"{service}.zmq"

    def endpoint(self, service: str) -> str:
        """ZMQ endpoint of the service's ROUTER socket."""
        return f"ipc://{self.zmq_path(service)}"

    def socket_path(self, service: str) -> Path:
        """Path of the service's fd channel."""
        return self.path / f"{service}.fds"

    def pid_path(self, service: str) -> Path:
        """Path of the service's instance lock."""
        return self.path / f"{service}.pid"

    def starts_path(self, service: str) -> Path:
        """Path of the count of the service's starts, written under its instance lock."""
        return self.path / f"{service}.starts"

    @property
    def forkserver_socket(self) -> Path:
        """Where the platform's fork server listens for its platform."""
        return self.path / f"{FORKSERVER}.sock"

    def hostname_path(self, cid: str) -> Path:
        """Where the sentry keeps the hostname a container set (sethostname), for its next
        instance: a restart must not change what uname tells the container."""
        # A suffix: ids may be "." or "..", which must not name a directory.
        return self.path / "hostnames" / f"{cid}.hostname"

    def log_path(self, service: str) -> Path:
        """Where `controller up` sends the service's log."""
        return self.path / f"{service}.log"

    @property
    def events_endpoint(self) -> str:
        """ZMQ endpoint of the container events the sentry publishes (container.<id>.<event>)."""
        return f"ipc://{self.path / 'events.zmq'}"

    @property
    def task_events_endpoint(self) -> str:
        """ZMQ endpoint of the task events the platform publishes (task.<id>.exit)."""
        return f"ipc://{self.path / 'platform-events.zmq'}"

    def running_pid(self, service: str) -> int | None:
        """Pid of the live instance of service, None when none holds the lock, or 0 while the
        holder has not written its pid yet (ask again).

        A lock, unlike a pid, cannot go stale: the kernel drops it when the holder dies, even
        as a zombie, and it cannot name a recycled pid.
        """
        try:
            fd = os.open(self.pid_path(service), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                pid = int(text) if text.isdigit() else 0
                # A new holder writes its pid just after it locks: until then the file still
                # names the instance before it, which is dead. That is "being written" too.
                return pid if pid and _alive(pid) else 0
            return None
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    """Whether pid is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ([b"Z"], [b"X"], [])


class InstanceLock:
    """The flock that makes a service the only one of its kind in a run directory.

    Owns its fd (close-on-exec) until ``release()``; the kernel releases it if we die.
    """

    def __init__(self, run_dir: RunDir, service: str) -> None:
        self.path = run_dir.pid_path(service)
        self.fd = -1
        while self.fd < 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ConflictError(f"{service} is already running in {run_dir.path} (pid {holder})") from None
                raise
            # A releasing instance unlinks the file before it unlocks: a lock on an inode that
            # is no longer at the path locks nothing. Try again on the file that is there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
            else:
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the pid file and drop the lock."""
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = -1
