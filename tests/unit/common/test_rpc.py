"""Registry naming and Dispatcher.handle, bytes in and bytes out, with real pipes for fds."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest

from common import wire
from common.errors import ErrCode
from common.messages.system import PingArgs, PingResult
from common.rpc import Dispatcher, Registry
from tests.conftest import at_eof, nonblocking_pipe, open_fds


@dataclass(frozen=True, slots=True, kw_only=True)
class Empty:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoArgs:
    text: str
    times: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoResult:
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesArgs:
    tag: str = ""
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesResult:
    count: int
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class PathResult:
    where: Path
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


class System:
    domain = "System"

    def ping(self, args: PingArgs) -> PingResult:
        return PingResult(service="test", pid=os.getpid(), fds_received=len(args.fds))


class Demo:
    """Handlers for the dispatcher tests; take_files writes to every fd it gets."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.kept: list[int] = []

    def echo(self, args: EchoArgs) -> EchoResult:
        return EchoResult(text=args.text * args.times)

    def nothing(self, args: Empty) -> None:
        return None

    def fail_value(self, args: Empty) -> None:
        raise ValueError("boom")

    def fail_os(self, args: Empty) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file", "/gone")

    def take_files(self, args: FilesArgs) -> FilesResult:
        self.received = list(args.fds)
        for fd in args.fds:
            os.write(fd, args.tag.encode())
        return FilesResult(count=len(args.fds))

    def open_pipe(self, args: Empty) -> FilesResult:
        r, w = nonblocking_pipe()
        return FilesResult(count=2, fds=[r, w])

    def bad_result(self, args: Empty) -> PathResult:
        r, w = nonblocking_pipe()
        self.kept.append(r)
        return PathResult(where=Path("/not/cbor"), fds=[w])

    def _helper(self, args: Empty) -> None:
        raise AssertionError("private methods are not exposed")


class Snake:
    def list_open_fds(self, args: Empty) -> None: ...


# Shapes a method must not have; registration refuses them. Never called.
class NoHints:
    def ping(self, args): ...  # type: ignore[no-untyped-def]


class TwoParams:
    def ping(self, args: Empty, more: Empty) -> None: ...


class NoParams:
    def ping(self) -> None: ...


class NotDataclassArgs:
    def ping(self, args: int) -> None: ...


class NotDataclassResult:
    def ping(self, args: Empty) -> int:
        return 1


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesWithoutDefault:
    fds: list[int] = field(metadata={"wire": False})


class FilePayloadWithoutDefault:
    def take(self, args: FilesWithoutDefault) -> None:
        return None


@pytest.fixture
def demo() -> Demo:
    return Demo()


@pytest.fixture
def dispatcher(demo: Demo) -> Dispatcher:
    reg = Registry()
    reg.register(demo)
    reg.register(System())
    return Dispatcher(reg)


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    before = len(open_fds())
    yield
    assert len(open_fds()) == before


def call(
    d: Dispatcher,
    method: str,
    args: dict[str, Any] | None = None,
    fds: list[int] | None = None,
    rid: wire.RequestId = "t-1",
) -> tuple[wire.Reply, list[int]]:
    frame, out_fds = d.handle(wire.encode_request(rid, method, args or {}), fds)
    return wire.reply_from_envelope(wire.load_envelope(frame)), out_fds


def _error_code(reply: wire.Reply) -> int:
    assert not reply.ok
    assert reply.error is not None
    return int(reply.error["code"])


# -- Registry ------------------------------------------------------------------------------------


def test_register_names(dispatcher: Dispatcher) -> None:
    assert dispatcher.registry.names() == [
        "Demo.BadResult",
        "Demo.Echo",
        "Demo.FailOs",
        "Demo.FailValue",
        "Demo.Nothing",
        "Demo.OpenPipe",
        "Demo.TakeFiles",
        "System.Ping",
    ]
    assert dispatcher.registry.lookup("Demo._helper") is None
    assert dispatcher.registry.lookup("Demo.Helper") is None


def test_register_snake_case_to_camel_case_and_domain_attribute() -> None:
    reg = Registry()
    reg.register(Snake())  # no domain attribute: the class name
    snake = Snake()
    snake.domain = "Proc"  # type: ignore[attr-defined]
    reg.register(snake)
    assert reg.names() == ["Proc.ListOpenFds", "Snake.ListOpenFds"]


def test_register_records_schema(dispatcher: Dispatcher) -> None:
    files = dispatcher.registry.lookup("Demo.TakeFiles")
    echo = dispatcher.registry.lookup("Demo.Echo")
    nothing = dispatcher.registry.lookup("Demo.Nothing")
    assert files is not None and echo is not None and nothing is not None
    assert (files.args_type, files.result_type, files.takes_fds) == (FilesArgs, FilesResult, True)
    assert (echo.args_type, echo.result_type, echo.takes_fds) == (EchoArgs, EchoResult, False)
    assert nothing.result_type is None


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        pytest.param(NoHints(), r"NoHints\.Ping: want def ping", id="no-annotations"),
        pytest.param(TwoParams(), r"TwoParams\.Ping: want def ping", id="two-params"),
        pytest.param(NoParams(), r"NoParams\.Ping: want def ping", id="no-params"),
        pytest.param(NotDataclassArgs(), "argument type .* is not a dataclass", id="int-args"),
        pytest.param(NotDataclassResult(), "result type .* is not a dataclass or None", id="int-result"),
        pytest.param(FilePayloadWithoutDefault(), r"fields \['fds'\] travel beside the body", id="fds-no-default"),
    ],
)
def test_register_refuses_bad_shapes(obj: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        Registry().register(obj)


def test_register_refuses_duplicates() -> None:
    reg = Registry()
    reg.register(System())
    with pytest.raises(TypeError, match=r"System\.Ping: registered twice"):
        reg.register(System())


# -- Dispatcher ----------------------------------------------------------------------------------


def test_handle_success(dispatcher: Dispatcher) -> None:
    reply, fds = call(dispatcher, "Demo.Echo", {"text": "ab", "times": 3}, rid=42)
    assert reply == wire.Reply(id=42, ok=True, result={"text": "ababab"})
    assert fds == []
    reply, _ = call(dispatcher, "Demo.Nothing")  # a None result is an empty map
    assert (reply.ok, reply.result) == (True, {})


@pytest.mark.parametrize(
    ("method", "args", "code"),
    [
        ("Demo.Missing", {}, ErrCode.UNKNOWN_METHOD),
        ("Demo._helper", {}, ErrCode.UNKNOWN_METHOD),
        ("Demo.Echo", {}, ErrCode.INVALID_ARGUMENT),
        ("Demo.Echo", {"text": 1}, ErrCode.INVALID_ARGUMENT),
        ("Demo.Echo", {"text": "a", "bogus": 1}, ErrCode.INVALID_ARGUMENT),
        ("Demo.FailValue", {}, ErrCode.INTERNAL),
    ],
)
def test_handle_errors(dispatcher: Dispatcher, method: str, args: dict[str, Any], code: ErrCode) -> None:
    reply, fds = call(dispatcher, method, args, rid="x")
    assert reply.id == "x"
    assert _error_code(reply) == code
    assert fds == []


def test_handle_handler_exceptions(dispatcher: Dispatcher) -> None:
    value, _ = call(dispatcher, "Demo.FailValue")
    assert value.error == {"code": ErrCode.INTERNAL, "message": "internal error: ValueError: boom"}
    oserr, _ = call(dispatcher, "Demo.FailOs")
    assert oserr.error is not None
    assert (oserr.error["code"], oserr.error["errno"], oserr.error["errno_name"]) == (9, errno.ENOENT, "ENOENT")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xff\x00garbage", ErrCode.BAD_MESSAGE),
        (b"", ErrCode.BAD_MESSAGE),
        (b"\x83\x01\x02\x03", ErrCode.BAD_MESSAGE),
        (b"\xa0" * (wire.MAX_MESSAGE_BYTES + 1), ErrCode.TOO_LARGE),
    ],
    ids=["garbage", "empty", "array", "oversize"],
)
def test_handle_garbage_frame_gets_reply_without_id(dispatcher: Dispatcher, frame: bytes, code: ErrCode) -> None:
    out, fds = dispatcher.handle(frame)
    reply = wire.reply_from_envelope(wire.load_envelope(out))
    assert reply.id is None
    assert _error_code(reply) == code
    assert fds == []


def test_handle_bad_version_keeps_the_id(dispatcher: Dispatcher) -> None:
    out, _ = dispatcher.handle(cbor2.dumps({"v": 2, "id": 9, "method": "System.Ping", "args": {}}))
    reply = wire.reply_from_envelope(wire.load_envelope(out))
    assert (reply.id, _error_code(reply)) == (9, ErrCode.BAD_VERSION)


def test_counters(dispatcher: Dispatcher) -> None:
    call(dispatcher, "Demo.Echo", {"text": "a"})
    call(dispatcher, "Demo.Missing")
    dispatcher.handle(b"\xff")
    call(dispatcher, "System.Ping")
    dispatcher.refuse(ValueError("truncated"))
    assert (dispatcher.requests, dispatcher.errors) == (5, 3)


@pytest.mark.usefixtures("no_fd_leak")
def test_fds_reach_handler_and_are_closed_after(dispatcher: Dispatcher, demo: Demo) -> None:
    pipes = [nonblocking_pipe() for _ in range(3)]
    writers = [w for _, w in pipes]
    reply, out_fds = call(dispatcher, "Demo.TakeFiles", {"tag": "hi"}, fds=writers)
    assert reply == wire.Reply(id="t-1", ok=True, result={"count": 3})
    assert out_fds == []
    assert demo.received == writers
    for r, w in pipes:
        with pytest.raises(OSError) as info:
            os.fstat(w)
        assert info.value.errno == errno.EBADF
        assert os.read(r, 10) == b"hi"  # written by the handler through the fd we passed
        assert at_eof(r)  # EOF: the dispatcher closed the only write end
        os.close(r)


@pytest.mark.usefixtures("no_fd_leak")
def test_system_ping_counts_and_closes_fds(dispatcher: Dispatcher) -> None:
    r, w = nonblocking_pipe()
    reply, _ = call(dispatcher, "System.Ping", fds=[w])
    assert reply.result is not None and reply.result["fds_received"] == 1
    assert at_eof(r)
    os.close(r)


@pytest.mark.parametrize(
    ("method", "code"),
    [("Demo.Echo", ErrCode.INVALID_ARGUMENT), ("Demo.Missing", ErrCode.UNKNOWN_METHOD), (None, ErrCode.BAD_MESSAGE)],
)
@pytest.mark.usefixtures("no_fd_leak")
def test_refused_fds_are_closed(dispatcher: Dispatcher, method: str | None, code: ErrCode) -> None:
    r, w = nonblocking_pipe()
    frame = wire.encode_request(1, method, {"text": "a"}) if method else b"\xff garbage"
    out, out_fds = dispatcher.handle(frame, [w])
    assert _error_code(wire.reply_from_envelope(wire.load_envelope(out))) == code
    assert out_fds == []
    assert at_eof(r)
    os.close(r)


@pytest.mark.usefixtures("no_fd_leak")
def test_result_fds_returned_to_caller(dispatcher: Dispatcher) -> None:
    reply, out_fds = call(dispatcher, "Demo.OpenPipe")
    assert reply.result == {"count": 2}  # the fds never travel in the body
    assert len(out_fds) == 2
    r, w = out_fds
    os.write(w, b"ok")
    assert os.read(r, 2) == b"ok"
    os.close(r)
    os.close(w)


@pytest.mark.usefixtures("no_fd_leak")
def test_unencodable_result_becomes_internal_error(dispatcher: Dispatcher, demo: Demo) -> None:
    reply, out_fds = call(dispatcher, "Demo.BadResult", rid=5)
    assert (reply.id, _error_code(reply)) == (5, ErrCode.INTERNAL)
    assert out_fds == []
    assert (dispatcher.requests, dispatcher.errors) == (1, 1)
    (r,) = demo.kept
    assert at_eof(r)  # the result's fd was closed, not leaked
    os.close(r)
