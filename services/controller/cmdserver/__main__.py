"""`python -m services.controller.cmdserver KEY`: a command server, as client.start_server
starts one (detached, stdio on /dev/null, in "/"). KEY is install_key() in hex (it holds NULs).
It exits at once, with 0, when another server already has KEY's name or KEY is not this
code's.
"""

from __future__ import annotations

import gc
import importlib
import os
import socket
import sys

from services.controller.__main__ import CLI_GC_THRESHOLD
from services.controller.cmdserver.protocol import install_key, socket_name

#: What every worker would otherwise import again (the commands import most of it lazily).
PRELOADED = (
    "services.controller.cli",
    "common.client",
    "common.errors",
    "common.messages.containers",
    "common.messages.proc",
    "common.rundir",
    "services.controller.services",
    "json",
    "subprocess",
    "tempfile",
)


def main() -> None:
    """Bind the name first (a racing twin exits before its imports), then import, then serve."""
    key = install_key()
    if sys.argv[1:] != [key.encode().hex()]:
        return
    gc.set_threshold(CLI_GC_THRESHOLD)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        listener.bind(socket_name(key, os.getuid()))
    except OSError:
        listener.close()
        return  # EADDRINUSE: another server has it
    listener.listen(128)
    from services.controller.cli import COMMANDS
    from services.controller.cmdserver.server import CommandServer, watched_files

    for module in [*PRELOADED, *(f"services.controller.commands.{name}" for name in COMMANDS)]:
        importlib.import_module(module)
    root = key.split("\0", 1)[0]
    server = CommandServer(listener, key, watched_files(root))
    # Workers then share the imported objects' pages: a collection would write to them all.
    gc.collect()
    gc.freeze()
    server.serve()


if __name__ == "__main__":
    main()
