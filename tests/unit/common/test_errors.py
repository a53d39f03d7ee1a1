"""The exception <-> wire error map (common.errors)."""

from __future__ import annotations

import errno

import pytest

from common import errors
from common.errors import ErrCode, RemoteError, error_from_wire, error_to_wire

#: Written out rather than read from each class's ``code``: the numbers are the protocol.
EXPECTED: dict[type[errors.ZerovisorError], int] = {
    errors.MessageError: 1,
    errors.VersionError: 2,
    errors.UnknownMethod: 3,
    errors.InvalidArgument: 4,
    errors.MessageTooLarge: 5,
    errors.NotFound: 6,
    errors.ConflictError: 7,
    errors.PermissionDenied: 8,
    errors.ServiceUnavailable: 10,
    errors.ZerovisorError: 11,
}


def test_every_subclass_is_in_the_table() -> None:
    # Only the table's own module: services define errors of their own (StubError, ...).
    subclasses = {c for c in errors.ZerovisorError.__subclasses__() if c.__module__ == "common.errors"} - {RemoteError}
    assert subclasses == set(EXPECTED) - {errors.ZerovisorError}


@pytest.mark.parametrize(("cls", "code"), list(EXPECTED.items()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_error_to_wire_per_class(cls: type[errors.ZerovisorError], code: int) -> None:
    assert error_to_wire(cls("something went wrong")) == {"code": code, "message": "something went wrong"}


def test_oserror_keeps_errno() -> None:
    out = error_to_wire(FileNotFoundError(errno.ENOENT, "No such file", "/nope"))
    assert out["code"] == 9 == int(ErrCode.OS_ERROR)
    assert out["errno"] == errno.ENOENT
    assert out["errno_name"] == "ENOENT"
    assert "/nope" in out["message"]


def test_oserror_with_unknown_errno_names_the_number() -> None:
    out = error_to_wire(OSError(99999, "weird"))
    assert (out["code"], out["errno"], out["errno_name"]) == (9, 99999, "99999")


def test_oserror_without_errno_is_internal() -> None:
    out = error_to_wire(OSError("no errno here"))
    assert out["code"] == ErrCode.INTERNAL
    assert "errno" not in out


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("k"), RuntimeError(), AssertionError("x")])
def test_arbitrary_exception_is_internal(exc: Exception) -> None:
    out = error_to_wire(exc)
    assert out["code"] == 11 == int(ErrCode.INTERNAL)
    assert out["message"].startswith(f"internal error: {type(exc).__name__}")
    assert set(out) == {"code", "message"}


@pytest.mark.parametrize(
    ("code", "message", "err"),
    [(ErrCode.OS_ERROR, "open failed", errno.EACCES), (ErrCode.NOT_FOUND, "no such container", None)],
)
def test_remote_error_round_trip(code: ErrCode, message: str, err: int | None) -> None:
    back = error_from_wire(error_to_wire(RemoteError(code, message, err)))
    assert isinstance(back, RemoteError)
    assert (back.remote_code, str(back), back.errno) == (code, message, err)


def test_remote_error_relayed_keeps_original_code_not_internal() -> None:
    out = error_to_wire(RemoteError(ErrCode.CONFLICT, "busy"))
    assert out == {"code": 7, "message": "busy"}


def test_local_oserror_round_trip() -> None:
    back = error_from_wire(error_to_wire(PermissionError(errno.EPERM, "Operation not permitted")))
    assert (back.remote_code, back.errno) == (ErrCode.OS_ERROR, errno.EPERM)
    assert "Operation not permitted" in str(back)


@pytest.mark.parametrize("garbage", [None, "oops", [1, 2], 42, b"\x00"])
def test_error_from_wire_non_dict(garbage: object) -> None:
    back = error_from_wire(garbage)
    assert back.remote_code == ErrCode.BAD_MESSAGE
    assert back.errno is None
    assert "malformed error" in str(back)


@pytest.mark.parametrize("code", [999, -1, "4", None, 4.0])
def test_error_from_wire_unknown_code_is_internal(code: object) -> None:
    back = error_from_wire({"code": code, "message": "m"})
    assert back.remote_code == ErrCode.INTERNAL
    assert str(back) == "m"


@pytest.mark.parametrize("err", ["2", 2.0, True, None, [2]])
def test_error_from_wire_non_int_errno_dropped(err: object) -> None:
    assert error_from_wire({"code": 9, "message": "m", "errno": err}).errno is None


def test_error_from_wire_non_str_message() -> None:
    back = error_from_wire({"code": 6, "message": 12})
    assert back.remote_code == ErrCode.NOT_FOUND
    assert str(back) == "error code 6"
