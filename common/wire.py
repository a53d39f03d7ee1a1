"""The wire envelope and strict decoding of argument and result dataclasses.

Every message is one CBOR map. A request is ``{"v": 1, "id", "method", "args"}``; a reply is
``{"v": 1, "id", "ok": true, "result"}`` or ``{"v": 1, "id", "ok": false, "error"}``. This
module is pure: bytes and dicts in, bytes and dataclasses out, no sockets.

Decoding never trusts the peer: the frame size is checked before CBOR is parsed, and a
dataclass is built only from a map whose field names, presence and types all match its
schema. Fields marked ``wire=False`` in their metadata (file payloads) never travel in the
body.
"""

from __future__ import annotations

import dataclasses
import io
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import cbor2

from common.errors import InvalidArgument, MessageError, MessageTooLarge, VersionError

#: The only envelope version this code speaks.
WIRE_VERSION = 1
#: Largest frame a service decodes; larger ones get a TOO_LARGE reply without being parsed.
MAX_MESSAGE_BYTES = 4 << 20
#: Deepest nesting of lists and maps accepted inside arguments.
MAX_DEPTH = 32

T = TypeVar("T")
RequestId = str | int


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request envelope."""

    #: Caller-chosen id, echoed in the reply so the caller can match it.
    id: RequestId
    #: "Domain.Method", e.g. "System.Ping".
    method: str
    #: Raw argument map; decoded against the method's schema by the dispatcher.
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply envelope: exactly one of result and error is set."""

    #: The request's id, or None when the request was too broken to have one.
    id: RequestId | None
    #: True when the call succeeded.
    ok: bool
    #: The result map on success.
    result: dict[str, Any] | None = None
    #: The error map (see common.errors.error_to_wire) on failure.
    error: dict[str, Any] | None = None


def encode_request(req_id: RequestId, method: str, args: dict[str, Any]) -> bytes:
    """Encode a request envelope."""
    return cbor2.dumps({"v": WIRE_VERSION, "id": req_id, "method": method, "args": args})


def encode_reply(reply: Reply) -> bytes:
    """Encode a reply envelope."""
    env: dict[str, Any] = {"v": WIRE_VERSION, "id": reply.id, "ok": reply.ok}
    if reply.ok:
        env["result"] = reply.result if reply.result is not None else {}
    else:
        env["error"] = reply.error
    return cbor2.dumps(env)


def load_envelope(frame: bytes) -> dict[str, Any]:
    """Parse one frame into a map, refusing oversize and undecodable frames."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"message of {len(frame)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    stream = io.BytesIO(frame)
    try:
        env = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, MemoryError) as e:
        raise MessageError(f"undecodable frame: {e}") from None
    if stream.tell() != len(frame):
        raise MessageError(f"undecodable frame: {len(frame) - stream.tell()} bytes after the envelope")
    if not isinstance(env, dict):
        raise MessageError(f"envelope is a {type(env).__name__}, want a map")
    return env


def envelope_id(env: dict[str, Any]) -> RequestId | None:
    """The envelope's id if it is usable, so that even a refused request gets a matched reply."""
    rid = env.get("id")
    if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        return rid
    return None


def request_from_envelope(env: dict[str, Any]) -> Request:
    """Validate a request envelope's shape."""
    _check_version(env)
    unknown = env.keys() - {"v", "id", "method", "args"}
    if unknown:
        raise MessageError(f"request envelope has unknown fields {sorted(map(str, unknown))}")
    rid = envelope_id(env)
    if rid is None:
        raise MessageError("request envelope needs an 'id' (string or integer)")
    method = env.get("method")
    if not isinstance(method, str) or not method:
        raise MessageError("request envelope needs a 'method' string")
    args = env.get("args", {})
    if not isinstance(args, dict):
        raise MessageError(f"request 'args' is a {type(args).__name__}, want a map")
    return Request(id=rid, method=method, args=args)


def reply_from_envelope(env: dict[str, Any]) -> Reply:
    """Validate a reply envelope's shape."""
    _check_version(env)
    ok = env.get("ok")
    if not isinstance(ok, bool):
        raise MessageError("reply envelope needs an 'ok' boolean")
    if ok:
        result = env.get("result", {})
        if not isinstance(result, dict):
            raise MessageError(f"reply 'result' is a {type(result).__name__}, want a map")
        return Reply(id=envelope_id(env), ok=True, result=result)
    error = env.get("error")
    if not isinstance(error, dict):
        raise MessageError("error reply needs an 'error' map")
    return Reply(id=envelope_id(env), ok=False, error=error)


def _check_version(env: dict[str, Any]) -> None:
    version = env.get("v")
    if version != WIRE_VERSION:
        raise VersionError(f"unsupported wire version {version!r}, this side speaks {WIRE_VERSION}")


def is_wire_field(f: dataclasses.Field[Any]) -> bool:
    """False for fields that travel beside the body (file payloads), never in it."""
    return bool(f.metadata.get("wire", True))


def to_wire(obj: Any) -> Any:
    """Dataclasses (recursively) to plain maps, leaving out fields that do not travel."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_wire(getattr(obj, f.name)) for f in dataclasses.fields(obj) if is_wire_field(f)}
    if isinstance(obj, list | tuple):
        return [to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    hint: Any
    required: bool


_SCHEMAS: dict[type, tuple[_FieldSpec, ...]] = {}


def _schema(cls: type) -> tuple[_FieldSpec, ...]:
    spec = _SCHEMAS.get(cls)
    if spec is None:
        hints = typing.get_type_hints(cls)
        spec = tuple(
            _FieldSpec(
                f.name,
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if is_wire_field(f)
        )
        _SCHEMAS[cls] = spec
    return spec


def from_wire(cls: type[T], body: object, *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from a decoded map, strictly.

    Unknown fields, missing required fields and values of the wrong type (bool is not an int
    here) raise InvalidArgument naming the field.
    """
    return typing.cast(T, _decode_dataclass(cls, body, where or cls.__name__, 0))


def _decode_dataclass(cls: type, body: object, where: str, depth: int) -> Any:
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where}: want a map, got {_kind(body)}")
    spec = _schema(cls)
    names = {s.name for s in spec}
    unknown = [k for k in body if k not in names]
    if unknown:
        raise InvalidArgument(f"{where}: unknown fields {sorted(map(str, unknown))}")
    missing = [s.name for s in spec if s.required and s.name not in body]
    if missing:
        raise InvalidArgument(f"{where}: missing fields {missing}")
    kwargs = {s.name: _decode(s.hint, body[s.name], f"{where}.{s.name}", depth + 1) for s in spec if s.name in body}
    return cls(**kwargs)


def _decode(hint: Any, value: object, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{where}: nested deeper than {MAX_DEPTH}")
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:
            # "X | None": the error about X names the field that is wrong inside it.
            return _decode(options[0], value, where, depth)
        for option in options:
            try:
                return _decode(option, value, where, depth)
            except InvalidArgument:
                continue
        raise InvalidArgument(f"{where}: want {_hint_name(hint)}, got {_kind(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
        raise InvalidArgument(f"{where}: want one of {list(typing.get_args(hint))}, got {value!r:.40}")
    if origin is list:
        if not isinstance(value, list):
            raise InvalidArgument(f"{where}: want a list, got {_kind(value)}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_decode(item, v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where}: want a map, got {_kind(value)}")
        key_hint, val_hint = typing.get_args(hint) or (Any, Any)
        return {
            _decode(key_hint, k, f"{where} key", depth + 1): _decode(val_hint, v, f"{where}[{k!r:.20}]", depth + 1)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _decode_dataclass(hint, value, where, depth)
    if hint is type(None) or hint is None:
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and type(value) is hint:
        return value
    raise InvalidArgument(f"{where}: want {_hint_name(hint)}, got {_kind(value)}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
