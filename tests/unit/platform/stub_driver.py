"""A single-threaded driver for stub tests: `python -m tests.unit.platform.stub_driver SPEC OUT [MODE]`.

pytest workers run threads, and clone in a threaded process is unsafe, so every test that
launches a stub runs this in a subprocess. It decodes SPEC (a ContainerSpec as wire JSON),
launches and releases the container with its stdout and stderr on the file OUT, reaps it,
and prints one JSON line: the wait status, or the stage and message of a StubError, and
whether any child was left behind. An inheritable fd is left open on purpose so that tests
can check it does not reach the container.

The container does not trap (this driver has no supervisor) except in mode "trap", where the
driver answers every notification itself (supervisor.py) and reports them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any

from common.messages.spec import ContainerSpec, ProcessSpec
from common.wire import from_wire
from services.controller.containers import start_args
from services.platform import stub as stub_module
from services.platform.execplan import plan_for
from services.platform.stub import StubError, kill, launch, read_late, release
from services.platform.stub_io import recv_message
from tests.unit.platform import supervisor


def _children_left() -> bool:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    del pid  # 0 (still running) or a reaped pid: either way a child was left
    return True


class _Refused(Exception):
    """Raised by the failing before_setup callback."""


def run(spec: ContainerSpec, out_path: str, mode: str = "") -> dict[str, Any]:
    """Launch, release and reap one container; the result map the driver prints.

    mode "before-setup" records the pid before_setup sees; "before-setup-fails" makes it raise;
    "before-setup-stop-child" stops the child there (SIGSTOP) and shortens the sync timeout
    to 0.5 s; "before-setup-kill-child" kills it there. Mode "terminal" copies the output of
    the container's own pty to OUT. Mode "donate" donates OUT.donated as the guest's fd 7.
    Mode "trap" launches a trapping container and serves its notifications: the result has
    them ("notifications") and the sync messages that came after release ("late").
    """
    # Closed by the driver's exit; the container gets its own copies as 0, 1 and 2.
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    leaked = os.open("/dev/null", os.O_RDONLY)  # inheritable, and must not leak anyway
    result: dict[str, Any] = {"leaked_fd": leaked}

    def before_setup(pid: int) -> None:
        with open(f"/proc/{pid}/status") as f:
            result["before_setup"] = {"pid": pid, "alive": "State:" in f.read()}
        if mode.endswith("-fails"):
            raise _Refused("no cgroup for you")
        if mode.endswith("stop-child"):
            stub_module.SYNC_TIMEOUT = 0.5
            os.kill(pid, signal.SIGSTOP)
        if mode.endswith("kill-child"):
            os.kill(pid, signal.SIGKILL)

    try:
        callback = before_setup if mode.startswith("before") else None
        stub = launch(spec, "test", [devnull, out, out], callback, trap=mode == "trap")
    except (StubError, _Refused) as e:
        return {**result, "stage": "launch", "error": str(e), "children_left": _children_left()}
    result["pid"] = stub.pid
    donated = []
    if mode == "donate":
        donated = [os.open(out_path + ".donated", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)]
    process = spec.process or ProcessSpec(args=["true"])
    plan = plan_for(dataclasses.replace(start_args("test", process), donated_fds=[7] * len(donated), fds=donated))
    try:
        listener = release(stub, plan, donated)
        if listener is not None:
            return {**result, **_supervise(stub, listener)}
    except StubError as e:
        result.update(stage="release", error=str(e))
        if not stub.runnable:
            kill(stub)  # release left the child alone, as documented: undo the launch here
            return {**result, "children_left": _children_left()}
    if stub.console is not None:
        _copy_until_hangup(stub.console, out)
    _, status = os.waitpid(stub.pid, 0)
    result.update(status=status, exit_code=os.waitstatus_to_exitcode(status), children_left=_children_left())
    return result


def _supervise(stub: stub_module.Stub, listener: int) -> dict[str, Any]:
    """Serve a released trapping init until its filter has no task left; what happened."""
    notes, status = supervisor.serve(listener, stub.pid)
    os.close(listener)
    late = []
    stub.sync.setblocking(True)  # the init is gone: EOF comes at once
    while True:
        message, fds = recv_message(stub.sync)
        for fd in fds:
            os.close(fd)
        if message is None:
            break
        late.append(message)
    assert read_late(stub) is False  # EOF, as the fork server would see it
    stub.sync.close()
    return {
        "notifications": notes,
        "late": late,
        "status": status,
        "exit_code": os.waitstatus_to_exitcode(status),
        "children_left": _children_left(),
    }


def _copy_until_hangup(master: int, out: int) -> None:
    """Copy what the container writes on its terminal to out, until its side closes (EIO)."""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            return
        if not data:
            return
        os.write(out, data.replace(b"\r\n", b"\n"))


def main(argv: list[str]) -> None:
    """Entry point: argv is [SPEC_JSON, OUT_PATH] or [SPEC_JSON, OUT_PATH, MODE]."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    spec = from_wire(ContainerSpec, json.loads(argv[0]))
    print(json.dumps(run(spec, argv[1], argv[2] if len(argv) > 2 else "")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
