"""The command server's wire: one request from a `controller` process, then small events both
ways on the same stream socket.

Not CBOR, unlike the services' messages: the client encodes this before it has imported
anything, and cbor2's import (typing, re) alone would be ~2 ms of a ~12 ms client. So every
field is a length-prefixed byte string, and lists are NUL-joined (no argv or environ entry can
hold a NUL). The request carries the caller's files as SCM_RIGHTS: its open fds, in the order
of Request.fds, then its working directory.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib

#: Environment variable: "0" runs every command in its own process, without a server; another
#: value names a server of its own (a test's, say), shared only by the commands that name it.
SWITCH = "ZEROVISOR_CLI_SERVER"
#: Version of this protocol (in the socket name too: a server answers only its own version).
VERSION = 1
#: Largest request a server reads: argv and environ (the kernel's own limit is ARG_MAX, 2 MiB
#: at the default stack size); a bigger one runs in its own process. Below the fd channel's
#: MAX_MESSAGE_BYTES (common.wire, not imported here: too heavy), on which a request travels
#: on to a spare with a few bytes more.
MAX_REQUEST = (4 << 20) - 1024
#: Most fds a request carries: the kernel passes at most SCM_MAX_FD (253) in one message, and
#: the working directory is one of them.
MAX_FDS = 250

#: Server to client: the worker exited with this status (value: the status).
EXITED = b"x"
#: Server to client: a signal killed the worker (value: the signal number).
KILLED = b"k"
#: Server to client, instead of running anything: run the command yourself (value: a reason).
REFUSED = b"r"
#: Client to server: the client got this signal; the worker is sent it (value: the number).
SIGNAL = b"s"
#: REFUSED's reasons: the caller differs from the server in something a worker would inherit.
NOT_ADMITTED = 1
#: REFUSED's reasons: the server's code changed on disk since it started; it is going away, and
#: the client starts a new one.
STALE = 2

_EVENT = struct.Struct("!ci")
#: Size of one event on the wire.
EVENT_SIZE = _EVENT.size
_LENGTH = struct.Struct("!I")


class Request:
    """A command to run for a client. A plain class, not a dataclass: importing dataclasses
    (inspect, ast, re) would double the client's imports."""

    __slots__ = ("argv", "blocked", "env", "fds", "ignored", "key", "umask")

    def __init__(
        self,
        key: str,
        umask: int,
        argv: list[str],
        env: list[bytes],
        fds: list[int],
        ignored: list[int],
        blocked: list[int],
    ) -> None:
        #: install_key() of the client: which code it means to run.
        self.key = key
        #: The client's umask.
        self.umask = umask
        #: The client's sys.argv.
        self.argv = argv
        #: The client's environment, as KEY=VALUE byte strings.
        self.env = env
        #: The client's fd numbers of the files it sends, in order (its working directory,
        #: sent last, is not among them).
        self.fds = fds
        #: The signals the client ignores (a worker's children inherit that, as ours would).
        self.ignored = ignored
        #: The signals the client blocks.
        self.blocked = blocked


def encode_request(request: Request) -> bytes:
    """The request as bytes, its total length first."""
    fields = [
        str(VERSION).encode(),
        request.key.encode(),
        str(request.umask).encode(),
        b"\0".join(os.fsencode(arg) for arg in request.argv),
        b"\0".join(request.env),
        _numbers(request.fds),
        _numbers(request.ignored),
        _numbers(request.blocked),
    ]
    body = b"".join(_LENGTH.pack(len(f)) + f for f in fields)
    return _LENGTH.pack(len(body)) + body


def request_length(prefix: bytes) -> int | None:
    """The total size of the request that starts with prefix, once prefix holds its length."""
    if len(prefix) < _LENGTH.size:
        return None
    return _LENGTH.size + int(_LENGTH.unpack_from(prefix)[0])


def decode_request(data: bytes) -> Request:
    """A whole request (encode_request's bytes); ValueError if it is not one of this version."""
    fields: list[bytes] = []
    at = _LENGTH.size
    while at < len(data):
        if at + _LENGTH.size > len(data):
            raise ValueError("truncated field length")
        (size,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + size > len(data):
            raise ValueError("truncated field")
        fields.append(data[at : at + size])
        at += size
    if len(fields) != 8:
        raise ValueError(f"{len(fields)} fields, not 8")
    version, key, umask, argv, env, fds, ignored, blocked = fields
    if int(version) != VERSION:
        raise ValueError(f"protocol version {version!r}, not {VERSION}")
    return Request(
        key=key.decode(),
        umask=int(umask),
        argv=[os.fsdecode(arg) for arg in argv.split(b"\0")] if argv else [],
        env=env.split(b"\0") if env else [],
        fds=[int(fd) for fd in fds.split()],
        ignored=[int(signo) for signo in ignored.split()],
        blocked=[int(signo) for signo in blocked.split()],
    )


def _numbers(values: list[int]) -> bytes:
    return b" ".join(str(v).encode() for v in values)


def encode_event(kind: bytes, value: int) -> bytes:
    """One event: its kind (EXITED, KILLED, REFUSED, SIGNAL) and its value."""
    return _EVENT.pack(kind, value)


def decode_event(data: bytes) -> tuple[bytes, int]:
    """(kind, value) of one event of EVENT_SIZE bytes."""
    kind, value = _EVENT.unpack(data)
    return kind, value


def install_key() -> str:
    """What identifies the code a command would run: this checkout or installation, the
    interpreter, its version and this protocol's."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    return f"{root}\0{sys.executable}\0{sys.hexversion}\0{VERSION}"


def socket_name(key: str, uid: int) -> bytes:
    """The server's abstract socket for key, a user and SWITCH's name. Abstract: nothing on disk
    to go stale after a crash; anyone may connect, so the server checks who did (admission.py)."""
    instance = os.environ.get(SWITCH, "").encode()
    return b"\0zerovisor-cli-%d-%08x-%s" % (uid, zlib.crc32(key.encode()), instance[:40])
