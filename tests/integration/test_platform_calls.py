"""The platform's one connection to its fork server carries both its calls and the fork server's
exit events, on real services: an event that a call read on its way to the reply must not leave
the platform waiting for another."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from common import fdpass, wire
from common.client import FdClient
from common.messages.platform import ContainerRef, PidsResult
from common.rundir import RunDir
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration


def test_an_exit_read_by_a_call_in_the_same_wakeup_does_not_stall_the_platform(zv: Zerovisor, tmp_path: Path) -> None:
    for cid in ("asked", "dies"):
        zv("run", "-d", "-b", str(sh(tmp_path, "sleep 1000", name=f"bundle-{cid}")), cid)
    run_dir = RunDir.at(zv.root)
    platform = run_dir.running_pid("platform")
    dies = zv.state("dies")["pid"]
    assert platform and isinstance(dies, int)
    asked = wire.to_wire(ContainerRef(cid="asked"))
    with FdClient(run_dir.socket_path("platform"), timeout=20) as client:
        # Connected and accepted before the platform sleeps.
        client.call("Platform.Pids", ContainerRef(cid="asked"), PidsResult)
        os.kill(platform, signal.SIGSTOP)
        try:
            # While it sleeps: a call, then an exit event behind it, so that one wakeup finds
            # both and serves the call first, which reads the event on its way to the reply.
            fdpass.send_frame(client.sock, wire.encode_request(1 << 30, "Platform.Pids", asked))
            os.kill(dies, signal.SIGKILL)
            record = run_dir.path / "exits" / f"{dies}.json"
            deadline = time.monotonic() + 20
            while "exit_code" not in json.loads(record.read_text()) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # the fork server sends the event just after the record
        finally:
            os.kill(platform, signal.SIGCONT)
        client.sock.settimeout(20)
        frame, fds = fdpass.recv_frame(client.sock)
        assert not fds and wire.reply_from_envelope(wire.load_envelope(frame)).ok
        # The next call is answered: the platform did not go on to wait for another event.
        pids, _ = client.call("Platform.Pids", ContainerRef(cid="asked"), PidsResult)
    assert pids.pids
    assert zv.state("dies")["status"] == "stopped"  # and the event it read was published
