"""File descriptors over AF_UNIX SOCK_SEQPACKET: SCM_RIGHTS beside a CBOR message.

ZMQ cannot carry fds, so every call that does (stdio for exec, an opened file, a listener fd)
goes on a service's fd channel, after gVisor's urpc FilePayload: one sendmsg per message, or
per fragment of a message too big for one frame. Each function says who owns the fds it takes
or returns.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import os
import select
import socket
import struct

from common.errors import MessageError, MessageTooLarge, PermissionDenied
from common.wire import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

#: Most fds one frame may carry (urpc's limit; Linux allows SCM_MAX_FD = 253).
MAX_FDS = 128
#: Largest frame on the fd channel. A SEQPACKET frame must fit the sender's SO_SNDBUF (about
#: 208 KiB by default), so a bigger message goes as several frames (send_frame).
MAX_FRAME = 64 << 10
#: The first byte of each frame of a message sent in fragments: more follow, or this is the last.
_MORE, _LAST = b"\x00", b"\x01"
_MARKS = (_MORE, _LAST)
#: How long the next fragment of a message under way may take to arrive (or to find room).
FRAGMENT_TIMEOUT = 5.0

_CRED = struct.Struct("3i")
_INT = array.array("i")
_FDS_SPACE = socket.CMSG_SPACE(MAX_FDS * _INT.itemsize)


def send_frame(sock: socket.socket, message: bytes, fds: list[int] | None = None) -> None:
    """Send one message with its fds. The caller keeps ownership of the fds (they are dup'ed).

    A message that fits one frame goes as that frame: every call on the hot path does. A bigger
    one (a listing of many containers, a spec with a large environment), or one with more than
    MAX_FDS fds, goes as fragments: frames that begin with _MORE, then one with _LAST, each with
    its share of the fds. So does a small one that begins with a mark byte, which a CBOR envelope
    never does: a receiver can tell the two kinds apart by the first byte alone.
    """
    fds = fds or []
    if len(message) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"fd-channel message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if len(message) <= MAX_FRAME and len(fds) <= MAX_FDS and message[:1] not in _MARKS:
        _send(sock, message, fds)
        return
    chunk = MAX_FRAME - 1
    count = max(-(-len(message) // chunk), -(-len(fds) // MAX_FDS), 1)
    for i in range(count):
        if i:
            # The receiver is reading the message now: wait for room rather than leave it half sent.
            _wait(sock, select.POLLOUT)
        mark = _LAST if i == count - 1 else _MORE
        _send(sock, mark + message[i * chunk : (i + 1) * chunk], fds[i * MAX_FDS : (i + 1) * MAX_FDS])


def recv_frame(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Receive one message and its fds (all its fragments, for a fragmented one). The caller
    owns and must close the returned fds.

    An empty message with no fds means the peer closed the connection (also when it did so in
    the middle of a message). A frame or fd array that was truncated is refused, and so is a
    message over MAX_MESSAGE_BYTES (after it was read to its end, so that the next one is read
    whole); every fd that did arrive is closed first.
    """
    frame, fds = _recv(sock)
    if frame[:1] not in _MARKS:
        return frame, fds
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            size += len(frame) - 1
            if size <= MAX_MESSAGE_BYTES:
                parts.append(frame[1:])
            if frame[:1] == _LAST:
                break
            _wait(sock, select.POLLIN)
            frame, more = _recv(sock)
            fds.extend(more)
            if not frame and not more:
                close_all(fds)
                return b"", []
            if frame[:1] not in _MARKS:
                raise MessageError("fd channel: a message in fragments ended without its last one")
    except BaseException:
        close_all(fds)
        raise
    if size > MAX_MESSAGE_BYTES:
        close_all(fds)
        raise MessageTooLarge(f"fd-channel message refused: more than {MAX_MESSAGE_BYTES} bytes")
    return b"".join(parts), fds


def _send(sock: socket.socket, frame: bytes, fds: list[int]) -> None:
    """Send one frame with its fds (dup'ed)."""
    if fds:
        sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(frame)


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Receive one frame and its fds (the caller's); a truncated one is refused, its fds closed."""
    # socket.recv_fds drops its flags argument (CPython gh-107898), so it cannot ask for
    # MSG_CMSG_CLOEXEC; without it a received fd would leak into every child we spawn.
    data, ancdata, flags, _ = sock.recvmsg(MAX_FRAME + 1, _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds = received_fds(ancdata)
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or len(data) > MAX_FRAME:
        close_all(fds)
        if flags & socket.MSG_CTRUNC:
            raise MessageTooLarge(f"fd-channel message refused: more than {MAX_FDS} fds in a frame")
        raise MessageTooLarge(f"fd-channel message refused: a frame of more than {MAX_FRAME} bytes")
    return data, fds


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The fds in recvmsg's ancillary data (the caller's, to close)."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _INT.itemsize
            fds.extend(array.array("i", payload[:usable]))
    return fds


def readable(sock: socket.socket) -> bool:
    """Whether a frame, or the peer's hangup, waits to be read now."""
    return _ready(sock, select.POLLIN, 0.0)


def _wait(sock: socket.socket, event: int) -> None:
    """On a non-blocking socket, wait up to FRAGMENT_TIMEOUT for event (a blocking one waits in
    the call itself, under its own timeout); TimeoutError when it does not come."""
    if sock.gettimeout() == 0.0 and not _ready(sock, event, FRAGMENT_TIMEOUT):
        raise TimeoutError(errno.ETIMEDOUT, "fd channel: the peer stopped in the middle of a message")


def _ready(sock: socket.socket, event: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), event)
    return bool(poller.poll(timeout * 1000))


def close_all(fds: list[int]) -> None:
    """Close every fd in the list, ignoring ones already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


def check_peer(sock: socket.socket) -> int:
    """Refuse a peer that is neither root nor our own user; return its pid."""
    pid, uid, _ = peer_credentials(sock)
    if uid not in (0, os.geteuid()):
        raise PermissionDenied(f"fd channel: peer pid {pid} uid {uid} is not allowed")
    return pid


def accept_peer(listener: socket.socket, timeout: float) -> socket.socket | None:
    """The next connection on a non-blocking listener whose peer passes check_peer (the
    caller's, with timeout set so that a peer that stops reading cannot freeze a loop); None
    when there is none, or the peer was refused (logged)."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return None
    try:
        check_peer(conn)
    except PermissionDenied as e:
        log.warning("%s", e)
        conn.close()
        return None
    conn.settimeout(timeout)
    return conn


def drain(fd: int) -> None:
    """Read a non-blocking fd (a signal wakeup pipe) until it is empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
