"""platform: the stub manager. It owns the sandboxed processes themselves: the fork server that creates
stub processes, namespaces, cgroups, rlimits, the seccomp filter, reaping and exit statuses,
and ptrace where a task must be stopped or nudged.

So far it answers only the System domain every service has (common.system).

Layout:
    __main__.py  the `platform` console script (`python -m services.platform`)
"""
