"""A command server's worker: a fork of the server that becomes its client's command.

It takes on what the client sent (its files at their numbers, working directory, umask,
environment, argv and signal dispositions), runs the same click command line as a `controller`
process would (cli.main), and exits with its status. It dies with the server (PDEATHSIG), and
the server kills it when the client goes: it never outlives the command's `controller` process
by more than that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from typing import NoReturn

from common.fdlayout import place_fds
from common.processctl import PR_SET_PDEATHSIG, prctl
from services.controller.cmdserver.protocol import Request
from services.controller.commands.base import set_representative


def run_worker(request: Request, files: list[int], cwd: int, status_pipe: int, server: int, client: int) -> NoReturn:
    """Run request's command in this freshly forked process and exit with its status.

    files are the client's fds, in request.fds's order; cwd its working directory; status_pipe
    where the exit status goes before the exit. The fork owns them and every other fd it
    inherited, and closes all of those but the client's files and status_pipe; the caller must
    have detached any Python object wrapping one. server is the parent's pid, client the pid of
    the `controller` process the command stands for.
    """
    status = 1
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != server:
            os._exit(status)  # the server died before the death signal was set
        os.fchdir(cwd)
        [status_pipe] = place_fds(files, request.fds, [status_pipe])
        os.umask(request.umask)
        _take_signals(request)
        os.environ.clear()
        for entry in request.env:
            name, _, value = entry.partition(b"=")
            os.environb[name] = value
        sys.argv = request.argv
        set_representative(client)
        status = _run_command()
    except BaseException:  # noqa: BLE001 - whatever it was, the client gets a status and the trace
        traceback.print_exc()
    finally:
        code = status & 0xFF  # what the kernel keeps of it, as of any exit status
        try:
            _flush()
            # Everything the command does is done: the server answers the client now.
            os.write(status_pipe, code.to_bytes(4, "big"))
        except BaseException:  # noqa: BLE001 - nothing may keep a fork of the server from its exit
            pass
        os._exit(code)


def _take_signals(request: Request) -> None:
    """The client's signal dispositions and mask, as its own interpreter set them up."""
    ignored = set(request.ignored)
    for signo in signal.valid_signals():
        if signo in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signo in ignored:
                signal.signal(signo, signal.SIG_IGN)
            elif signo == signal.SIGINT:
                signal.signal(signo, signal.default_int_handler)
            elif signal.getsignal(signo) is signal.SIG_IGN:
                signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # a signal Python does not let us handle (the real-time ones glibc keeps)
    signal.pthread_sigmask(signal.SIG_SETMASK, request.blocked)


def _run_command() -> int:
    """cli.main, with its SystemExit turned into the status the interpreter would exit with."""
    from services.controller.cli import main

    try:
        main()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(e.code, file=sys.stderr)
        return 1
    return 0


def _flush() -> None:
    """What the interpreter's exit would have written: stdio's buffers and the log handlers'
    (the worker exits with os._exit: nothing of the server's is its to finalize)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe as the client's stdout: as for any program, the output is lost.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
