"""Schemas of an exec'd process once resolved against its container's spec: the arguments of the
sentry's Proc.Exec and of Platform.Exec (gVisor's control.ExecArgs), and what the platform
answers. The controller resolves the CLI's ExecRequest (proc.py) into ExecArgs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import InvalidArgument
from common.limits import RLIMITS
from common.messages.lifecycle import Limit
from common.messages.spec import Capabilities


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
class ExecStarted:
    """Result of Platform.Exec: the process waits in its trapped exec for the sentry."""

    #: Its pid inside the container.
    pid: int
    #: Its pid on the host.
    host_pid: int
    #: Its seccomp listener, then its pty master with a terminal (the receiver's), as SCM_RIGHTS;
    #: none when a repeated request finds the process already gone.
    fds: list[int] = field(default_factory=list, metadata={"wire": False})
