"""The VIP routes BIRD announces, in the kernel table it learns from (`ha.bgp.model`), over
rtnetlink (`ha.rtnl`).

A route ``VIP/32`` (``/128``) ``dev lo`` of route protocol `ROUTE_PROTO_ANNOUNCE` is announced
as it is; of `ROUTE_PROTO_GRACEFUL_SHUTDOWN`, with the GRACEFUL_SHUTDOWN community.  Changing
one to the other is one ``RTM_NEWROUTE`` with ``NLM_F_REPLACE`` (the protocol is not part of
a route's key), so BIRD never sees the route missing in between.  Only routes of those two
protocols are read or removed: anything else in the table is left alone.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ha.bgp.model import ROUTE_PROTO_ANNOUNCE, ROUTE_PROTO_GRACEFUL_SHUTDOWN
from ha.bgp.policy import RouteState
from ha.rtnl import async_iproute, netlink_error

__all__ = ["OUR_PROTOS", "read_routes", "set_route"]

#: Route protocol per route state (withdrawn: no route).
_PROTO = {"announced": ROUTE_PROTO_ANNOUNCE, "graceful_shutdown": ROUTE_PROTO_GRACEFUL_SHUTDOWN}
_STATE = {v: k for k, v in _PROTO.items()}
OUR_PROTOS = frozenset(_PROTO.values())
#: include/uapi/linux/rtnetlink.h: rtm_scope RT_SCOPE_LINK, ESRCH when deleting an absent route.
_RT_SCOPE_LINK = 253
_ESRCH = 3
#: Bound on the routes read from the table (a table filled by someone else is not ours to read).
MAX_ROUTES = 65536


def _spec(address: str, table: int, oif: int) -> dict[str, Any]:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return {"dst": f"{ip}/32", "table": table, "oif": oif, "scope": _RT_SCOPE_LINK, "family": socket.AF_INET}
    return {"dst": f"{ip}/128", "table": table, "oif": oif, "family": socket.AF_INET6}


async def read_routes(table: int) -> dict[str, RouteState]:
    """directord's VIP routes in kernel table ``table``: VIP address (canonical) -> route state.

    Raises:
        OSError: the rtnetlink socket cannot be opened; pyroute2.NetlinkError: the kernel refused.
    """
    found: dict[str, RouteState] = {}
    seen = 0
    async with async_iproute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            async for msg in await ipr.route("dump", table=table, family=family):
                seen += 1
                if seen > MAX_ROUTES:
                    break
                state = _STATE.get(msg["proto"])
                dst = msg.get("dst")
                full = 32 if family == socket.AF_INET else 128
                if state is None or dst is None or msg["dst_len"] != full or msg.get("table") != table:
                    continue
                found[str(ipaddress.ip_address(dst))] = state  # type: ignore[assignment]
    return found


async def set_route(address: str, route: RouteState, *, table: int, oif: int) -> None:
    """Make ``address``'s route in ``table`` be ``route``: replace it, or delete it for
    ``withdrawn`` (deleting an absent route is a no-op).  ``oif``: the interface index of the
    route's device (``lo``: 1).

    Raises:
        OSError: the socket cannot be opened; pyroute2.NetlinkError: the kernel refused.
    """
    spec = _spec(address, table, oif)
    async with async_iproute() as ipr:
        if route == "withdrawn":
            for proto in OUR_PROTOS:
                try:
                    await ipr.route("del", proto=proto, **spec)
                except netlink_error() as exc:
                    if getattr(exc, "code", None) != _ESRCH:
                        raise
            return
        await ipr.route("replace", proto=_PROTO[route], **spec)
