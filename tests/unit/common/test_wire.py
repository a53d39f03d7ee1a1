"""The CBOR envelope (common.wire): requests, replies and their framing, as bytes and dicts."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from common import wire
from common.errors import MessageError, MessageTooLarge, VersionError

DROP = object()


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
