"""What the daemon gives the BGP service (`director.bgp`): each VIP's services and their real
servers in service, and the kernel switches of the bgp mode."""

from __future__ import annotations

import socket

from director.bgp import BGP_SYSCTLS, prepare_sysctls, vip_health
from director.model import Config, DestKey, RealServer, ServiceKey, VirtualService
from ha.bgp.model import BgpConfig, Neighbor, VipAnnouncement
from ha.bgp.policy import ServiceHealth

VIP, OTHER = "192.0.2.10", "192.0.2.20"


def service(name: str, address: str, port: int, rips: list[str]) -> VirtualService:
    key = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, address, port)
    return VirtualService(name, key, scheduler="mh", real_servers=tuple(RealServer(r, port) for r in rips))


def test_vip_health_counts_up_and_enabled_real_servers_per_service() -> None:
    web = service("web", VIP, 80, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    tls = service("tls", VIP, 443, ["10.0.0.1", "10.0.0.2"])
    other = service("other", OTHER, 80, ["10.0.0.9"])
    config = Config(path="x.yaml", services=(web, tls, other))
    bgp = BgpConfig(65001, (Neighbor("10.0.1.1", 65000, "r1"),), (VipAnnouncement(VIP), VipAnnouncement("192.0.2.99")))
    up = {(web.key, web.real_servers[0].key), (web.key, web.real_servers[1].key), (tls.key, tls.real_servers[1].key)}

    unknown = {(web.key, web.real_servers[2].key), (other.key, other.real_servers[0].key)}

    def health(s: ServiceKey, d: DestKey) -> str:
        return "up" if (s, d) in up else "unknown" if (s, d) in unknown else "down"

    def admin(svc: VirtualService) -> dict[DestKey, str]:
        return {svc.real_servers[1].key: "drain"} if svc.name == "web" else {}

    got = vip_health(config, bgp, health, admin, lambda key: key.port == 80)  # type: ignore[arg-type]
    assert got == {
        VIP: (ServiceHealth("web", True, 1, 3, unknown=1), ServiceHealth("tls", False, 1, 2)),
        "192.0.2.99": (),
    }


def test_prepare_sysctls_sets_what_differs_and_reports_what_it_cannot() -> None:
    values = {"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "2", "net/ipv4/vs/sloppy_tcp": "0"}
    written: list[tuple[str, object]] = []

    def read(key: str) -> str:
        if key not in values:
            raise FileNotFoundError(key)
        return values[key]

    def write(key: str, value: object) -> None:
        if key == "net/ipv4/vs/sloppy_tcp":
            raise OSError(30, "Read-only file system")
        written.append((key, value))

    problems = prepare_sysctls(read, write)
    assert written == [("net/ipv4/conf/all/arp_ignore", "1")]
    assert problems == [
        "cannot set net.ipv4.vs.sloppy_tcp=1: Read-only file system; "
        "add 'net.ipv4.vs.sloppy_tcp = 1' to /etc/sysctl.d/directord-bgp.conf",
        "net.ipv4.vs.sloppy_sctp does not exist (is ip_vs loaded?)",
    ]
    assert [k for k, _ in BGP_SYSCTLS][2:] == ["net/ipv4/vs/sloppy_tcp", "net/ipv4/vs/sloppy_sctp"]
