"""The container's init between clone and exec (child side of stub.launch).

This module owns what runc's standard_init_linux.go does inside the new namespaces: the sync
protocol with the parent, the fd layout and the container's terminal (through stub_io.py),
the filesystem setup (through mounts.py), the createContainer and startContainer hooks, and
then credentials, capabilities, no_new_privs, the seccomp filter and exec. It only ever runs
in a freshly cloned process that never returns to its caller's code: every path ends in exec
or os._exit.

The sync channel carries one JSON map per SOCK_SEQPACKET message, in this order:
parent "go"; child "hooks" and parent "hooks-done" (only when the spec has prestart or
createRuntime hooks, which the parent runs once the mounts exist); child "console" with the
pty master as SCM_RIGHTS (only for a terminal); child "ready"; parent "run" with the ExecPlan
and the donated files as SCM_RIGHTS; when the plan traps, child "listener" with the seccomp
listener fd as SCM_RIGHTS, sent right after the filter is loaded (nothing in between may be a
trapped call: nobody could answer it yet). Beside them the child sends {"log": text} for the
parent to log and {"error": text} for the failure that ends it. The child's end is
close-on-exec, so a successful exec reads as EOF. The exec itself is trapped, so once the
listener is sent the parent stops waiting: a later failure is also written to the child's
stderr ("exec failed: ..."), as runc does, and the parent only logs the {"error"}.
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
from typing import Any, NoReturn

from common.messages.spec import ContainerSpec
from services.platform import hooks, linux, mounts
from services.platform.clone import CLONE_NEWCGROUP, CLONE_NEWUSER, CLONE_NEWUTS
from services.platform.execplan import ExecPlan, resolve_binary, resolve_home
from services.platform.filters import SECCOMP_FILTER_FLAG_NEW_LISTENER, load_filter
from services.platform.linux import CAPABILITIES, MS_RDONLY, prctl
from services.platform.mounts import SetupError, doing
from services.platform.stub_io import arrange_fds, open_terminal, place_donated, recv_message, send_message

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
class ChildPlan:
    """Everything the child needs before "run", computed and validated by the parent before clone."""

    #: The container's spec.
    spec: ContainerSpec
    #: Container id, for messages.
    container_id: str
    #: Parent fds that become the child's 0, 1, 2, ... (the parent keeps and closes its own).
    stdio: list[int]
    #: The CLONE_NEW* flags the child was cloned with.
    clone_flags: int
    #: Capability masks to apply.
    caps: CapSets
    #: The compiled seccomp filter (filters.build_filter).
    seccomp: bytes
    #: The filter has a trapped set: load it with a listener and send that to the parent,
    #: and make the rootfs and bind mounts read-only to the kernel (the sentry writes) once
    #: the startContainer hooks have run.
    trap: bool = False


@dataclass(slots=True)
class _Channel:
    """The sync socket, wherever the fd shuffles move it."""

    sock: socket.socket
    #: The listener went to the parent, which no longer waits for the outcome.
    late: bool = False


class _ExecError(Exception):
    """exec failed: the message goes to the parent as it is and the child exits 127."""


def child_main(sock: socket.socket, parent_end: socket.socket, plan: ChildPlan) -> NoReturn:
    """Run the container's init in the cloned child; never returns.

    Takes ownership of both socket ends: parent_end (the parent's copy) is closed at once,
    sock becomes fd len(stdio) and closes on exec.
    """
    status = 1
    chan = _Channel(sock)
    try:
        parent_end.close()
        _reset_signal_handlers()
        prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        # In a pid namespace getppid() is 0, so the parent's death shows only as EOF here.
        _expect(chan.sock, "go")
        if plan.clone_flags & CLONE_NEWUSER:
            with doing("becoming root in the user namespace"):
                # Until now the child still has the host's ids, which the namespace may not
                # map: files it created would fail with EOVERFLOW.
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # credential changes clear it
        os.setsid()
        chan.sock = arrange_fds(chan.sock, plan.stdio)
        _setup(plan, chan.sock)
        send_message(chan.sock, {"sync": "ready"})
        exec_plan, donated = _expect_run(chan.sock)
        status = EXEC_FAILED_STATUS
        _finalize(plan, exec_plan, donated, chan)
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent, then _exit
        text = str(e) if isinstance(e, _ExecError) else f"container init: {str(e) or type(e).__name__}"
        err = getattr(e, "errno", None) or getattr(e.__cause__, "errno", None)
        if chan.late:  # nobody waits for the sync socket: say it where the user looks
            with contextlib.suppress(OSError):
                os.write(2, f"exec failed: {text}\n".encode(errors="replace"))
        with contextlib.suppress(OSError):  # a parent that is gone cannot be told
            send_message(chan.sock, {"error": text, "errno": err})
    finally:
        os._exit(status)


def _expect(sock: socket.socket, what: str) -> dict[str, Any]:
    message, fds = recv_message(sock)
    for fd in fds:
        os.close(fd)  # only "run" carries files
    if message is None:
        os._exit(1)  # the parent died or gave up: nobody is left to tell
    if message.get("sync") != what:
        raise SetupError(f"waiting for {what!r}: got {message!r:.80}")
    return message


def _expect_run(sock: socket.socket) -> tuple[ExecPlan, list[int]]:
    """Wait for "run"; the plan and the donated files (ours, close-on-exec)."""
    message, fds = recv_message(sock)
    if message is None:
        os._exit(1)
    try:
        if message.get("sync") != "run":
            raise SetupError(f"waiting for 'run': got {message.get('sync')!r:.80}")
        plan = ExecPlan.from_message(message.get("plan"))
        if len(fds) != len(plan.donated_fds):
            raise SetupError(f"run: {len(fds)} files for {len(plan.donated_fds)} donated fds")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return plan, fds


def _reset_signal_handlers() -> None:
    """Drop the caller's Python signal handling: its handlers and wakeup fd mean nothing here."""
    signal.set_wakeup_fd(-1)
    for signo in signal.valid_signals():
        try:
            if callable(signal.getsignal(signo)):
                signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):
            continue  # SIGKILL, SIGSTOP and the real-time signals Python reserves


def hook_state(spec: ContainerSpec, container_id: str, status: str, pid: int) -> bytes:
    """The OCI state a hook of this container reads on stdin."""
    return hooks.oci_state(
        oci_version=spec.oci_version,
        cid=container_id,
        status=status,
        pid=pid,
        bundle=spec.bundle,
        annotations=spec.annotations,
    )


def _setup(plan: ChildPlan, sock: socket.socket) -> None:
    """The filesystem, hooks, hostname, sysctls and terminal, in runc's order."""

    def log(text: str) -> None:
        send_message(sock, {"log": text})

    spec = plan.spec
    rootfs = os.path.realpath(spec.rootfs)
    mounts.prepare_root(rootfs)
    for m in spec.mounts:
        mounts.mount_entry(rootfs, m, bool(plan.clone_flags & CLONE_NEWCGROUP), log)
    if mounts.needs_dev_setup(spec):
        mounts.setup_dev(rootfs)
    if spec.process is not None:
        with doing(f"creating the working directory {spec.process.cwd}"):
            os.makedirs(mounts.secure_join(rootfs, spec.process.cwd), 0o755, exist_ok=True)
    if spec.hooks.prestart or spec.hooks.create_runtime:
        # runc's procHooks: the runtime's hooks see the namespaces and mounts, not yet the program.
        send_message(sock, {"sync": "hooks"})
        _expect(sock, "hooks-done")
    # In the container's namespaces, before pivot_root: paths still resolve on the host.
    hooks.run_hooks(
        "createContainer", spec.hooks.create_container, hook_state(spec, plan.container_id, "creating", os.getpid())
    )
    mounts.enter_rootfs(rootfs)
    if spec.hostname is not None:
        if plan.clone_flags & CLONE_NEWUTS:
            with doing(f"setting the hostname to {spec.hostname!r}"):
                linux.sethostname(spec.hostname)
        else:
            log("no uts namespace: the hostname is left alone")
    for key, value in spec.sysctl.items():
        with doing(f"setting sysctl {key}"), open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    mounts.readonly_paths(spec.readonly_paths)
    mounts.mask_paths(spec.masked_paths)
    if spec.rootfs_readonly:
        mounts.readonly_root()
    os.umask(0o022)
    if spec.process is not None and spec.process.terminal:
        master = open_terminal()
        try:
            send_message(sock, {"sync": "console"}, [master])
        finally:
            os.close(master)


def _finalize(plan: ChildPlan, run: ExecPlan, donated: list[int], chan: _Channel) -> NoReturn:
    """After "run": donated fds, limits, startContainer hooks, credentials, capabilities,
    no_new_privs, seccomp, exec."""
    process = plan.spec.process
    assert process is not None  # the parent never sends "run" without one
    if donated:
        with doing("placing the donated fds"):
            chan.sock = place_donated(chan.sock, donated, run.donated_fds)
    with doing(f"changing to the working directory {run.wd}"):
        os.chdir(run.wd)
    env = resolve_home(run.env, run.uid) if run.resolve_home else run.env
    filename = run.filename
    if run.resolve_binary_path:
        try:
            filename = resolve_binary(filename, run.wd, env)
        except OSError as e:
            raise _ExecError(f"exec {filename}: {e.strerror or e}") from e
    if plan.trap:
        # The trapped exec fails only after the parent has stopped waiting: say now what we can.
        _check_executable(filename)
    for number, soft, hard in run.rlimits:
        with doing(f"setting rlimit {number} to {soft}/{hard}"):
            resource.setrlimit(number, (soft, hard))
    if process.oom_score_adj is not None:
        with doing("setting oom_score_adj"), open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))
    hooks.run_hooks(
        "startContainer",
        plan.spec.hooks.start_container,
        hook_state(plan.spec, plan.container_id, "created", os.getpid()),
    )
    if plan.trap:
        _readonly_view(plan.spec)
    caps = plan.caps
    with doing("dropping capabilities from the bounding set"):
        # Before setuid: PR_CAPBSET_DROP needs CAP_SETPCAP, which a non-root uid loses.
        _drop_bounding(caps.bounding)
    # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN (runc's rule): load it while
    # the child still has it, unless the program keeps it anyway and it can go last.
    early_seccomp = not process.no_new_privileges and not caps.effective >> CAPABILITIES["CAP_SYS_ADMIN"] & 1
    if early_seccomp:
        _load_seccomp(plan, chan)
    _set_user(run.uid, run.gid, process.additional_gids)
    with doing("setting capabilities"):
        linux.capset(caps.effective, caps.permitted, caps.inheritable)
        prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in caps.ambient:
            prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)
    if process.no_new_privileges:
        with doing("setting no_new_privs"):
            prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    for signo in _RESTORED_SIGNALS:
        signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if not early_seccomp:
        # Last, so that none of the init's own calls runs under the filter.
        _load_seccomp(plan, chan)
    try:
        os.execve(filename, run.argv, _env_map(env))
    except OSError as e:
        raise _ExecError(f"exec {filename}: [Errno {e.errno}] {e.strerror}") from e


def _readonly_view(spec: ContainerSpec) -> None:
    """Make the rootfs and every bind mount read-only to the kernel: the program's writes
    there go through the sentry. tmpfs, devpts, mqueue, proc and sysfs stay as configured.

    After the startContainer hooks, which see the mounts as runc would give them.
    """
    mounts.readonly_root()
    for i, m in enumerate(spec.mounts):
        if not mounts.is_bind(m) or any(later.destination == m.destination for later in spec.mounts[i + 1 :]):
            continue  # not a bind mount, or covered by a later mount on the same destination
        with doing(f"making {m.destination} read-only"):
            mounts.remount_bind(m.destination, mounts.parse_options(m.options).flags | MS_RDONLY)


def _check_executable(filename: str) -> None:
    """Raise _ExecError, as the exec would, for a file that is missing or not executable."""
    try:
        st = os.stat(filename)
        if not stat.S_ISREG(st.st_mode) or not os.access(filename, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise _ExecError(f"exec {filename}: [Errno {e.errno}] {e.strerror}") from e


def _load_seccomp(plan: ChildPlan, chan: _Channel) -> None:
    """Load the filter; when it traps, hand its listener to the parent at once.

    Between the load and the send nothing may make a trapped call: nobody holds the listener
    to answer it, and the init would block for good.
    """
    with doing("loading the seccomp filter"):
        if not plan.trap:
            load_filter(plan.seccomp)
            return
        listener = load_filter(plan.seccomp, SECCOMP_FILTER_FLAG_NEW_LISTENER)
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
            if prctl(linux.PR_CAPBSET_READ, cap) == 1:
                prctl(linux.PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno != errno.EINVAL:  # a capability this kernel does not have
                raise


def _set_user(uid: int, gid: int, additional_gids: list[int]) -> None:
    """setgroups, setgid, setuid, keeping the permitted capabilities across the uid change."""
    with doing("keeping capabilities across setuid"):
        prctl(linux.PR_SET_KEEPCAPS, 1)
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
        prctl(linux.PR_SET_KEEPCAPS, 0)
        prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # a credential change cleared it


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except FileNotFoundError:
        return True
