"""Method registration and dispatch, shared by every service.

A service exposes an object per domain (``System``, later ``Lifecycle``, ``Proc``, ...): each
public method ``def ping(self, args: PingArgs) -> PingResult`` becomes "System.Ping". As in
gVisor's urpc, a method that does not fit that shape fails at registration, at start-up, never
at call time. The Dispatcher turns one request frame (and the fds that came with it) into one
reply frame; it has no sockets, so it is tested with bytes.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import wire
from common.errors import ErrCode, InvalidArgument, UnknownMethod, error_to_wire

log = logging.getLogger(__name__)

#: Name of the field through which a file payload reaches a handler or leaves it.
FDS_FIELD = "fds"


@dataclass(frozen=True, slots=True)
class Method:
    """One registered method."""

    #: "Domain.Method".
    name: str
    #: The bound handler.
    fn: Callable[[Any], Any]
    #: Dataclass the arguments are decoded into.
    args_type: type
    #: Dataclass the handler returns, or None for an empty result.
    result_type: type | None
    #: True when args_type has an ``fds`` field, so the method accepts a file payload.
    takes_fds: bool


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _has_fds_field(cls: type) -> bool:
    return any(f.name == FDS_FIELD and not wire.is_wire_field(f) for f in dataclasses.fields(cls))


class Registry:
    """The methods a service answers, by name."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(self, obj: object) -> None:
        """Expose every public method of obj as "<Domain>.<Method>".

        The domain is ``obj.domain`` if set, else the class name. Raises TypeError for a method
        that is not ``def name(self, args: ArgsDataclass) -> ResultDataclass | None`` and for a
        name registered twice.
        """
        domain = getattr(obj, "domain", type(obj).__name__)
        for attr, fn in inspect.getmembers(obj, inspect.ismethod):
            if attr.startswith("_"):
                continue
            key = f"{domain}.{_camel(attr)}"
            hints = typing.get_type_hints(fn)
            params = list(inspect.signature(fn).parameters)
            if len(params) != 1 or params[0] not in hints or "return" not in hints:
                raise TypeError(f"{key}: want def {attr}(self, args: T) -> R")
            args_type = hints[params[0]]
            result_type = hints["return"]
            if not (isinstance(args_type, type) and dataclasses.is_dataclass(args_type)):
                raise TypeError(f"{key}: argument type {args_type!r} is not a dataclass")
            unfilled = [
                f.name
                for f in dataclasses.fields(args_type)
                if not wire.is_wire_field(f)
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ]
            if unfilled:
                raise TypeError(f"{key}: fields {unfilled} travel beside the body and need a default")
            if result_type is type(None):
                result_type = None
            elif not (isinstance(result_type, type) and dataclasses.is_dataclass(result_type)):
                raise TypeError(f"{key}: result type {result_type!r} is not a dataclass or None")
            if key in self._methods:
                raise TypeError(f"{key}: registered twice")
            self._methods[key] = Method(key, fn, args_type, result_type, _has_fds_field(args_type))

    def lookup(self, name: str) -> Method | None:
        """The method registered under name, if any."""
        return self._methods.get(name)

    def names(self) -> list[str]:
        """Every registered method name, sorted."""
        return sorted(self._methods)


class Dispatcher:
    """Frame in, frame out; counts what it answered."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        #: Requests answered since start.
        self.requests = 0
        #: Requests answered with an error since start.
        self.errors = 0

    def handle(self, frame: bytes, fds: list[int] | None = None) -> tuple[bytes, list[int]]:
        """Answer one request frame.

        Takes ownership of ``fds`` (the request's file payload): every one is closed before this
        returns, so a handler that keeps a file dups it. The caller owns the returned fds (the
        result's file payload) and closes them once they are sent.
        """
        fds = fds or []
        self.requests += 1
        rid: wire.RequestId | None = None
        method = "?"
        try:
            env = wire.load_envelope(frame)
            rid = wire.envelope_id(env)
            req = wire.request_from_envelope(env)
            method = req.method
            result, out_fds = self._call(req, fds)
        except Exception as exc:  # noqa: BLE001 -- the one place that turns any failure into a reply
            return self._error_reply(exc, rid, method), []
        finally:
            for fd in fds:
                os.close(fd)
        try:
            return wire.encode_reply(wire.Reply(id=rid, ok=True, result=result)), out_fds
        except Exception as exc:  # noqa: BLE001 -- a result that cannot be encoded is a bug, not a crash
            for fd in out_fds:
                os.close(fd)
            return self._error_reply(exc, rid, method), []

    def refuse(self, exc: Exception) -> bytes:
        """Count and answer a request refused before it could be read (e.g. truncated)."""
        self.requests += 1
        return self._error_reply(exc, None, "?")

    def _error_reply(self, exc: Exception, rid: wire.RequestId | None, method: str) -> bytes:
        self.errors += 1
        err = error_to_wire(exc)
        if err["code"] == ErrCode.INTERNAL:
            log.exception("%s failed", method)
        elif "errno" in err:
            # A failed system call is an answer (the gofer's ENOENT for a program), not an event.
            log.debug("%s failed: %s", method, exc)
        else:
            log.warning("%s failed: %s", method, exc)
        return wire.encode_reply(wire.Reply(id=rid, ok=False, error=err))

    def _call(self, req: wire.Request, fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        m = self.registry.lookup(req.method)
        if m is None:
            raise UnknownMethod(f"unknown method {req.method!r}")
        if fds and not m.takes_fds:
            raise InvalidArgument(f"{m.name} takes no files, {len(fds)} were sent")
        args: Any = wire.from_wire(m.args_type, req.args, where=m.name)
        if m.takes_fds:
            args = dataclasses.replace(args, **{FDS_FIELD: list(fds)})
        log.debug("%s id=%s", m.name, req.id)
        result = m.fn(args)
        if result is None:
            return {}, []
        out_fds = list(getattr(result, FDS_FIELD, []) or [])
        return wire.to_wire(result), out_fds
