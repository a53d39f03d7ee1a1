"""The container's init between clone and exec (child side of stub.launch).

This module owns what runc's standard_init_linux.go does inside the new namespaces: the sync
protocol with the parent, the fd layout and the container's terminal (through stub_io.py),
the filesystem setup (through mounts.py), the createContainer and startContainer hooks, and
then credentials, capabilities, no_new_privs, the seccomp filter and exec. It only ever runs
in a freshly cloned process that never returns to its caller's code: every path ends in exec
or os._exit.

The sync channel carries one JSON map per SOCK_SEQPACKET message, in this order: parent "go"
(the child then joins its cgroup: Cgroup.membership_files); child "hooks" and parent
"hooks-done" (only when the spec has prestart or createRuntime hooks, which the parent runs once
the mounts exist); child "console" with the pty master as SCM_RIGHTS (only for a terminal);
child "ready"; parent "run" with the ExecPlan and the donated files as SCM_RIGHTS; when the plan
traps, child "listener" with the seccomp listener fd as SCM_RIGHTS, sent right after the filter
is loaded (nothing in between may be a trapped call: nobody could answer it yet). Beside them
the child sends {"log": text} for the parent to log and {"error": text} for the failure that
ends it. The child's end is close-on-exec, so a successful exec reads as EOF. The exec itself is
trapped, so once the listener is sent the parent stops waiting: a later failure is also written
to the child's stderr ("exec failed: ..."), as runc does, and the parent only logs the
{"error"}.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from typing import NoReturn

from common import processctl
from common.messages.spec import ContainerSpec
from common.processctl import prctl
from services.platform import hooks, linux, mounts
from services.platform.cgroup_files import join_self
from services.platform.clone import CLONE_NEWCGROUP, CLONE_NEWUSER, CLONE_NEWUTS
from services.platform.execplan import ExecPlan
from services.platform.linux import MS_RDONLY
from services.platform.mounts import SetupError, doing
from services.platform.program import (
    EXEC_FAILED_STATUS,
    CapSets,
    Channel,
    Identity,
    become_and_exec,
    become_root_in_user_namespace,
    enter_working_directory,
    program_path,
    report_failure,
    reset_signal_handlers,
    set_rlimits,
)
from services.platform.stub_io import (
    arrange_fds,
    expect_step,
    place_donated,
    recv_message,
    send_message,
    send_terminal,
)


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
    #: The parent's fds of the container's cgroup membership files, inherited: the child
    #: joins the cgroup through them (cgroup_files.join_self) and closes them.
    cgroup_fds: tuple[int, ...] = ()


def child_main(sock: socket.socket, parent_end: socket.socket, plan: ChildPlan) -> NoReturn:
    """Run the container's init in the cloned child; never returns.

    Takes ownership of both socket ends: parent_end (the parent's copy) is closed at once,
    sock becomes fd len(stdio) and closes on exec.
    """
    status = 1
    chan = Channel(sock)
    try:
        parent_end.close()
        reset_signal_handlers()
        prctl(processctl.PR_SET_PDEATHSIG, signal.SIGKILL)
        # In a pid namespace getppid() is 0, so the parent's death shows only as EOF here.
        expect_step(chan.sock, "go")
        with doing("joining the container's cgroup"):
            join_self(plan.cgroup_fds)
        if plan.clone_flags & CLONE_NEWUSER:
            become_root_in_user_namespace()
        os.setsid()
        chan.sock = arrange_fds(chan.sock, plan.stdio)
        _setup(plan, chan.sock)
        send_message(chan.sock, {"sync": "ready"})
        exec_plan, donated = _expect_run(chan.sock)
        status = EXEC_FAILED_STATUS
        _finalize(plan, exec_plan, donated, chan)
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent, then _exit
        report_failure(chan, e, "container init")
    finally:
        os._exit(status)


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
        expect_step(sock, "hooks-done")
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
        send_terminal(sock)


def _finalize(plan: ChildPlan, run: ExecPlan, donated: list[int], chan: Channel) -> NoReturn:
    """After "run": donated fds, limits, startContainer hooks, credentials, capabilities,
    no_new_privs, seccomp, exec."""
    process = plan.spec.process
    assert process is not None  # the parent never sends "run" without one
    if donated:
        with doing("placing the donated fds"):
            chan.sock = place_donated(chan.sock, donated, run.donated_fds)
    env = enter_working_directory(run)
    filename = program_path(run, env, check=plan.trap)
    set_rlimits(run)
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
    who = Identity(
        uid=run.uid,
        gid=run.gid,
        additional_gids=process.additional_gids,
        caps=plan.caps,
        no_new_privileges=process.no_new_privileges,
        seccomp=plan.seccomp,
        trap=plan.trap,
    )
    become_and_exec(chan, who, filename, run.argv, env)


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
