"""What a container's init execs, and the lookups it makes inside the container first.

This module owns ExecPlan (the "run" message of the sync protocol: program, environment,
credentials, limits and donated fds) and the two lookups gVisor's StartContainer makes in the
container's filesystem: the binary through PATH (resolve_binary_path) and HOME from
/etc/passwd (resolve_home). Both run in the init after pivot_root, so they see the container's
files and nothing of the host's.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

from common.limits import RLIMITS
from common.messages.lifecycle import Limit, StartContainerArgs

#: PATH used when the environment has none (runc's and Go's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecPlan:
    """The program of a container's init, as the init receives it with "run"."""

    #: Program to exec ("" means argv[0]).
    filename: str
    #: argv, argv[0] included.
    argv: list[str]
    #: Environment as KEY=VALUE strings, secrets included: never logged.
    env: list[str] = field(repr=False)
    #: Working directory inside the container.
    wd: str
    #: User id inside the container.
    uid: int
    #: Group id inside the container.
    gid: int
    #: [RLIMIT_* number, soft, hard] to set.
    rlimits: list[list[int]] = field(default_factory=list)
    #: Set HOME from /etc/passwd when env has none.
    resolve_home: bool = False
    #: Look filename up as gVisor's StartContainer does.
    resolve_binary_path: bool = False
    #: Guest fd numbers of the files sent beside the plan, in order.
    donated_fds: list[int] = field(default_factory=list)

    def to_message(self) -> dict[str, Any]:
        """The plan as a JSON-able map."""
        return asdict(self)

    @classmethod
    def from_message(cls, body: Any) -> ExecPlan:
        """The plan from to_message's map; ValueError when it is not one."""
        if not isinstance(body, dict):
            raise ValueError("the run message carries no plan")
        try:
            return cls(**body)
        except TypeError as e:
            raise ValueError(f"malformed plan: {e}") from None


def plan_for(args: StartContainerArgs) -> ExecPlan:
    """The init's plan for a start request; InvalidArgument for what the init could not do."""
    args.check()
    rlimits = rlimit_list(args.limits)
    return ExecPlan(
        filename=args.filename or args.argv[0],
        argv=list(args.argv),
        env=[*args.envv, *args.secret_envv],
        wd=args.wd,
        uid=args.uid,
        gid=args.gid,
        rlimits=rlimits,
        resolve_home=args.resolve_home,
        resolve_binary_path=args.resolve_binary_path,
        donated_fds=list(args.donated_fds),
    )


def rlimit_list(limits: dict[str, Limit]) -> list[list[int]]:
    """rlimits by name as ExecPlan carries them: [RLIMIT_* number, soft, hard], sorted by name."""
    return [[RLIMITS[name], limit.cur, limit.max] for name, limit in sorted(limits.items())]


def getenv(env: list[str], key: str) -> str | None:
    """The value of key in a KEY=VALUE list (the last one wins, as for execve's callee)."""
    value = None
    for entry in env:
        name, sep, rest = entry.partition("=")
        if sep and name == key:
            value = rest
    return value


def resolve_binary(filename: str, wd: str, env: list[str]) -> str:
    """gVisor's three rules: absolute as is; with a slash, from wd; else the first PATH match.

    FileNotFoundError when PATH has no executable of that name.
    """
    if filename.startswith("/"):
        return filename
    if "/" in filename:
        return posixpath.normpath(posixpath.join(wd, filename))
    path = getenv(env, "PATH")
    for directory in (path if path is not None else DEFAULT_PATH).split(":"):
        candidate = posixpath.join(posixpath.join(wd, directory or "."), filename)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{filename}: executable file not found in $PATH")


def resolve_home(env: list[str], uid: int, passwd: str = "/etc/passwd") -> list[str]:
    """env with HOME added from the passwd entry of uid when it has none ("/" if none found)."""
    if getenv(env, "HOME") is not None:
        return env
    home = "/"
    try:
        with open(passwd) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    home = fields[5] or "/"
                    break
    except OSError:
        pass  # no passwd file in the container: HOME is "/", as runc sets it
    return [*env, f"HOME={home}"]
