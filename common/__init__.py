"""common: what every zerovisor service shares, and nothing service-specific.

Layout:
    errors.py    ErrCode and one exception class per failure kind; error <-> wire mapping
    wire.py      the CBOR envelope (Request/Reply) and strict dataclass decoding; pure, no sockets
    methods.py   RPC method names and which of them are safe to retry
    messages/    argument and result dataclasses, one module per RPC domain
    rpc.py       Registry (obj -> "Domain.Method") and Dispatcher (frame in, frame out)
    fdpass.py    SCM_RIGHTS over AF_UNIX SOCK_SEQPACKET, peer credentials
    server.py    ServiceLoop: the one main-loop shape of every service (ZMQ ROUTER + fd channel)
    client.py    RpcClient (ZMQ DEALER) and FdClient (fd channel)
    rundir.py    the run directory: its layout, its mode, the per-service instance lock
    log.py       logging configuration, called once per process
    sdnotify.py  systemd readiness notification
    service.py   the command line every service shares (--run-dir, --log, ...)

Nothing here imports from services/.
"""

__version__ = "0.1.0"
