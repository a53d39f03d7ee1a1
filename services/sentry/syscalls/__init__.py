"""Handlers of the trapped syscalls, one module per family.

    fs_open   open, openat, openat2, creat: files opened for write by the gofer, the fd injected
    fs_path   mkdir, mknod, unlink, rmdir, rename, link, symlink, chmod, chown, truncate,
              utimes and the path forms of the xattr calls: done by the gofer
    system    uname, sethostname, sysinfo: answered from the container's own view
    exec      execve, execveat: checked, then continued

Each module exports HANDLERS: syscall name -> handler(supervisor, watched, id, pid, args).
"""

from __future__ import annotations

import pyseccomp

from services.sentry.supervisor import Handler


def handler_table() -> dict[int, tuple[str, Handler]]:
    """Native syscall number -> (family, handler), for every name this architecture has."""
    from services.sentry.syscalls import exec as exec_family
    from services.sentry.syscalls import fs_open, fs_path, system

    table: dict[int, tuple[str, Handler]] = {}
    for family, module in (("open", fs_open), ("path", fs_path), ("system", system), ("exec", exec_family)):
        for name, handler in module.HANDLERS.items():
            number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
            if number >= 0:
                table[number] = (family, handler)
    return table
