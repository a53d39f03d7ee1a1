"""How `controller exec` resolves a request against the container's process (runc's rules)."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidArgument
from common.messages.proc import ExecRequest
from common.messages.spec import DEFAULT_CAPABILITIES, Capabilities, ProcessSpec, Rlimit
from services.controller.execs import exec_args, merge_env

SPEC = ProcessSpec(
    args=["init"],
    env=["PATH=/bin", "TERM=xterm"],
    cwd="/srv",
    uid=10,
    gid=20,
    additional_gids=[30],
    terminal=True,
    capabilities=Capabilities(bounding=["CAP_KILL"], effective=["CAP_KILL"], permitted=["CAP_KILL"]),
    rlimits=[Rlimit(type="RLIMIT_NOFILE", hard=100, soft=50)],
)


def test_flags_change_the_spec_process() -> None:
    args = exec_args(ExecRequest(id="c", args=["ls", "-l"], env=["TERM=dumb", "A=1"], cwd="/tmp"), SPEC)
    assert args.argv == ["ls", "-l"] and args.wd == "/tmp"
    assert args.envv == ["PATH=/bin", "TERM=dumb", "A=1"]
    assert (args.uid, args.gid, args.extra_gids) == (10, 20, [30])
    assert args.terminal is False  # the init's terminal is not the exec's: only --tty asks
    assert args.limits["RLIMIT_NOFILE"].cur == 50
    user = exec_args(ExecRequest(id="c", args=["id"], uid=1, gid=2, additional_gids=[], tty=True), SPEC)
    assert (user.uid, user.gid, user.extra_gids, user.terminal) == (1, 2, [], True)


def test_cap_adds_to_three_sets_and_ambient_only_with_inheritable() -> None:
    caps = exec_args(ExecRequest(id="c", args=["x"], caps=["CAP_CHOWN"]), SPEC).capabilities
    assert caps is not None
    assert caps.bounding == caps.effective == caps.permitted == ["CAP_KILL", "CAP_CHOWN"]
    assert caps.ambient == []
    default = exec_args(ExecRequest(id="c", args=["x"], caps=["CAP_SYS_ADMIN"]), None).capabilities
    assert default is not None and default.effective == [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]


def test_process_file_defaults_cwd_env_and_caps_from_the_spec() -> None:
    args = exec_args(ExecRequest(id="c", process=json.dumps({"args": ["sh"], "user": {"uid": 3}})), SPEC)
    assert args.argv == ["sh"] and args.uid == 3 and args.gid == 0
    assert args.wd == "/srv" and args.envv == SPEC.env and args.capabilities == SPEC.capabilities
    given = exec_args(ExecRequest(id="c", process=json.dumps({"args": ["sh"], "env": [], "cwd": "/"})), SPEC)
    assert given.envv == [] and given.wd == "/"


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (ExecRequest(id="c"), "needs a command"),
        (ExecRequest(id="c", args=["x"], cwd="rel"), "absolute"),
        (ExecRequest(id="c", args=["x"], env=["NOEQUALS"]), "KEY=VALUE"),
        (ExecRequest(id="c", process="{"), "process file: not JSON"),
        (ExecRequest(id="c", process='{"args": []}'), "process file"),
    ],
)
def test_refusals(request_: ExecRequest, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        exec_args(request_, SPEC)


def test_merge_env_replaces_in_place() -> None:
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4"]) == ["A=1", "B=3", "C=4"]
