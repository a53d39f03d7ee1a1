"""RPC method names, one constant per method, and which calls are safe to retry.

Names are "Domain.Method" as gVisor's control server spells them; the domain is the class a
service registers (see common.rpc.Registry).
"""

from __future__ import annotations

SYSTEM_PING = "System.Ping"  # answers if the service's main loop is alive
SYSTEM_STATUS = "System.Status"  # pid, version, uptime and request counters of a service

#: Calls with no effect, which a client may resend after a timeout or a reconnect.
IDEMPOTENT: frozenset[str] = frozenset({SYSTEM_PING, SYSTEM_STATUS})
