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
from collections.abc import Callable
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


#: Per class, the names of its wire fields, or None when instances are not dataclasses: every
#: reply goes through to_wire, so dataclasses.fields() is asked once per class, not per value.
_WIRE_NAMES: dict[type, tuple[str, ...] | None] = {}
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def to_wire(obj: Any) -> Any:
    """Dataclasses (recursively) to plain maps, leaving out fields that do not travel."""
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    try:
        names = _WIRE_NAMES[cls]
    except KeyError:
        names = _WIRE_NAMES[cls] = _wire_names(cls)
    if names is not None:
        return {name: to_wire(getattr(obj, name)) for name in names}
    if isinstance(obj, list | tuple):
        return [to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    return obj


def _wire_names(cls: type) -> tuple[str, ...] | None:
    # A dataclass *class* (an instance of type) stays as it is; only its instances become maps.
    if issubclass(cls, type) or not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls) if is_wire_field(f))


def from_wire(cls: type[T], body: object, *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from a decoded map, strictly.

    Unknown fields, missing required fields and values of the wrong type (bool is not an int
    here) raise InvalidArgument naming the field.
    """
    try:
        return typing.cast(T, _dataclass_decoder(cls)(body, 0))
    except _Invalid as e:
        raise InvalidArgument(f"{where or cls.__name__}{''.join(reversed(e.path))}: {e.msg}") from None


class _Invalid(Exception):
    """A value that does not fit its hint, raised before its location is known.

    Each container on the way out adds its segment to ``path``, so that no location is
    formatted unless something is wrong.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg
        #: Segments such as ".name", "[2]", " key", innermost first.
        self.path: list[str] = []


#: A compiled hint: (value, depth) -> decoded value, or _Invalid. Containers check the depth
#: before decoding each child, so that leaves need not.
_Decoder = Callable[[object, int], Any]


class _DataclassDecoder:
    """Builds one dataclass from a map.

    The fields are compiled when the first map is decoded, not when a hint naming the class
    is: that lets a dataclass contain itself, and keeps an unresolvable annotation an error
    only for the calls that reach it.
    """

    __slots__ = ("_cls", "_fields", "_names", "_required")

    def __init__(self, cls: type) -> None:
        self._cls = cls
        self._fields: tuple[tuple[str, _Decoder], ...] | None = None
        self._names: frozenset[str] = frozenset()
        self._required: tuple[str, ...] = ()

    def _compile_fields(self) -> tuple[tuple[str, _Decoder], ...]:
        hints = typing.get_type_hints(self._cls)
        wire = [f for f in dataclasses.fields(self._cls) if is_wire_field(f)]
        self._names = frozenset(f.name for f in wire)
        self._required = tuple(f.name for f in wire if f.default is f.default_factory is dataclasses.MISSING)
        self._fields = tuple((f.name, _compile(hints[f.name])) for f in wire)
        return self._fields

    def decode(self, body: object, depth: int) -> Any:
        if not isinstance(body, dict):
            raise _Invalid(f"want a map, got {_kind(body)}")
        fields = self._fields
        if fields is None:
            fields = self._compile_fields()
        if not self._names.issuperset(body):
            unknown = [k for k in body if k not in self._names]
            raise _Invalid(f"unknown fields {sorted(map(str, unknown))}")
        # No unknown names and as many keys as fields: every field is present.
        complete = len(body) == len(fields)
        if not complete and (missing := [name for name in self._required if name not in body]):
            raise _Invalid(f"missing fields {missing}")
        kwargs = {}
        depth += 1
        name = ""
        try:
            for name, decode in fields:
                if complete or name in body:
                    if depth > MAX_DEPTH:
                        raise _Invalid(f"nested deeper than {MAX_DEPTH}")
                    kwargs[name] = decode(body[name], depth)
        except _Invalid as e:
            e.path.append(f".{name}")
            raise
        return self._cls(**kwargs)


#: One decoder per dataclass, kept apart from _COMPILED: from_wire's top level decodes any
#: class as a dataclass, while a field hinted ``int`` must stay an int.
_DATACLASSES: dict[type, _Decoder] = {}


def _dataclass_decoder(cls: type) -> _Decoder:
    decode = _DATACLASSES.get(cls)
    if decode is None:
        decode = _DATACLASSES[cls] = _DataclassDecoder(cls).decode
    return decode


#: Compiled plain classes (int, str, dataclasses). Generic hints are not keys: typing compares
#: unions and Literals as sets, yet their order decides which option is tried first and how
#: errors read, so each is compiled where it appears, once per schema.
_COMPILED: dict[type, _Decoder] = {}


def _compile(hint: Any) -> _Decoder:
    """The decoder for a type hint: all typing introspection happens here, not per value."""
    if typing.get_origin(hint) is None and isinstance(hint, type):
        decode = _COMPILED.get(hint)
        if decode is None:
            decode = _COMPILED[hint] = _compile_hint(hint)
        return decode
    return _compile_hint(hint)


def _compile_hint(hint: Any) -> _Decoder:
    # The branches and their order are the decoding rules.
    want = f"want {_hint_name(hint)}"
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda value, _depth: value
    if origin is Union or origin is types.UnionType:
        return _compile_union(typing.get_args(hint), want)
    if origin is typing.Literal:
        return _compile_literal(typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return _compile_list(_compile(item))
    if origin is dict:
        key, val = typing.get_args(hint) or (Any, Any)
        return _compile_dict(_compile(key), _compile(val))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass_decoder(hint)
    if hint is float:
        return _decode_float
    if hint is int:
        return _decode_int
    if hint is None:
        hint = type(None)
    # Any other class must match exactly; a hint with no rule (tuple[int], a TypeVar) matches nothing.
    return _compile_exact(hint if isinstance(hint, type) else None, want)


def _compile_union(args: tuple[Any, ...], want: str) -> _Decoder:
    options = [o for o in args if o is not type(None)]
    nullable = len(options) < len(args)
    if len(options) == 1:
        # "X | None": the error about X names the field that is wrong inside it.
        only = _compile(options[0])
        return lambda value, depth: None if value is None else only(value, depth)
    decoders = tuple(_compile(o) for o in options)

    def decode_union(value: object, depth: int) -> Any:
        if value is None and nullable:
            return None
        for decode in decoders:
            try:
                return decode(value, depth)
            except (_Invalid, InvalidArgument):  # InvalidArgument: a dataclass's own checks
                continue
        raise _Invalid(f"{want}, got {_kind(value)}")

    return decode_union


def _compile_literal(allowed: tuple[Any, ...]) -> _Decoder:
    kinds = {type(a) for a in allowed}
    want = f"want one of {list(allowed)}"

    def decode_literal(value: object, _depth: int) -> Any:
        if value in allowed and type(value) in kinds:
            return value
        raise _Invalid(f"{want}, got {value!r:.40}")

    return decode_literal


def _compile_list(item: _Decoder) -> _Decoder:
    def decode_list(value: object, depth: int) -> Any:
        if not isinstance(value, list):
            raise _Invalid(f"want a list, got {_kind(value)}")
        depth += 1
        out: list[Any] = []
        try:
            for v in value:
                if depth > MAX_DEPTH:
                    raise _Invalid(f"nested deeper than {MAX_DEPTH}")
                out.append(item(v, depth))
        except _Invalid as e:
            e.path.append(f"[{len(out)}]")
            raise
        return out

    return decode_list


def _compile_dict(key: _Decoder, val: _Decoder) -> _Decoder:
    def decode_dict(value: object, depth: int) -> Any:
        if not isinstance(value, dict):
            raise _Invalid(f"want a map, got {_kind(value)}")
        depth += 1
        out = {}
        for k, v in value.items():
            try:
                if depth > MAX_DEPTH:
                    raise _Invalid(f"nested deeper than {MAX_DEPTH}")
                decoded_key = key(k, depth)
            except _Invalid as e:
                e.path.append(" key")
                raise
            try:
                out[decoded_key] = val(v, depth)
            except _Invalid as e:
                e.path.append(f"[{k!r:.20}]")
                raise
        return out

    return decode_dict


def _compile_exact(cls: type | None, want: str) -> _Decoder:
    def decode_exact(value: object, _depth: int) -> Any:
        if type(value) is cls:
            return value
        raise _Invalid(f"{want}, got {_kind(value)}")

    return decode_exact


def _decode_float(value: object, _depth: int) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value)
    raise _Invalid(f"want float, got {_kind(value)}")


def _decode_int(value: object, _depth: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Invalid(f"want int, got {_kind(value)}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
