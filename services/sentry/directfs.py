"""DirectFs: the sentry runs the gofer's file operations itself, on mount fds the gofer donated.

This is gVisor's directfs. A trapped open or mkdir answered through the gofer costs two
process hops (sentry -> gofer -> sentry), each a wake-up and a CBOR round trip: ~170 us of a
~220 us open here. The gofer still opens every mount (a detached clone with the policy's
attributes set on it by the kernel: read-only, nodev, nosuid) and hands the sentry a dup of each
(Gofer.MountFds); the sentry then calls the very same Gofer domain (services.gofer.control) on
those fds in its own loop: openat2(RESOLVE_IN_ROOT) inside the clone, the caller's credentials
taken on per thread, masked paths refused, so the policy and errnos are the gofer's by
construction. No host path is ever opened by the sentry; a container whose fds it does not hold
(the gofer was down when it was attached, or directfs is off) is served by the gofer as before.

ZEROVISOR_DIRECTFS=0 in the sentry's environment turns it off (runsc's --directfs=false).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from common import fdpass, wire
from common.errors import ZerovisorError
from common.messages.gofer import AttachArgs
from common.rpc import Registry
from services.gofer.control import Gofer
from services.gofer.mounts import MountTable

log = logging.getLogger(__name__)

#: The environment variable that turns directfs off ("0").
DIRECTFS_ENV = "ZEROVISOR_DIRECTFS"


def enabled() -> bool:
    """Whether the sentry serves file calls itself (the default) rather than through the gofer."""
    return os.environ.get(DIRECTFS_ENV, "1") != "0"


class DirectFs:
    """The donated mounts of every container, and the Gofer domain that runs on them. Owns the
    mount fds (close() or drop() closes them)."""

    def __init__(self) -> None:
        self._table = MountTable()
        self._registry = Registry()
        self._registry.register(Gofer(self._table))

    def adopt(self, args: AttachArgs, fds: list[int]) -> None:
        """Serve args.cid's files from fds (taken: one per mount, in order), replacing any
        mounts held for it (a gofer that restarted opened new clones)."""
        self.drop(args.cid)
        self._table.attach(args, fds)

    def drop(self, cid: str) -> None:
        """Close cid's mounts, if held: its file calls go to the gofer again."""
        if self._table.attached(cid):
            self._table.detach(cid)

    def serves(self, cid: str) -> bool:
        """Whether cid's file calls are answered here."""
        return self._table.attached(cid)

    def call(self, method: str, request: Any) -> tuple[dict[str, Any] | None, list[int], int]:
        """Run a Gofer method here: (result as the wire carries it, its fds (the caller's),
        0) or (None, [], errno), as AsyncGoferChannel reports a reply."""
        m = self._registry.lookup(method)
        if m is None:
            return None, [], errno.ENOSYS
        try:
            result = m.fn(request)
        except OSError as e:
            return None, [], e.errno or errno.EIO
        except ZerovisorError as e:
            # A request the gofer would refuse (InvalidArgument): EIO, as its reply would give.
            log.debug("%s: %s", method, e)
            return None, [], errno.EIO
        if result is None:
            return {}, [], 0
        fds = list(getattr(result, "fds", ()))
        try:
            return wire.to_wire(result), fds, 0
        except BaseException:
            fdpass.close_all(fds)
            raise

    def close(self) -> None:
        """Close every container's mounts."""
        self._table.close_all()
