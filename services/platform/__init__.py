"""platform: the stub manager. It owns the sandboxed processes themselves: the fork server that
creates them, their namespaces, cgroups, rlimits and seccomp filter, reaping and exit statuses,
and ptrace where a task must be stopped or nudged.

Layout:
    __main__.py        the `platform` console script (`python -m services.platform`)
    server.py          set-up of the service: the Platform domain, relaying to the fork server
    forkserver_main.py the fork server's process: its socket, loop and reaping
    forkserver.py      the ForkServer domain: create, release, exec, signal and account tasks
    forkserver_tasks.py  what the fork server holds per container: tasks, kept fds, exits
    stub*.py           a container's init from clone to exec (plan, parent side, child side, fds)
    exec_stub.py, exec_child.py  a process joining a running container (runc's setns process)
    mounts.py, execplan.py, program.py  what a container process does before its program runs
    filters.py         the seccomp filter: denied and trapped calls
    cgroups.py, cgroup_*.py  container cgroups on either hierarchy layout
    exits.py           exit records, kept durably until waited for or their container is destroyed
    consoles.py        pty masters held until the exec'ing CLI has its own
    hooks.py           OCI runtime hooks
    clone.py, linux.py ctypes wrappers for what Python's os module lacks
"""
