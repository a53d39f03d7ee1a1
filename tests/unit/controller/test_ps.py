"""`controller ps`: its three formats, its CLI, and the controller's Proc domain with a fake sentry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from common.errors import ConflictError, NotFound
from common.messages.proc import Process, PsArgs, PsResult
from common.rpc import Registry as RpcRegistry
from services.controller.commands import ps
from services.controller.commands.base import CliContext
from services.controller.registry import ContainerRecord, Registry
from tests.unit.controller.proc_doubles import INIT, FakeSentry, domain

CHILD = Process(
    uid=4294967294, pid=12, ppid=1, threads=[12, 13], c=99, tty="?", stime="Jan02", time="1h2m3.5s", cmd="sleep"
)


def test_table_is_laid_out_as_gvisor_tabwriter_does() -> None:
    # Columns are 10 wide, or the widest cell + 3; CMD, the last, is not padded.
    assert ps.table([INIT, CHILD]).splitlines() == [
        "UID          PID       PPID      C         TTY       STIME     TIME       CMD",
        "0            1         0         0         pts/0     14:04     10ms       sh",
        "4294967294   12        1         99        ?         Jan02     1h2m3.5s   sleep",
    ]


def test_table_of_no_process_is_the_header() -> None:
    assert ps.table([]) == "UID       PID       PPID      C         TTY       STIME     TIME      CMD"


def test_json_is_the_pids_only_as_runc_prints_them() -> None:
    assert ps.pids_json([INIT, CHILD]) == "[1,12]"
    assert ps.pids_json([]) == "[]"


def test_full_json_is_every_field_in_gvisor_order() -> None:
    records = json.loads(ps.full_json([INIT, CHILD]))
    assert records[1] == {
        "uid": 4294967294,
        "pid": 12,
        "ppid": 1,
        "threads": [12, 13],
        "c": 99,
        "tty": "?",
        "stime": "Jan02",
        "time": "1h2m3.5s",
        "cmd": "sleep",
    }
    assert list(records[0]) == ["uid", "pid", "ppid", "threads", "c", "tty", "stime", "time", "cmd"]


@pytest.mark.parametrize(
    ("argv", "output"),
    [
        ([], ps.table([INIT, CHILD]) + "\n"),
        (["--format", "table"], ps.table([INIT, CHILD]) + "\n"),
        (["--format", "json"], "[1,12]\n"),
        (["-f", "json"], "[1,12]\n"),
        (["-f", "full-json"], ps.full_json([INIT, CHILD]) + "\n"),
    ],
)
def test_cli(monkeypatch: pytest.MonkeyPatch, argv: list[str], output: str) -> None:
    calls: list[tuple[str, Any]] = []

    def fake_call(obj: CliContext, method: str, args: Any, result_type: type[Any] | None = None) -> Any:
        calls.append((method, args))
        return PsResult(processes=[INIT, CHILD])

    monkeypatch.setattr(ps, "controller_call", fake_call)
    result = CliRunner().invoke(ps.cli, [*argv, "box"], obj=CliContext("/r", "/r", "text", False))
    assert result.exit_code == 0, result.output
    assert result.output == output
    assert calls == [("Proc.Ps", PsArgs(cid="box"))]


def test_cli_refuses_an_unknown_format() -> None:
    result = CliRunner().invoke(ps.cli, ["--format", "yaml", "box"], obj=CliContext("/r", "/r", "text", False))
    assert result.exit_code == 2
    assert "yaml" in result.output


def test_only_the_calls_are_rpcs(registry: Registry) -> None:
    reg = RpcRegistry()
    reg.register(domain(registry, FakeSentry("running")))
    assert reg.names() == ["Proc.Exec", "Proc.Ps", "Proc.ReleaseConsole", "Proc.SignalProcess", "Proc.WaitPid"]


@pytest.mark.parametrize("status", ["created", "running", "paused"])
def test_ps_is_forwarded_to_the_sentry(registry: Registry, status: str) -> None:
    registry.add(ContainerRecord(id="box", bundle="/b", rootfs="/b/rootfs", status=status, pid=42))
    sentry = FakeSentry(status)
    assert domain(registry, sentry).ps(PsArgs(cid="box")) == PsResult(processes=[INIT])
    assert sentry.calls == ["Lifecycle.GetStatus", "Proc.Ps"]


def test_ps_of_an_unknown_container(registry: Registry) -> None:
    sentry = FakeSentry("running")
    with pytest.raises(NotFound, match="container nope does not exist"):
        domain(registry, sentry).ps(PsArgs(cid="nope"))
    assert sentry.calls == []


def test_ps_of_a_stopped_container_is_refused_without_asking_the_sentry(registry: Registry) -> None:
    registry.add(ContainerRecord(id="box", bundle="/b", rootfs="/b/rootfs", status="stopped", exit_status=0))
    sentry = FakeSentry("running")
    with pytest.raises(ConflictError, match="cannot list the processes of container 'box' in state stopped"):
        domain(registry, sentry).ps(PsArgs(cid="box"))
    assert sentry.calls == []


@pytest.mark.parametrize("sentry_status", ["stopped", None])
def test_ps_of_a_container_that_stopped_unseen_is_refused(registry: Registry, sentry_status: str | None) -> None:
    # The registry missed the exit (or the sentry restarted and forgot the container).
    registry.add(ContainerRecord(id="box", bundle="/b", rootfs="/b/rootfs", status="running", pid=42))
    sentry = FakeSentry(sentry_status)
    with pytest.raises(ConflictError, match="in state stopped"):
        domain(registry, sentry).ps(PsArgs(cid="box"))
    assert sentry.calls == ["Lifecycle.GetStatus"]
    assert registry.get("box").status == "stopped"
