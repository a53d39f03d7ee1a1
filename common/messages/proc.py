"""Schemas of the Proc domain (controller and sentry): the processes of a running container:
listing them (Ps), starting one with exec (gVisor's control.ExecArgs, runsc's exec command),
waiting for one and signalling it.

ExecRequest is the CLI's (controller Proc.Exec): what the user gave, unset fields left to the
container's spec. The resolved process the sentry and the platform run is in execs.py, so that
the CLI, which imports this module, does not pay for the spec's schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
class ExecResult:
    """Result of Proc.Exec: the process runs."""

    #: Its pid inside the container.
    pid: int
    #: Its pid on the host.
    host_pid: int
    #: With a terminal, its pty master (the receiver's), sent as SCM_RIGHTS.
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
