"""What the daemon tells the BGP service (`ha.bgp.service.BgpService`): each VIP's virtual
services and their health (`vip_health`, pure), and the kernel switches an active-active
director needs (`BGP_SYSCTLS`, `prepare_sysctls`).

Kernel switches (Documentation/networking/ipvs-sysctl.rst and ip-sysctl.rst):

* ``net.ipv4.conf.all.arp_ignore=1`` and ``arp_announce=2``: the VIP is on ``lo`` of every
  director, and no director may answer ARP for it on the shared segment (the routers' routes,
  not ARP, pick the director), as on a DR real server;
* ``net.ipv4.vs.sloppy_tcp=1`` and ``sloppy_sctp=1``: IPVS creates a connection entry for a
  packet in the middle of a flow, not only for a SYN (INIT), so a connection a router rehashes
  to another director goes on there (with ``mh``, to the same real server).

The ``vs`` keys exist once ``ip_vs`` is loaded.  A switch that cannot be written (``/proc/sys``
is read-only under systemd's ``ProtectKernelTunables=``) is reported, with the line to put in
``/etc/sysctl.d/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ha.bgp.model import BgpConfig
from ha.bgp.policy import ServiceHealth

from .model import Config, DestKey, ServiceKey, VirtualService
from .planner import AdminState, HealthState
from .sysctl import read_sysctl, write_sysctl

__all__ = ["BGP_SYSCTLS", "prepare_sysctls", "vip_health"]

#: (key in /proc/sys path form, wanted value) for a director with a bgp section.
BGP_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net/ipv4/conf/all/arp_ignore", "1"),
    ("net/ipv4/conf/all/arp_announce", "2"),
    ("net/ipv4/vs/sloppy_tcp", "1"),
    ("net/ipv4/vs/sloppy_sctp", "1"),
)


def vip_health(
    config: Config,
    bgp: BgpConfig,
    health: Callable[[ServiceKey, DestKey], HealthState],
    admin: Callable[[VirtualService], Mapping[DestKey, AdminState]],
    programmed: Callable[[ServiceKey], bool],
) -> dict[str, tuple[ServiceHealth, ...]]:
    """Each bgp VIP's virtual services (VIP address -> their `ServiceHealth`).

    A real server is in service when its checks say ``up`` and the operator has it
    ``enabled``; unknown when its checks have no result yet and the operator has not disabled
    it; ``programmed`` says whether a service is in the kernel's IPVS table.
    """
    wanted = {v.address for v in bgp.vips}
    found: dict[str, list[ServiceHealth]] = {a: [] for a in wanted}
    for svc in config.services:
        address = svc.key.address
        if address not in wanted:
            continue
        states = admin(svc)
        up = unknown = 0
        for rs in svc.real_servers:
            state, operator = health(svc.key, rs.key), states.get(rs.key, "enabled")
            if state == "up" and operator == "enabled":
                up += 1
            elif state == "unknown" and operator != "disabled":
                unknown += 1
        found[address].append(ServiceHealth(svc.name, programmed(svc.key), up, len(svc.real_servers), unknown))
    return {a: tuple(s) for a, s in found.items()}


def prepare_sysctls(
    read: Callable[[str], str] = read_sysctl, write: Callable[[str, object], None] = write_sysctl
) -> list[str]:
    """Set `BGP_SYSCTLS` where they differ; returns one problem text per switch left unset.

    Runs in the calling thread's network namespace; blocking (small ``/proc`` files).
    """
    problems = []
    for key, value in BGP_SYSCTLS:
        dotted = key.replace("/", ".")
        try:
            if read(key) == value:
                continue
        except FileNotFoundError:
            problems.append(f"{dotted} does not exist (is ip_vs loaded?)")
            continue
        except OSError as exc:
            problems.append(f"cannot read {dotted}: {exc.strerror or exc}")
            continue
        try:
            write(key, value)
        except OSError as exc:
            problems.append(
                f"cannot set {dotted}={value}: {exc.strerror or exc}; "
                f"add '{dotted} = {value}' to /etc/sysctl.d/directord-bgp.conf"
            )
    return problems
