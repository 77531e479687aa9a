"""`ha.bgp.service.BgpService` with three routers, one that refuses the session and one that
flaps: neither disturbs the other session, the VIPs or the kernel's table.

The director's service runs in one network namespace (through ``bgp_service_driver.py``, spoken
to by ``bgp_driver_client.py``); three plain BIRDs play three routers in the other, each on an
address of its own (``routerbird.py``):

* ``good`` accepts the session and keeps it;
* ``rejecting`` expects another AS (65099) and answers the director's OPEN with a
  NOTIFICATION, Bad Peer AS (RFC 4271 section 6.2), at every attempt;
* ``flapping`` accepts, and the test disables and enables its protocol (``birdc disable`` /
  ``enable``) `FLAPS` times.

(Three BIRDs rather than three protocols of one: BIRD runs one BGP session at a time per
neighbour address, and all three have the director's.)

What happens is read independently of directord, as often as it can (every `SAMPLE_EVERY`
seconds): the routers' BIRDs through ``birdc`` (``show route all``, ``show protocols all``, the
rejecting router's log), the kernel through ``ip`` (table 221, the addresses on ``lo``).

Shows: through the rejections and the flaps, the good router keeps both VIPs (the same routes,
received once, no withdraw, its session never reset), table 221 and the VIPs on ``lo`` never
change, and the rejecting router never has a session or a route; the flapping router loses
the VIPs at each disable and receives them anew (with their communities and MED) at each
enable; the director reports the rejected session as not Established with BIRD's reason
(``Received: Bad peer AS``) and the flapping one Established again.

Root only; skipped without /usr/sbin/bird (Debian package bird2)."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bgp_driver_client import Driver
from polling import wait_for
from routerbird import birdc, director_address, needs_bird, router_bird, router_host, router_pair

PREFIX = f"bnb{os.getpid()}"
NET = 233
DIRECTOR = director_address(NET)
#: the routers: name -> (host number of its address 10.<NET>.0.<host>, the AS it expects of the director)
ROUTERS = {"good": (2, 65001), "rejecting": (3, 65099), "flapping": (4, 65001)}
VIP_A, VIP_B = "192.0.2.20", "192.0.2.21"
#: what a router must receive for each VIP (the BGP attributes of ``show route all`` that directord sets)
WANTED = {
    f"{VIP_A}/32": ("BGP.as_path: 65001", "BGP.community: (65001,200)", "BGP.med: 30"),
    f"{VIP_B}/32": ("BGP.as_path: 65001",),
}
FLAPS = 5
#: seconds between two samples of the routers' and the kernel's views
SAMPLE_EVERY = 0.1
#: seconds a flapping router stays disabled, and stays enabled once it has the VIPs again
FLAP_PAUSE = 1.0

pytestmark = [*needs_bird, pytest.mark.slow]


def router_conf(name: str, directory: Path) -> str:
    """The configuration of router ``name`` (`ROUTERS`): passive, listening on its own address
    only (``strict bind``), importing everything, logging to ``directory/NAME.log``."""
    host, director_as = ROUTERS[name]
    address = router_host(NET, host)
    return textwrap.dedent(
        f"""\
        log "{directory / name}.log" all;
        router id {address};
        protocol device {{}}
        protocol bgp {name} {{
            local {address} as 65000;
            neighbor {DIRECTOR} as {director_as};
            strict bind on;
            passive on;
            hold time 3;
            error wait time 1, 1;
            ipv4 {{ import all; export none; }};
        }}
        """
    )


# --- reading the routers (birdc) and the kernel (ip) -------------------------------------------

_ROUTE = re.compile(r"(\S+/\d+)\s+unicast \[(\S+) ([^\]]+)\]")


def routes(ctl: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """A router's routes (``show route all``): prefix -> (the time BIRD received it, the
    `WANTED` kinds of BGP attribute lines it has, sorted)."""
    found: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in birdc(ctl, "show route all").splitlines():
        m = _ROUTE.match(line)
        if m:
            current = m.group(1)
            found[current] = (m.group(3), [])
        elif current and line.strip().startswith(("BGP.as_path:", "BGP.community:", "BGP.med:")):
            found[current][1].append(line.strip())
    return {prefix: (when, tuple(sorted(attrs))) for prefix, (when, attrs) in found.items()}


def attributes(view: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    """`routes` without the times."""
    return {prefix: attrs for prefix, (_, attrs) in view.items()}


@dataclass
class Protocol:
    """A router's BGP protocol (``show protocols all NAME``)."""

    state: str  # BIRD's protocol state: up, start, ...
    since: str
    info: str  # "Established", "Idle          BGP Error: Bad peer AS", ...
    import_updates: int | None = None  # UPDATEs received announcing a route, None when down
    import_withdraws: int | None = None  # withdraws received, None when down


def protocol(ctl: str, name: str) -> Protocol:
    """Router protocol ``name`` as ``show protocols all NAME`` shows it."""
    text = birdc(ctl, f"show protocols all {name}")
    row = next(line for line in text.splitlines() if line.startswith(name + " "))
    fields = row.split(None, 5)
    p = Protocol(fields[3], fields[4], fields[5].strip() if len(fields) > 5 else "")
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["Import", "updates:"]:
            p.import_updates = int(words[2])
        elif words[:2] == ["Import", "withdraws:"]:
            p.import_withdraws = int(words[2])
    return p


def ip_lines(ns: str, *args: str, keep: Callable[[str], bool] = lambda line: True) -> tuple[str, ...]:
    """The lines of ``ip -n NS ARGS`` that ``keep`` accepts, stripped and sorted."""
    out = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True, timeout=10).stdout
    return tuple(sorted(line.strip() for line in out.splitlines() if keep(line.strip())))


def kernel_view(ns: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The director's table 221 and its IPv4 addresses on ``lo``."""
    return (
        ip_lines(ns, "route", "show", "table", "221"),
        ip_lines(ns, "-4", "addr", "show", "dev", "lo", keep=lambda line: line.startswith("inet ")),
    )


@dataclass
class Watch:
    """What the sampler saw change from one sample to the next, and go wrong, while it ran."""

    samples: int = 0
    gaps: list[tuple[float, object]] = field(default_factory=list)  # (seconds since start, what good had then)
    kernel: list[tuple[float, object]] = field(default_factory=list)  # (seconds, table 221 and lo then)
    rejecting: list[tuple[float, object]] = field(default_factory=list)  # (seconds, what went wrong)
    errors: list[BaseException] = field(default_factory=list)


def sample(director_ns: str, ctls: dict[str, str], stop: threading.Event, watch: Watch) -> None:
    """Every `SAMPLE_EVERY` s until ``stop``: record in ``watch`` each change of the good
    router's routes (times included: a withdraw and announce between two samples shows as a new
    time) and of the kernel's table 221 and ``lo``, and the rejecting router's session coming
    up or routes reaching it."""
    try:
        good0, kernel0 = routes(ctls["good"]), kernel_view(director_ns)
        start = time.monotonic()
        while not stop.is_set():
            now = time.monotonic() - start
            good = routes(ctls["good"])
            if good != good0:
                watch.gaps.append((now, good))
                good0 = good
            kernel = kernel_view(director_ns)
            if kernel != kernel0:
                watch.kernel.append((now, kernel))
                kernel0 = kernel
            rejecting = protocol(ctls["rejecting"], "rejecting")
            if rejecting.info.startswith("Established") or rejecting.state == "up":
                watch.rejecting.append((now, rejecting))
            if routes(ctls["rejecting"]):
                watch.rejecting.append((now, "has routes"))
            watch.samples += 1
            stop.wait(SAMPLE_EVERY)
    except BaseException as exc:  # reported by the test
        watch.errors.append(exc)


@pytest.fixture
def lab(tmp_path):
    """(director namespace, the routers' control sockets by name, the rejecting router's log,
    the service's JSON config, state dir)."""
    hosts = [host for host, _ in ROUTERS.values() if host != 2]
    with (
        router_pair(PREFIX, NET, tmp_path, config=router_conf("good", tmp_path), extra_hosts=hosts) as (a, b, good),
        router_bird(b, tmp_path, "rejecting", router_conf("rejecting", tmp_path)) as rejecting,
        router_bird(b, tmp_path, "flapping", router_conf("flapping", tmp_path)) as flapping,
    ):
        subprocess.run(["ip", "-n", a, "link", "set", "lo", "up"], check=True)
        config = {
            "local_as": 65001,
            "router_id": DIRECTOR,
            "neighbors": [
                {"address": router_host(NET, host), "remote_as": 65000, "name": name, "bfd": False}
                for name, (host, _) in ROUTERS.items()
            ],
            "vips": [
                {"address": VIP_A, "communities": [[65001, 200]], "med": 30},
                {"address": VIP_B},
            ],
            "graceful_shutdown_wait": 0.5,
            "run_dir": str(tmp_path / "run"),
        }
        state = tmp_path / "state"
        state.mkdir()
        ctls = {"good": good, "rejecting": rejecting, "flapping": flapping}
        yield a, ctls, tmp_path / "rejecting.log", config, state


def rejections(log: Path) -> int:
    """How many times the rejecting router refused the director (its log's Bad peer AS errors)."""
    return log.read_text().count("rejecting: Error: Bad peer AS: 65001") if log.exists() else 0


def test_a_rejecting_and_a_flapping_neighbour_disturb_nothing(lab):
    ns, ctls, rejecting_log, config, state = lab
    d = Driver(ns, config, state)
    stop = threading.Event()
    watch = Watch()
    sampler = threading.Thread(target=sample, args=(ns, ctls, stop, watch), daemon=True)
    try:
        d.send({"health": {VIP_A: [1, 1, 1], VIP_B: [1, 1, 1]}})
        # good and flapping receive both VIPs with their attributes
        for name in ("good", "flapping"):
            wait_for(lambda n=name: attributes(routes(ctls[n])) == WANTED, 15, f"{name} has the VIPs")
        good_before = protocol(ctls["good"], "good")
        assert good_before.info.startswith("Established") and good_before.import_updates == len(WANTED)
        assert good_before.import_withdraws == 0
        table, lo = kernel_view(ns)
        assert table == tuple(sorted(f"{vip} dev lo proto 221 scope link" for vip in (VIP_A, VIP_B)))
        vips_on_lo = [f"inet {vip}/32 scope global lo:dd" for vip in (VIP_A, VIP_B)]
        assert lo == tuple(sorted(["inet 127.0.0.1/8 scope host lo", *vips_on_lo]))

        sampler.start()
        wait_for(lambda: watch.samples >= 1 or watch.errors, 10, "the sampler's first sample")
        refused_before = rejections(rejecting_log)

        # the flaps: each disable withdraws everything from the flapping router at once, each
        # enable brings the VIPs back, announced anew (a route received after the enable)
        times = {routes(ctls["flapping"])[f"{VIP_A}/32"][0]}
        for flap in range(FLAPS):
            birdc(ctls["flapping"], "disable flapping")
            wait_for(lambda: routes(ctls["flapping"]) == {}, 10, f"flap {flap}: the disabled router's routes gone")
            time.sleep(FLAP_PAUSE)
            assert routes(ctls["flapping"]) == {}, f"flap {flap}: a route while disabled"
            birdc(ctls["flapping"], "enable flapping")
            view = wait_for(
                lambda: (v := routes(ctls["flapping"])) and attributes(v) == WANTED and v,
                20,
                f"flap {flap}: the VIPs announced again after the enable",
            )
            when = view[f"{VIP_A}/32"][0]
            assert when not in times, f"flap {flap}: the route of before the disable, not a new one"
            times.add(when)
            assert protocol(ctls["flapping"], "flapping").info.startswith("Established")
            time.sleep(FLAP_PAUSE)

        # the director's own report: flapping Established again, rejecting refused with BIRD's reason
        wait_for(lambda: d.sessions()["flapping"][0] == "Established", 15, "the director's flapping session back")
        sessions = wait_for(
            lambda: (s := d.sessions()) and "Received: Bad peer AS" in s["rejecting"][1] and s,
            15,
            "the director reporting the rejection",
        )
        assert sessions["good"] == ("Established", "")
        assert sessions["rejecting"][0] != "Established"
        stop.set()
        sampler.join(15)
        assert not sampler.is_alive(), "the sampler did not end"

        assert not watch.errors, watch.errors
        assert watch.samples >= 20, f"only {watch.samples} samples"
        # good never lost (nor got again) a VIP, its session never reset, no withdraw reached it
        assert watch.gaps == [], f"good's routes changed: {watch.gaps[:5]}"
        good_after = protocol(ctls["good"], "good")
        assert good_after.info.startswith("Established") and good_after.since == good_before.since
        assert (good_after.import_updates, good_after.import_withdraws) == (len(WANTED), 0)
        # the VIPs' routes in table 221 and their addresses on lo never changed
        assert watch.kernel == [], f"table 221 or lo changed: {watch.kernel[:5]}"
        assert kernel_view(ns) == (table, lo)
        # the rejecting router refused the director again and again, and never took its routes
        assert watch.rejecting == [], watch.rejecting[:5]
        assert rejections(rejecting_log) - refused_before >= 2, rejecting_log.read_text()
        refusing = protocol(ctls["rejecting"], "rejecting")
        assert refusing.state != "up" and "BGP Error: Bad peer AS" in refusing.info, refusing
        # nor did the service change a route, or see good's session change, through it all
        assert d.routes() == [
            {"event": "bgp.route", "vip": vip, "route": "announced", "reason": "web: 1/1 in service"}
            for vip in (VIP_A, VIP_B)
        ]
        good_states = [e["state"] for e in d.events if e["event"] == "bgp.session" and e["neighbor"] == "good"]
        assert good_states[-1] == "Established" and good_states.count("Established") == 1, good_states
        flapping_states = [e["state"] for e in d.events if e["event"] == "bgp.session" and e["neighbor"] == "flapping"]
        assert flapping_states.count("Established") >= 2, flapping_states  # the poll (1 s) sees some flaps

        d.send({"do": "stop"})
        wait_for(lambda: routes(ctls["good"]) == {}, 10, "the VIPs withdrawn from good at the stop")
    finally:
        stop.set()
        d.close()
