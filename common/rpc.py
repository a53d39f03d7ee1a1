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
from typing import Any, Generic, TypeVar

from common import wire
from common.errors import ErrCode, InvalidArgument, UnknownMethod, error_to_wire

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Name of the field through which a file payload reaches a handler or leaves it.
FDS_FIELD = "fds"


class Deferred(Generic[T]):
    """A result that is not known yet: a method of the fd channel returns one to answer later,
    once other events have happened (Proc.WaitPid waits for a process's exit).

    The service keeps serving meanwhile. Exactly one of resolve and fail takes effect; an
    answer for a caller that hung up is dropped.
    """

    def __init__(self) -> None:
        self._outcome: tuple[T | None, Exception | None] | None = None
        self._listener: Callable[[T | None, Exception | None], None] | None = None

    def resolve(self, result: T) -> None:
        """Answer with result."""
        self._settle(result, None)

    def fail(self, exc: Exception) -> None:
        """Answer with the error exc would map to."""
        self._settle(None, exc)

    @property
    def done(self) -> bool:
        """True once answered."""
        return self._outcome is not None

    def _settle(self, result: T | None, exc: Exception | None) -> None:
        if self._outcome is not None:
            return
        self._outcome = (result, exc)
        if self._listener is not None:
            self._listener(result, exc)

    def _on_settled(self, listener: Callable[[T | None, Exception | None], None]) -> None:
        self._listener = listener
        if self._outcome is not None:
            listener(*self._outcome)


#: Sends a deferred reply (frame, files) on the connection the request came from.
LaterReply = Callable[[bytes, list[int]], None]


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
    #: True when the method returns a Deferred (it answers only on the fd channel).
    deferred: bool = False


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
            deferred = typing.get_origin(result_type) is Deferred
            if deferred:
                (result_type,) = typing.get_args(result_type)
            if result_type is type(None):
                result_type = None
            elif not (isinstance(result_type, type) and dataclasses.is_dataclass(result_type)):
                raise TypeError(f"{key}: result type {result_type!r} is not a dataclass or None")
            if key in self._methods:
                raise TypeError(f"{key}: registered twice")
            self._methods[key] = Method(key, fn, args_type, result_type, _has_fds_field(args_type), deferred)

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
        """Answer one request frame (a method that defers is refused: see handle_or_defer).

        Takes ownership of ``fds`` (the request's file payload): every one is closed before this
        returns, so a handler that keeps a file dups it. The caller owns the returned fds (the
        result's file payload) and closes them once they are sent.
        """
        answer = self.handle_or_defer(frame, fds, None)
        assert answer is not None  # without a way to answer later, nothing is deferred
        return answer

    def handle_or_defer(
        self, frame: bytes, fds: list[int] | None, later: LaterReply | None
    ) -> tuple[bytes, list[int]] | None:
        """As handle; but a method that returns a Deferred answers through later(frame, fds)
        once it is settled, and this returns None. Without later such a method is refused."""
        fds = fds or []
        self.requests += 1
        rid: wire.RequestId | None = None
        method = "?"
        try:
            env = wire.load_envelope(frame)
            rid = wire.envelope_id(env)
            req = wire.request_from_envelope(env)
            method = req.method
            outcome = self._call(req, fds, later is not None)
        except Exception as exc:  # noqa: BLE001 -- the one place that turns any failure into a reply
            return self._error_reply(exc, rid, method), []
        finally:
            for fd in fds:
                os.close(fd)
        if isinstance(outcome, Deferred):
            assert later is not None
            answer_id, answer_method = rid, method

            def settled(result: Any, exc: Exception | None) -> None:
                later(*self._reply(answer_id, answer_method, result, exc))

            outcome._on_settled(settled)
            return None
        return self._reply(rid, method, outcome, None)

    def _reply(
        self, rid: wire.RequestId | None, method: str, result: Any, exc: Exception | None
    ) -> tuple[bytes, list[int]]:
        """The reply frame and files for a method's result (or its failure)."""
        if exc is not None:
            return self._error_reply(exc, rid, method), []
        out_fds = list(getattr(result, FDS_FIELD, []) or []) if result is not None else []
        try:
            body = wire.to_wire(result) if result is not None else {}
            return wire.encode_reply(wire.Reply(id=rid, ok=True, result=body)), out_fds
        except Exception as bad:  # noqa: BLE001 -- a result that cannot be encoded is a bug, not a crash
            for fd in out_fds:
                os.close(fd)
            return self._error_reply(bad, rid, method), []

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

    def _call(self, req: wire.Request, fds: list[int], can_defer: bool) -> Any:
        """The method's result object (None, a dataclass, or a Deferred)."""
        m = self.registry.lookup(req.method)
        if m is None:
            raise UnknownMethod(f"unknown method {req.method!r}")
        if m.deferred and not can_defer:
            raise InvalidArgument(f"{m.name} answers only on the fd channel")
        if fds and not m.takes_fds:
            raise InvalidArgument(f"{m.name} takes no files, {len(fds)} were sent")
        args: Any = wire.from_wire(m.args_type, req.args, where=m.name)
        if m.takes_fds:
            args = dataclasses.replace(args, **{FDS_FIELD: list(fds)})
        log.debug("%s id=%s", m.name, req.id)
        return m.fn(args)
