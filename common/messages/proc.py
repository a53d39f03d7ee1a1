"""Schemas of the Proc domain (controller and sentry): the processes of a running container:
listing them (Ps), starting one with exec (gVisor's control.ExecArgs, runsc's exec command),
waiting for one and signalling it.

ExecRequest is the CLI's (controller Proc.Exec): what the user gave, unset fields left to the
container's spec. ExecArgs is the resolved process (sentry Proc.Exec and Platform.Exec).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import InvalidArgument
from common.limits import RLIMITS
from common.messages.lifecycle import Limit
from common.messages.spec import Capabilities


@dataclass(frozen=True, slots=True, kw_only=True)
class PsArgs:
    """Arguments to Proc.Ps (the controller's and the sentry's)."""

    #: Container id.
    cid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Process:
    """One process of a container, as gVisor's control.Process describes it.

    Ids are the container's view: pids in its pid namespace, the uid in its user namespace.
    """

    #: Effective uid.
    uid: int
    #: Process id.
    pid: int
    #: Parent's process id; 0 when the parent is outside the container (the init's).
    ppid: int
    #: Thread ids, sorted (the process id among them).
    threads: list[int]
    #: CPU utilization: CPU time over lifetime, percent, capped at 99 as procps does.
    c: int
    #: Controlling terminal, "pts/N", or "?" for none.
    tty: str
    #: Start time: HH:MM today, MonDD (e.g. "Jan02") this year, else the year.
    stime: str
    #: CPU time (user + system), as Go prints a duration (e.g. "1.23s").
    time: str
    #: Executable short name (comm, e.g. "sh" for /bin/sh).
    cmd: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PsResult:
    """Result of Proc.Ps."""

    #: The container's processes, sorted by pid.
    processes: list[Process]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecRequest:
    """Arguments to the controller's Proc.Exec: `controller exec` as the user typed it.

    The files are the CLI's stdio (unless a terminal is asked for) and every --pass-fd, sorted by
    guest fd, then the --exec-fd file last when there is one.
    """

    #: Container id.
    id: str
    #: The OCI Process of --process, as JSON text; "" when the command line gives the process.
    process: str = ""
    #: argv from the command line (empty with --process).
    args: list[str] = field(default_factory=list)
    #: --cwd, else the process file's or the spec's.
    cwd: str | None = None
    #: --env KEY=VALUE entries, merged over the process's environment.
    env: list[str] = field(default_factory=list)
    #: --user's uid, else the process file's or the spec's.
    uid: int | None = None
    #: --user's gid, else the process file's or the spec's.
    gid: int | None = None
    #: --additional-gids, else the process file's or the spec's.
    additional_gids: list[int] | None = None
    #: --cap names, added to the bounding, effective and permitted sets.
    caps: list[str] = field(default_factory=list)
    #: --tty: the process gets a new terminal of the container (its master comes back).
    tty: bool = False
    #: Guest fd numbers of the files, in order (the exec file, if any, has none).
    guest_fds: list[int] = field(default_factory=list)
    #: Names this exec for the CLI that asked for it; a request sent again with the same token
    #: (after a service restart lost the reply) gets the process the first one started.
    token: str = ""
    #: The files, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecArgs:
    """Arguments to the sentry's Proc.Exec and Platform.Exec: the resolved process.

    fds[i] becomes guest fd guest_fds[i]; one more file than guest fds is the executable itself,
    which is then run from that file ("either a file or a filename, not both").
    """

    #: Container to run it in.
    container_id: str
    #: Program to exec; "" means argv[0], resolved through PATH in the container.
    filename: str = ""
    #: argv, argv[0] included.
    argv: list[str]
    #: Environment as KEY=VALUE strings; never logged.
    envv: list[str] = field(default_factory=list, repr=False)
    #: Working directory inside the container.
    wd: str = "/"
    #: User id inside the container.
    uid: int = 0
    #: Group id inside the container.
    gid: int = 0
    #: Supplementary group ids.
    extra_gids: list[int] = field(default_factory=list)
    #: Capability sets; None keeps runc's default set.
    capabilities: Capabilities | None = None
    #: Set no_new_privs before exec.
    no_new_privileges: bool = False
    #: Give the process a new terminal of the container as stdio and controlling terminal.
    terminal: bool = False
    #: rlimits by name ("RLIMIT_NOFILE").
    limits: dict[str, Limit] = field(default_factory=dict)
    #: Guest fd numbers of fds, in order.
    guest_fds: list[int] = field(default_factory=list)
    #: The request's token (ExecRequest.token): a repeated request starts nothing new.
    token: str = ""
    #: The files, sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})

    @property
    def has_exec_file(self) -> bool:
        """The last file is the executable."""
        return len(self.fds) == len(self.guest_fds) + 1

    def check(self) -> None:
        """Refuse, with InvalidArgument, what gVisor's execAsync refuses."""
        if not self.argv:
            raise InvalidArgument(f"exec in container {self.container_id!r}: argv is empty")
        if not self.has_exec_file and len(self.fds) != len(self.guest_fds):
            raise InvalidArgument(
                "length of payload files does not match length of file descriptor array"
                f" ({len(self.fds)} files, {len(self.guest_fds)} guest fds)"
            )
        if any(fd < 0 for fd in self.guest_fds):
            raise InvalidArgument("guest file descriptors must be 0 or greater")
        if len(set(self.guest_fds)) != len(self.guest_fds):
            raise InvalidArgument(f"guest file descriptors must be distinct: {self.guest_fds}")
        if self.has_exec_file and self.filename:
            raise InvalidArgument("process must either be started from a file or a filename, not both")
        unknown = sorted(name for name in self.limits if name not in RLIMITS)
        if unknown:
            raise InvalidArgument(f"unknown limit {unknown[0]!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """Result of Proc.Exec: the process runs."""

    #: Its pid inside the container.
    pid: int
    #: Its pid on the host.
    host_pid: int
    #: With a terminal, its pty master (the receiver's), sent as SCM_RIGHTS.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecStarted:
    """Result of Platform.Exec: the process waits in its trapped exec for the sentry."""

    #: Its pid inside the container.
    pid: int
    #: Its pid on the host.
    host_pid: int
    #: Its seccomp listener, then its pty master with a terminal (the receiver's), as SCM_RIGHTS;
    #: none when a repeated request finds the process already gone.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessArgs:
    """Arguments naming one exec'd process (Proc.WaitPid, Proc.ExitStatus)."""

    #: Container id.
    cid: str
    #: The process's pid inside the container.
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessExit:
    """Whether an exec'd process has exited, and how."""

    #: The process's pid inside the container.
    pid: int
    #: True once it has exited.
    exited: bool
    #: Its exit code as a shell reports it (128 + signal when killed), once exited.
    exit_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalProcessArgs:
    """Arguments to Proc.SignalProcess: a signal to one process of a container."""

    #: Container id.
    cid: str
    #: The process's pid inside the container.
    pid: int
    #: Signal number.
    signo: int
    #: Signal the foreground process group of the process's terminal instead, if it has one.
    foreground: bool = False
