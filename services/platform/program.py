"""The last steps of every container process before its program runs, the init's and each
exec'd process's alike: capabilities, credentials, no_new_privs, the seccomp filter, exec.

Only ever runs in a forked child that never returns to its caller's code (stub_child.py for
an init, exec_child.py for a process joining a running container): each such child reports a
failure through report_failure and leaves with os._exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import socket
import stat
from dataclasses import dataclass, field
from typing import NoReturn

from common import processctl
from common.processctl import prctl
from services.platform import linux
from services.platform.execplan import ExecPlan, resolve_binary, resolve_home
from services.platform.filters import SECCOMP_FILTER_FLAG_NEW_LISTENER, load_filter
from services.platform.linux import CAPABILITIES
from services.platform.mounts import doing
from services.platform.stub_io import send_message

#: Exit status of a child whose exec failed (the shell's "command not found").
EXEC_FAILED_STATUS = 127
#: Signals Python ignores at start-up that a program expects at their defaults.
_RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapSets:
    """Capability masks (bit n = capability n) to apply before exec."""

    #: Bounding set: every capability outside it is dropped with PR_CAPBSET_DROP.
    bounding: int
    #: Effective set.
    effective: int
    #: Permitted set.
    permitted: int
    #: Inheritable set.
    inheritable: int
    #: Capabilities raised into the ambient set.
    ambient: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who the program runs as, and what it may do."""

    #: User id inside the container.
    uid: int
    #: Group id inside the container.
    gid: int
    #: Supplementary group ids.
    additional_gids: list[int]
    #: Capability masks.
    caps: CapSets
    #: Set no_new_privs before exec.
    no_new_privileges: bool
    #: The compiled seccomp filter (filters.build_filter).
    seccomp: bytes
    #: The filter traps: load it with a listener and send that to the parent.
    trap: bool


@dataclass(slots=True)
class Channel:
    """The sync socket, wherever the fd shuffles move it."""

    sock: socket.socket
    #: The listener went to the parent, which no longer waits for the outcome.
    late: bool = False


class ExecError(Exception):
    """exec failed: the message goes to the parent as it is and the child exits 127."""


def reset_signal_handlers() -> None:
    """Every signal back to its default, as runc leaves them for the program: the forking
    process's handlers and wakeup fd mean nothing here, and a signal it ignores (the fork
    server ignores SIGTERM) would stay ignored across exec, where a shell cannot even trap it."""
    signal.set_wakeup_fd(-1)
    for signo in signal.valid_signals():
        try:
            if signal.getsignal(signo) != signal.SIG_DFL:
                signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):
            continue  # SIGKILL, SIGSTOP and the real-time signals Python reserves


def report_failure(chan: Channel, e: BaseException, who: str) -> None:
    """Tell the parent (and, once it stopped waiting, the program's stderr) why the child ends."""
    text = str(e) if isinstance(e, ExecError) else f"{who}: {str(e) or type(e).__name__}"
    err = getattr(e, "errno", None) or getattr(e.__cause__, "errno", None)
    if chan.late:  # nobody waits for the sync socket: say it where the user looks
        with contextlib.suppress(OSError):
            os.write(2, f"exec failed: {text}\n".encode(errors="replace"))
    with contextlib.suppress(OSError):  # a parent that is gone cannot be told
        send_message(chan.sock, {"error": text, "errno": err})


def become_and_exec(chan: Channel, who: Identity, program: str | int, argv: list[str], env: list[str]) -> NoReturn:
    """Drop to who and exec program (a path, or an fd run with fexecve); never returns.

    Raises what fails on the way; ExecError when the exec itself does.
    """
    caps = who.caps
    with doing("dropping capabilities from the bounding set"):
        # Before setuid: PR_CAPBSET_DROP needs CAP_SETPCAP, which a non-root uid loses.
        _drop_bounding(caps.bounding)
    # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN (runc's rule): load it while
    # the child still has it, unless the program keeps it anyway and it can go last.
    early_seccomp = not who.no_new_privileges and not caps.effective >> CAPABILITIES["CAP_SYS_ADMIN"] & 1
    if early_seccomp:
        _load_seccomp(who, chan)
    _set_user(who.uid, who.gid, who.additional_gids)
    with doing("setting capabilities"):
        linux.capset(caps.effective, caps.permitted, caps.inheritable)
        prctl(processctl.PR_CAP_AMBIENT, processctl.PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in caps.ambient:
            prctl(processctl.PR_CAP_AMBIENT, processctl.PR_CAP_AMBIENT_RAISE, cap)
    if who.no_new_privileges:
        with doing("setting no_new_privs"):
            prctl(processctl.PR_SET_NO_NEW_PRIVS, 1)
    for signo in _RESTORED_SIGNALS:
        signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if not early_seccomp:
        # Last, so that none of the child's own calls runs under the filter.
        _load_seccomp(who, chan)
    try:
        os.execve(program, argv, _env_map(env))
    except OSError as e:
        raise ExecError(f"exec {program}: [Errno {e.errno}] {e.strerror}") from e


def become_root_in_user_namespace() -> None:
    """Take uid and gid 0 of the user namespace just entered: until now the child still has
    the host's ids, which the namespace may not map (files it created would fail with
    EOVERFLOW)."""
    with doing("becoming root in the user namespace"):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        prctl(processctl.PR_SET_PDEATHSIG, signal.SIGKILL)  # credential changes clear it


def enter_working_directory(run: ExecPlan) -> list[str]:
    """chdir to run's working directory; the program's environment (HOME added if asked)."""
    with doing(f"changing to the working directory {run.wd}"):
        os.chdir(run.wd)
    return resolve_home(run.env, run.uid) if run.resolve_home else run.env


def program_path(run: ExecPlan, env: list[str], check: bool) -> str:
    """The program's path, looked up as gVisor does when run asks; with check, ExecError now
    for what the exec would refuse (a trapped exec fails after the parent stopped waiting)."""
    filename = run.filename
    if run.resolve_binary_path:
        try:
            filename = resolve_binary(filename, run.wd, env)
        except OSError as e:
            raise ExecError(f"exec {filename}: {e.strerror or e}") from e
    if check:
        check_executable(filename)
    return filename


def set_rlimits(run: ExecPlan) -> None:
    """Set run's rlimits."""
    for number, soft, hard in run.rlimits:
        with doing(f"setting rlimit {number} to {soft}/{hard}"):
            resource.setrlimit(number, (soft, hard))


def check_executable(filename: str) -> None:
    """Raise ExecError, as the exec would, for a file that is missing or not executable."""
    try:
        st = os.stat(filename)
        if not stat.S_ISREG(st.st_mode) or not os.access(filename, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise ExecError(f"exec {filename}: [Errno {e.errno}] {e.strerror}") from e


def _load_seccomp(who: Identity, chan: Channel) -> None:
    """Load the filter; when it traps, hand its listener to the parent at once.

    Between the load and the send nothing may make a trapped call: nobody holds the listener
    to answer it, and the child would block for good.
    """
    with doing("loading the seccomp filter"):
        if not who.trap:
            load_filter(who.seccomp)
            return
        listener = load_filter(who.seccomp, SECCOMP_FILTER_FLAG_NEW_LISTENER)
    try:
        with doing("sending the seccomp listener"):
            send_message(chan.sock, {"sync": "listener"}, [listener])
    finally:
        os.close(listener)
    chan.late = True


def _env_map(env: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        result[key] = value
    return result


def _drop_bounding(keep: int) -> None:
    for cap in range(linux.CAP_LAST + 1):
        if keep >> cap & 1:
            continue
        try:
            if prctl(processctl.PR_CAPBSET_READ, cap) == 1:
                prctl(processctl.PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno != errno.EINVAL:  # a capability this kernel does not have
                raise


def _set_user(uid: int, gid: int, additional_gids: list[int]) -> None:
    """setgroups, setgid, setuid, keeping the permitted capabilities across the uid change."""
    with doing("keeping capabilities across setuid"):
        prctl(processctl.PR_SET_KEEPCAPS, 1)
    with doing(f"setting supplementary groups {additional_gids}"):
        if _setgroups_allowed():
            os.setgroups(additional_gids)
        elif additional_gids:
            raise PermissionError("setgroups is denied in this user namespace")
    with doing(f"setting gid {gid}"):
        os.setresgid(gid, gid, gid)
    with doing(f"setting uid {uid}"):
        os.setresuid(uid, uid, uid)
    with doing("restoring the parent-death signal"):
        prctl(processctl.PR_SET_KEEPCAPS, 0)
        prctl(processctl.PR_SET_PDEATHSIG, signal.SIGKILL)  # a credential change cleared it


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except FileNotFoundError:
        return True
