"""The start-up check of the ``ha:`` section against this machine: do the interfaces of the media
and of the address resources exist, and do they have the IPv4 addresses a medium sends from?

Kept apart from parsing (`director.config.ha`) so that a file can be validated on another
machine; `ha.service.HAService` runs `check_ha_environment` when it starts.  I/O: rtnetlink
through pyroute2 (`ha.rtnl`), in a thread of its own.
"""

from __future__ import annotations

import socket

from ha.model import HAConfig
from ha.rtnl import in_thread, iproute

__all__ = ["check_ha_environment"]


def _inspect_links(netns: str | None) -> tuple[dict[str, int], dict[int, list[tuple[str, str | None]]]]:
    """Interface name -> index, and index -> [(IPv4 address, broadcast or None)], via rtnetlink."""
    with iproute(netns) as ipr:
        links = {msg.get("ifname"): msg["index"] for msg in ipr.get_links()}
        addresses: dict[int, list[tuple[str, str | None]]] = {}
        for msg in ipr.get_addr(family=socket.AF_INET):
            addresses.setdefault(msg["index"], []).append((msg.get("address"), msg.get("broadcast")))
    return links, addresses


def check_ha_environment(ha: HAConfig, *, netns: str | None = None, file: str | None = None) -> list[str]:
    """Problems of ``ha`` on this machine: interfaces that do not exist or lack the addresses a medium needs.

    Checks, with rtnetlink (pyroute2 ``IPRoute.get_links`` / ``get_addr``) in
    the current network namespace or in the named one (``ip netns`` name;
    never created):

    * every interface of a medium or an address resource exists;
    * a ``bcast`` interface has an IPv4 address with a broadcast address
      (heartbeat's ``bcast.c`` sends to the interface's broadcast address;
      ``ip addr add ... brd +`` sets one);
    * an ``mcast`` interface has an IPv4 address (heartbeat's ``mcast.c``
      sends from it, ``IP_MULTICAST_IF``).

    Returns:
        one message per problem, ``[FILE:LINE: ]ha.media: bcast eth1: ...``;
        ``FILE:LINE`` (``file`` and the ``ha:`` key's line) only when ``file``
        is given.  ``[]`` when all is well.

    Raises:
        OSError: the namespace does not exist, or netlink cannot be used.
    """
    # in a thread of its own: pyroute2's synchronous API must not run on an asyncio loop's thread
    links, addresses = in_thread(lambda: _inspect_links(netns), name="ha-environment")
    where = f" (network namespace {netns})" if netns is not None else ""
    prefix = ""
    if file is not None:
        prefix = f"{file}:{ha.line}: " if ha.line else f"{file}: "
    problems: list[str] = []
    for medium in ha.media:
        head = f"{prefix}ha.media: {medium.as_ha_cf()}: "
        index = links.get(medium.interface)
        if index is None:
            problems.append(f"{head}interface {medium.interface!r} does not exist{where}")
            continue
        ipv4 = addresses.get(index, [])
        if medium.kind == "bcast" and not any(brd and brd != "0.0.0.0" for _, brd in ipv4):
            problems.append(
                f"{head}interface {medium.interface!r} has no IPv4 address with a broadcast address{where}; "
                f"a bcast medium sends to it (add one with 'ip addr add ADDRESS/PREFIX brd + dev "
                f"{medium.interface}')"
            )
        elif medium.kind == "mcast" and not ipv4:
            problems.append(
                f"{head}interface {medium.interface!r} has no IPv4 address{where}; an mcast medium sends from it"
            )
    for group in ha.groups:
        for resource in group.resources:
            if resource.interface not in links:
                problems.append(
                    f"{prefix}ha.resources: {resource} (owner {group.owner}): interface "
                    f"{resource.interface!r} does not exist{where}"
                )
    return problems
