"""File descriptors over AF_UNIX SOCK_SEQPACKET: SCM_RIGHTS beside one CBOR frame.

ZMQ cannot carry fds, so every call that does (stdio for exec, an opened file, a listener fd)
goes as one sendmsg on a service's fd channel, after gVisor's urpc FilePayload. Each function
says who owns the fds it takes or returns.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import struct

from common.errors import MessageTooLarge, PermissionDenied

log = logging.getLogger(__name__)

#: Most fds one message may carry (urpc's limit; Linux allows SCM_MAX_FD = 253).
MAX_FDS = 128
#: Largest frame on the fd channel; bigger bodies belong on the ZMQ channel. A SEQPACKET
#: message must fit the sender's SO_SNDBUF (about 208 KiB by default), so this stays well below.
MAX_FRAME = 64 << 10

_CRED = struct.Struct("3i")
_INT = array.array("i")
_FDS_SPACE = socket.CMSG_SPACE(MAX_FDS * _INT.itemsize)


def send_frame(sock: socket.socket, frame: bytes, fds: list[int] | None = None) -> None:
    """Send one frame with its fds. The caller keeps ownership of the fds (they are dup'ed)."""
    fds = fds or []
    if len(fds) > MAX_FDS:
        raise MessageTooLarge(f"too many fds: {len(fds)} > {MAX_FDS}")
    if len(frame) > MAX_FRAME:
        raise MessageTooLarge(f"fd-channel frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def recv_frame(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Receive one frame and its fds. The caller owns and must close the returned fds.

    An empty frame with no fds means the peer closed the connection. A frame or fd array that
    was truncated is refused, and every fd that did arrive is closed first.
    """
    # socket.recv_fds drops its flags argument (CPython gh-107898), so it cannot ask for
    # MSG_CMSG_CLOEXEC; without it a received fd would leak into every child we spawn.
    data, ancdata, flags, _ = sock.recvmsg(MAX_FRAME + 1, _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _INT.itemsize
            fds.extend(array.array("i", payload[:usable]))
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or len(data) > MAX_FRAME:
        close_all(fds)
        if flags & socket.MSG_CTRUNC:
            raise MessageTooLarge(f"fd-channel message refused: more than {MAX_FDS} fds")
        raise MessageTooLarge(f"fd-channel message refused: more than {MAX_FRAME} bytes")
    return data, fds


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
