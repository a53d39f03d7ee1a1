"""One error vocabulary for every service.

Each failure kind is one exception class carrying its wire code. Errors are raised at the I/O
edge with context, cross the wire as ``{"code", "name", "message", "errno"?}`` through
``error_to_wire`` (the one place that maps exceptions to codes), come back to a caller as
``RemoteError`` and become exit codes only at the CLI edge.
"""

from __future__ import annotations

import errno as _errno
from enum import IntEnum
from typing import Any, ClassVar


class ErrCode(IntEnum):
    """Wire error codes. Values are part of the protocol: never renumber."""

    #: The frame could not be decoded, or the envelope is malformed.
    BAD_MESSAGE = 1
    #: The envelope's version is not one this service speaks.
    BAD_VERSION = 2
    #: No such method is registered.
    UNKNOWN_METHOD = 3
    #: The arguments do not match the method's schema or fail validation.
    INVALID_ARGUMENT = 4
    #: The message is larger than the service accepts.
    TOO_LARGE = 5
    #: The named object (container, process, file) does not exist.
    NOT_FOUND = 6
    #: The object exists but is in a state that forbids the operation.
    CONFLICT = 7
    #: The peer is not allowed to make this call.
    PERMISSION_DENIED = 8
    #: A host system call failed; the reply carries its errno.
    OS_ERROR = 9
    #: A service the operation needs cannot be reached.
    UNAVAILABLE = 10
    #: A bug: anything not covered above. Logged with a traceback on the server.
    INTERNAL = 11
    #: A service took the request but did not answer in time: it is alive but stuck.
    NOT_RESPONDING = 12


class ZerovisorError(Exception):
    """Base of every error zerovisor raises on purpose."""

    code: ClassVar[ErrCode] = ErrCode.INTERNAL


class MessageError(ZerovisorError):
    """A frame or envelope that cannot be decoded."""

    code = ErrCode.BAD_MESSAGE


class VersionError(ZerovisorError):
    """An envelope with a version this side does not speak."""

    code = ErrCode.BAD_VERSION


class UnknownMethod(ZerovisorError):
    """A request for a method nobody registered."""

    code = ErrCode.UNKNOWN_METHOD


class InvalidArgument(ZerovisorError):
    """Arguments that do not fit the schema, or fail a method's validation."""

    code = ErrCode.INVALID_ARGUMENT


class MessageTooLarge(ZerovisorError):
    """A message (or fd payload) over the receiver's limit."""

    code = ErrCode.TOO_LARGE


class NotFound(ZerovisorError):
    """The named object does not exist."""

    code = ErrCode.NOT_FOUND


class ConflictError(ZerovisorError):
    """The object's current state forbids the operation."""

    code = ErrCode.CONFLICT


class PermissionDenied(ZerovisorError):
    """The peer may not do this."""

    code = ErrCode.PERMISSION_DENIED


class ServiceUnavailable(ZerovisorError):
    """A service could not be reached or did not answer in time (a transport failure)."""

    code = ErrCode.UNAVAILABLE


def is_unavailable(exc: BaseException) -> bool:
    """Whether exc says a service was down (gone or restarting, not stuck): ours, or one behind
    the service we called (which relays the code)."""
    if isinstance(exc, ServiceNotResponding):
        return False
    return isinstance(exc, ServiceUnavailable) or (
        isinstance(exc, RemoteError) and exc.remote_code == ErrCode.UNAVAILABLE
    )


class ServiceNotResponding(ServiceUnavailable):
    """A service took a request and did not answer in time (stopped or stuck, not gone): sending
    it again would only wait as long again."""

    code = ErrCode.NOT_RESPONDING


def has_code(exc: BaseException, code: ErrCode) -> bool:
    """Whether exc means code: raised here with it, or answered with it by a service (a
    RemoteError carries the code of the failure, whichever service had it first)."""
    if isinstance(exc, RemoteError):
        return exc.remote_code == code
    return isinstance(exc, ZerovisorError) and exc.code == code


class RemoteError(ZerovisorError):
    """The transport worked but the remote side answered with an error."""

    def __init__(self, code: ErrCode, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.remote_code = code
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """Map any exception to the wire's error map. The only exception -> code table."""
    if isinstance(exc, RemoteError):
        # A service relaying another service's failure keeps the original code.
        out: dict[str, Any] = {"code": int(exc.remote_code), "message": str(exc)}
        if exc.errno is not None:
            out["errno"] = exc.errno
        return out
    if isinstance(exc, ZerovisorError):
        return {"code": int(exc.code), "message": str(exc)}
    if isinstance(exc, OSError) and exc.errno is not None:
        return {
            "code": int(ErrCode.OS_ERROR),
            "message": str(exc),
            "errno": exc.errno,
            "errno_name": _errno.errorcode.get(exc.errno, str(exc.errno)),
        }
    return {"code": int(ErrCode.INTERNAL), "message": f"internal error: {type(exc).__name__}: {exc}"}


def error_from_wire(err: object) -> RemoteError:
    """Turn a reply's error map back into a RemoteError, tolerating a sloppy peer."""
    if not isinstance(err, dict):
        return RemoteError(ErrCode.BAD_MESSAGE, f"malformed error in reply: {err!r:.80}")
    raw = err.get("code")
    try:
        code = ErrCode(raw) if isinstance(raw, int) and not isinstance(raw, bool) else ErrCode.INTERNAL
    except ValueError:
        code = ErrCode.INTERNAL
    message = err.get("message")
    errno = err.get("errno")
    return RemoteError(
        code,
        message if isinstance(message, str) else f"error code {raw!r}",
        errno if isinstance(errno, int) and not isinstance(errno, bool) else None,
    )
