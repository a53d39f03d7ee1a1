"""sentry: the application kernel. It owns the per-container state machine and task table, the seccomp
user-notification listener fds of every sandboxed task and the syscall handlers behind them,
process listing, signals and container events, and (directfs) the mount fds the gofer donated.
It answers the Lifecycle and Proc domains beside the System domain every service has.

Layout:
    __main__.py     the `sentry` console script (`python -m services.sentry`)
    server.py       setup(): kernel, supervisor, event publisher and subscriber, domains, ticks
    control/        lifecycle.py (Lifecycle domain), proc.py (Proc domain)
    kernel.py       Kernel: containers by id, their listeners, their mounts at the gofer
    restore.py      rebuilding a restarted sentry from the platform; re-attaching the gofer
    supervisor.py   Supervisor: the listeners' hot path and what syscall handlers share
    syscalls/       one module per syscall family (fs_open, fs_path, exec, system)
    seccomp.py      Listener: the seccomp_unotify ioctls
    taskmem.py      TaskMemory: a task's memory through /proc/TID/mem
    taskinfo.py     a task's credentials, cwd and fds, from /proc
    vfs.py          container paths: which mount serves one, resolution in the task's view
    directfs.py     DirectFs: the gofer's operations run here on its donated mount fds
    gofer_client.py AsyncGoferChannel: file calls to the gofer without blocking the loop
    nudge.py        making a task re-issue a syscall a dead sentry had taken (ptrace)
    procinfo.py, psformat.py  ps; strace.py  decoded trapped calls for --strace
"""
