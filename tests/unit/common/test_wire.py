"""The CBOR envelope and strict dataclass decoding (common.wire): bytes and dicts only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2
import pytest

from common import wire
from common.errors import InvalidArgument, MessageError, MessageTooLarge, VersionError


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    name: str
    count: int
    ratio: float
    flag: bool
    tags: list[str]
    env: dict[str, int]
    inner: Inner
    note: str | None = None
    mode: Literal["r", "w"] = "r"
    prio: Literal[1, 2] = 1
    level: int = 3
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    children: list[Tree] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaybeInner:
    inner: Inner | None = None


GOOD: dict[str, Any] = {
    "name": "x",
    "count": 1,
    "ratio": 0.5,
    "flag": True,
    "tags": ["a", "b"],
    "env": {"A": 1},
    "inner": {"n": 2},
}
DROP = object()


def _body(**patch: Any) -> dict[str, Any]:
    body = {**GOOD, **patch}
    return {k: v for k, v in body.items() if v is not DROP}


def _nest(levels: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(levels):
        body = {"children": [body]}
    return body


# -- envelope ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rid", ["abc-1", 7, 0, 2**70])
def test_request_round_trip(rid: wire.RequestId) -> None:
    frame = wire.encode_request(rid, "System.Ping", {"a": [1, 2], "b": {"c": None}})
    req = wire.request_from_envelope(wire.load_envelope(frame))
    assert req == wire.Request(id=rid, method="System.Ping", args={"a": [1, 2], "b": {"c": None}})


def test_request_without_args_gets_empty_map() -> None:
    env = {"v": wire.WIRE_VERSION, "id": 1, "method": "System.Ping"}
    assert wire.request_from_envelope(env).args == {}


def test_ok_reply_round_trip() -> None:
    frame = wire.encode_reply(wire.Reply(id="r1", ok=True, result={"pid": 12}))
    assert wire.reply_from_envelope(wire.load_envelope(frame)) == wire.Reply(id="r1", ok=True, result={"pid": 12})


def test_ok_reply_without_result_decodes_to_empty_map() -> None:
    env = wire.load_envelope(wire.encode_reply(wire.Reply(id=3, ok=True)))
    assert env["result"] == {}
    assert wire.reply_from_envelope(env).result == {}


def test_error_reply_round_trip() -> None:
    err = {"code": 6, "message": "no such container"}
    reply = wire.reply_from_envelope(wire.load_envelope(wire.encode_reply(wire.Reply(id=None, ok=False, error=err))))
    assert reply == wire.Reply(id=None, ok=False, result=None, error=err)


def test_load_envelope_refuses_oversize_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(_data: bytes) -> Any:
        raise AssertionError("an oversize frame must not reach the CBOR parser")

    monkeypatch.setattr(cbor2, "loads", no_parse)
    monkeypatch.setattr(cbor2, "CBORDecoder", no_parse)
    with pytest.raises(MessageTooLarge, match=str(wire.MAX_MESSAGE_BYTES)):
        wire.load_envelope(b"\xa0" + b"\0" * wire.MAX_MESSAGE_BYTES)


def test_load_envelope_accepts_exactly_the_limit() -> None:
    # map(1) + "b" (2 bytes) + byte string header for a length >= 2**16 (5 bytes) = 8 bytes.
    frame = cbor2.dumps({"b": b"x" * (wire.MAX_MESSAGE_BYTES - 8)})
    assert len(frame) == wire.MAX_MESSAGE_BYTES
    assert len(wire.load_envelope(frame)["b"]) == wire.MAX_MESSAGE_BYTES - 8


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(wire.encode_request(1, "System.Ping", {"a": [1, 2, 3]})[:-1], id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xa1", id="map-header-only"),
        pytest.param(b"\xff", id="lone-break"),
    ],
)
def test_load_envelope_refuses_undecodable(frame: bytes) -> None:
    with pytest.raises(MessageError, match="undecodable"):
        wire.load_envelope(frame)


@pytest.mark.parametrize("value", [[1, 2], "hello", None, 5, b"\xa0"])
def test_load_envelope_refuses_non_map(value: object) -> None:
    with pytest.raises(MessageError, match="want a map"):
        wire.load_envelope(cbor2.dumps(value))


def test_load_envelope_refuses_trailing_bytes() -> None:
    with pytest.raises(MessageError, match="after the envelope"):
        wire.load_envelope(wire.encode_request(1, "System.Ping", {}) + b"junk")


REQ = {"v": wire.WIRE_VERSION, "id": 1, "method": "System.Ping", "args": {}}


@pytest.mark.parametrize("version", [2, 0, "1", None, DROP])
def test_request_bad_version(version: object) -> None:
    env = {k: v for k, v in {**REQ, "v": version}.items() if v is not DROP}
    with pytest.raises(VersionError):
        wire.request_from_envelope(env)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        pytest.param({"extra": 1}, r"unknown fields \['extra'\]", id="unknown-field"),
        pytest.param({"id": DROP}, "'id'", id="missing-id"),
        pytest.param({"id": True}, "'id'", id="bool-id"),
        pytest.param({"id": 1.5}, "'id'", id="float-id"),
        pytest.param({"id": None}, "'id'", id="null-id"),
        pytest.param({"method": DROP}, "'method'", id="missing-method"),
        pytest.param({"method": ""}, "'method'", id="empty-method"),
        pytest.param({"method": 5}, "'method'", id="int-method"),
        pytest.param({"args": [1]}, "want a map", id="list-args"),
        pytest.param({"args": None}, "want a map", id="null-args"),
    ],
)
def test_request_envelope_rejections(patch: dict[str, Any], match: str) -> None:
    env = {k: v for k, v in {**REQ, **patch}.items() if v is not DROP}
    with pytest.raises(MessageError, match=match):
        wire.request_from_envelope(env)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"v": 1, "id": 1}, id="no-ok"),
        pytest.param({"v": 1, "id": 1, "ok": 1}, id="int-ok"),
        pytest.param({"v": 1, "id": 1, "ok": True, "result": [1]}, id="list-result"),
        pytest.param({"v": 1, "id": 1, "ok": False}, id="no-error"),
        pytest.param({"v": 1, "id": 1, "ok": False, "error": "boom"}, id="str-error"),
    ],
)
def test_reply_envelope_rejections(env: dict[str, Any]) -> None:
    with pytest.raises(MessageError):
        wire.reply_from_envelope(env)


def test_reply_bad_version() -> None:
    with pytest.raises(VersionError):
        wire.reply_from_envelope({"v": 9, "id": 1, "ok": True, "result": {}})


@pytest.mark.parametrize(("rid", "want"), [(True, None), (1.0, None), ([1], None), ("a", "a"), (5, 5)])
def test_reply_id_only_when_usable(rid: object, want: object) -> None:
    assert wire.reply_from_envelope({"v": 1, "id": rid, "ok": True}).id == want


# -- from_wire ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        pytest.param({"extra": 1}, r"^Sample: unknown fields \['extra'\]", id="unknown-field"),
        pytest.param({"fds": [3]}, r"^Sample: unknown fields \['fds'\]", id="non-wire-field-sent"),
        pytest.param({"name": DROP, "count": DROP}, r"^Sample: missing fields \['name', 'count'\]", id="missing"),
        pytest.param({"count": "1"}, r"^Sample\.count: want int, got str", id="str-for-int"),
        pytest.param({"count": True}, r"^Sample\.count: want int, got bool", id="bool-for-int"),
        pytest.param({"count": 1.0}, r"^Sample\.count: want int, got float", id="float-for-int"),
        pytest.param({"flag": 1}, r"^Sample\.flag: want bool, got int", id="int-for-bool"),
        pytest.param({"name": ["x"]}, r"^Sample\.name: want str, got list", id="list-for-str"),
        pytest.param({"name": None}, r"^Sample\.name: want str, got null", id="null-for-str"),
        pytest.param({"ratio": "0.5"}, r"^Sample\.ratio: want float, got str", id="str-for-float"),
        pytest.param({"ratio": True}, r"^Sample\.ratio: want float, got bool", id="bool-for-float"),
        pytest.param({"tags": "ab"}, r"^Sample\.tags: want a list, got str", id="str-for-list"),
        pytest.param({"tags": ["a", 2]}, r"^Sample\.tags\[1\]: want str, got int", id="list-element"),
        pytest.param({"env": {"A": "1"}}, r"^Sample\.env\['A'\]: want int, got str", id="dict-value"),
        pytest.param({"env": {1: 1}}, r"^Sample\.env key: want str, got int", id="dict-key"),
        pytest.param({"env": [1]}, r"^Sample\.env: want a map, got list", id="list-for-dict"),
        pytest.param({"inner": {"n": "2"}}, r"^Sample\.inner\.n: want int, got str", id="nested-type"),
        pytest.param({"inner": {"n": 1, "m": 2}}, r"^Sample\.inner: unknown fields \['m'\]", id="nested-unknown"),
        pytest.param({"inner": {}}, r"^Sample\.inner: missing fields \['n'\]", id="nested-missing"),
        pytest.param({"inner": 5}, r"^Sample\.inner: want a map, got int", id="nested-not-map"),
        pytest.param({"note": 5}, r"^Sample\.note: want str\b.*, got int", id="optional-wrong"),
        pytest.param({"mode": "x"}, r"^Sample\.mode: want one of \['r', 'w'\]", id="literal-value"),
        pytest.param({"prio": True}, r"^Sample\.prio: want one of \[1, 2\]", id="literal-bool-for-int"),
    ],
)
def test_from_wire_rejections(patch: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        wire.from_wire(Sample, _body(**patch))


@pytest.mark.parametrize("body", [None, [GOOD], "x", 3])
def test_from_wire_refuses_non_map_body(body: object) -> None:
    with pytest.raises(InvalidArgument, match="^Sample: want a map"):
        wire.from_wire(Sample, body)


def test_from_wire_where_names_the_caller() -> None:
    with pytest.raises(InvalidArgument, match=r"^Demo\.Call\.count: "):
        wire.from_wire(Sample, _body(count="x"), where="Demo.Call")


def test_from_wire_accepts_and_applies_defaults() -> None:
    got = wire.from_wire(Sample, _body())
    assert got == Sample(name="x", count=1, ratio=0.5, flag=True, tags=["a", "b"], env={"A": 1}, inner=Inner(n=2))
    assert (got.note, got.mode, got.prio, got.level, got.fds) == (None, "r", 1, 3, [])


def test_from_wire_int_for_float_becomes_float() -> None:
    got = wire.from_wire(Sample, _body(ratio=2))
    assert got.ratio == 2.0
    assert type(got.ratio) is float


@pytest.mark.parametrize("note", [None, "hello"])
def test_from_wire_optional(note: str | None) -> None:
    assert wire.from_wire(Sample, _body(note=note)).note == note


def test_from_wire_literal() -> None:
    got = wire.from_wire(Sample, _body(mode="w", prio=2))
    assert (got.mode, got.prio) == ("w", 2)


def test_from_wire_recursive_type_within_depth() -> None:
    got = wire.from_wire(Tree, _nest(10))
    for _ in range(10):
        (got,) = got.children
    assert got == Tree()


def test_from_wire_refuses_deep_nesting() -> None:
    with pytest.raises(InvalidArgument, match=f"nested deeper than {wire.MAX_DEPTH}"):
        wire.from_wire(Tree, _nest(wire.MAX_DEPTH))


def test_from_wire_optional_nested_error_names_field_path() -> None:
    with pytest.raises(InvalidArgument, match=r"^MaybeInner\.inner\.n: want int, got str"):
        wire.from_wire(MaybeInner, {"inner": {"n": "2"}})
    assert wire.from_wire(MaybeInner, {"inner": None}) == MaybeInner()
    assert wire.from_wire(MaybeInner, {"inner": {"n": 1}}) == MaybeInner(inner=Inner(n=1))


# -- to_wire -----------------------------------------------------------------------------------


def test_to_wire_leaves_out_non_wire_fields_and_round_trips() -> None:
    obj = Sample(name="x", count=1, ratio=0.5, flag=False, tags=["t"], env={"A": 1}, inner=Inner(n=2), fds=[7, 8])
    body = wire.to_wire(obj)
    assert body == {
        "name": "x",
        "count": 1,
        "ratio": 0.5,
        "flag": False,
        "tags": ["t"],
        "env": {"A": 1},
        "inner": {"n": 2},
        "note": None,
        "mode": "r",
        "prio": 1,
        "level": 3,
    }
    assert wire.from_wire(Sample, cbor2.loads(cbor2.dumps(body))) == Sample(
        name="x", count=1, ratio=0.5, flag=False, tags=["t"], env={"A": 1}, inner=Inner(n=2)
    )


def test_to_wire_recurses_into_containers() -> None:
    assert wire.to_wire({"k": (Inner(n=1), [Inner(n=2)])}) == {"k": [{"n": 1}, [{"n": 2}]]}
    assert wire.to_wire(Inner) is Inner  # a class is not an instance
