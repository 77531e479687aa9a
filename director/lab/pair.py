"""The HA pair lab behind `directord lab up|down|status|drill`.

Topology (see `director.lab.topology.plan_lab` with ``directors=2, ha_link=True``):
a client, two directors ``dir1``/``dir2`` and N real servers on the service
bridge ``br0``; a separate heartbeat bridge ``hb0`` joins the directors'
``eth1`` (HA medium ``bcast eth1``); with ``bond`` each director's service
uplink is ``bond0`` (balance-xor, layer3+4) over two legs on the leaf
bridges ``leaf1``/``leaf2``, both joined to ``br0``. Real servers serve HTTP
with a body naming them (`director.lab.httpd`) and are prepared for the
forwarding method with ``directord realserver prep`` when that command
exists, else by the lab's own preparation (the same settings, from the plan).

Both directors run ``directord run`` with the configuration of
`pair_config` (the VIP, plus for NAT the real servers' floating gateway, in
one resource group owned by dir1; auto_failback on). The lab persists
between ``lab up`` and ``lab down``: its options live in the state file
``/run/directord-lab/<prefix>.json`` and its files (configurations, authkeys,
HA state, logs) in ``/run/directord-lab/<prefix>/``. Processes are found
again by namespace and command line, so a later command (``status``,
``drill``, ``down``) needs nothing else.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ha.durable import write_file_atomic
from ha.rtnl import iproute

from ..control import request
from .drive import parse_ipvsadm_list
from .netns import (
    call_in_netns,
    cleanup_netns,
    http_get,
    link_set,
    list_netns,
    netns_exists,
    pids_in_netns,
    socket_in_netns,
)
from .scenarios import (
    DEADTIME,
    DIRECTORS,
    INITDEAD,
    KEEPALIVE,
    service_yaml,
    table_shape,
)
from .site import Lab
from .topology import LabPlan, Mode, port_name

STATE_ROOT = Path("/run/directord-lab")
IFF_UP = 0x1  # include/uapi/linux/if.h
IFF_LOWER_UP = 0x10000  # carrier (RFC 2863 operational state "up" below the interface)
FORWARDING = {"dr": "dr", "nat": "nat", "tun": "tun"}
#: Port of a director's metrics listener on 127.0.0.1 inside its own namespace, when its
#: configuration has ``global.http`` (`pair_config` leaves it off for now).
METRICS_PORT = 9199


@dataclass(frozen=True)
class PairOptions:
    """How a pair lab is built: namespace ``prefix``, ``real_servers`` count,
    forwarding ``mode`` (``dr``/``nat``/``tun``), ``bond`` uplinks, HTTP ``port``."""

    prefix: str = "dlab"
    real_servers: int = 3
    mode: Mode = "dr"
    bond: bool = False
    port: int = 80


def state_file(prefix: str) -> Path:
    """``/run/directord-lab/<prefix>.json``."""
    return STATE_ROOT / f"{prefix}.json"


def read_state(prefix: str) -> dict[str, Any]:
    """The state file of the lab ``prefix`` (`DaemonLab.save_state`); ``"topology"`` is
    ``"pair"`` in a file written before there were other topologies.

    Raises:
        FileNotFoundError: no state file; ValueError: not a JSON object.
    """
    doc = json.loads(state_file(prefix).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{state_file(prefix)}: not a JSON object")
    doc.setdefault("topology", "pair")
    return doc


def workdir_of(prefix: str) -> Path:
    """``/run/directord-lab/<prefix>/``: configurations, authkeys, HA state and logs of the lab."""
    return STATE_ROOT / prefix


def ipvs_problem() -> str | None:
    """None when IPVS can be used here (root, ``ip_vs`` loaded or loadable), else why not."""
    if os.geteuid() != 0:
        return "the lab needs root"
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    if not os.path.exists("/proc/net/ip_vs"):
        return f"this kernel ({os.uname().release}) has no ip_vs"
    return None


def pair_config(plan: LabPlan, node: str, *, authkeys: str, state_dir: str, port: int = 80) -> str:
    """The ``directord run`` configuration of director ``node`` (pure; YAML text).

    One virtual service ``web`` on VIP:port (rr, the lab's forwarding method,
    HTTP check of ``/healthz`` every `CHECK_INTERVAL` s, rise/fall
    `CHECK_RISE`/`CHECK_FALL`) over every real server, and an ``ha`` section:
    nodes dir1/dir2, medium ``bcast`` on the heartbeat interface, directord's
    fast timers (`KEEPALIVE`, `DEADTIME`, `INITDEAD` seconds), auto_failback,
    one resource group owned by dir1: ``VIP/32/<service interface>`` (and for
    NAT the real servers' gateway ``<nat_gateway>/<len>/<inside interface>``).

    Raises:
        ValueError: the plan has no heartbeat interface or ``node`` is not a director.
    """
    if plan.heartbeat_if is None:
        raise ValueError("the plan has no heartbeat link (plan_lab(..., ha_link=True))")
    if node not in plan.directors:
        raise ValueError(f"{node!r} is not a director of the plan")
    addresses = [f"{plan.vip}/32/{plan.service_if}"]
    if plan.mode == "nat" and plan.nat_gateway and plan.inside_if:
        inside_len = next(c.split("/")[1] for i, c in plan.node("dir1").addresses if i == plan.inside_if)
        addresses.append(f"{plan.nat_gateway}/{inside_len}/{plan.inside_if}")
    return f"""\
# directord configuration of {node} in the lab {plan.prefix} (generated by `directord lab up`)
global:
  reconcile_interval: 5
  state_dir: {state_dir}
{service_yaml(plan.vip, port, [plan.addr[r] for r in plan.real_servers], forwarding=FORWARDING[plan.mode])}\
ha:
  node: {node}
  nodes: [{", ".join(plan.directors)}]
  media: [bcast {plan.heartbeat_if}]
  authkeys: {authkeys}
  keepalive: {KEEPALIVE:g}
  deadtime: {DEADTIME:g}
  initdead: {INITDEAD:g}
  auto_failback: true
  state_dir: {state_dir}
  resources:
    - owner: {plan.directors[0]}
      addresses: [{", ".join(addresses)}]
"""


def realserver_prep_available() -> bool:
    """True when ``directord realserver prep`` exists: the `director.realserver` package offers
    the command's entry point, `cmd_prep`."""
    try:
        from director.realserver import cmd_prep  # noqa: F401
    except ImportError:
        return False
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _is_daemon(argv: list[str]) -> bool:
    return "director.cli" in argv and "run" in argv


def _is_httpd(argv: list[str]) -> bool:
    return "director.lab.httpd" in argv


SIOCGIFCONF, SIOCGIFFLAGS = 0x8912, 0x8913  # include/uapi/linux/sockios.h
IFF_RUNNING = 0x40  # operational state up (carrier), include/uapi/linux/if.h
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: 16-byte name + 24-byte union


def parse_ifconf(buf: bytes) -> list[tuple[str, str]]:
    """``(label, IPv4 address)`` of each ``struct ifreq`` in a ``SIOCGIFCONF`` answer
    (one entry per IPv4 address, secondary addresses included; the label is the
    interface name unless the address was given another one)."""
    out = []
    for i in range(0, len(buf) - _IFREQ_SIZE + 1, _IFREQ_SIZE):
        name = buf[i : i + 16].split(b"\0", 1)[0].decode(errors="replace")
        family = int.from_bytes(buf[i + 16 : i + 18], "little")
        if family == socket.AF_INET:
            out.append((name, socket.inet_ntoa(buf[i + 20 : i + 24])))
    return out


class HolderProbe:
    """Cheap, repeatable "who holds the VIP" reads: one UDP socket per director, made in its
    namespace once, queried with ``SIOCGIFCONF`` (IPv4 addresses) and ``SIOCGIFFLAGS``
    (``IFF_UP`` and ``IFF_RUNNING``) ioctls, which act on the socket's namespace. No thread,
    process or netlink session per read (the emulated VM is slow at all three). Close it."""

    def __init__(self, pair: PairLab) -> None:
        self.vip, self.ifname = pair.vip, pair.plan.service_if
        self.socks = {node: socket_in_netns(pair.lab.ns(node), socket.AF_INET, socket.SOCK_DGRAM) for node in DIRECTORS}

    def close(self) -> None:
        """Close the sockets."""
        for s in self.socks.values():
            s.close()

    def holds(self, node: str) -> bool:
        """The VIP is on ``node``'s service interface and that interface is up with carrier."""
        s = self.socks[node]
        size = 8192
        buf = array.array("B", bytes(size))
        res = fcntl.ioctl(s.fileno(), SIOCGIFCONF, struct.pack("iL", size, buf.buffer_info()[0]))
        n = struct.unpack("iL", res)[0]
        entries = parse_ifconf(buf.tobytes()[:n])
        if not any(
            ip == self.vip and (label == self.ifname or label.startswith(self.ifname + ":")) for label, ip in entries
        ):
            return False
        try:
            req = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH", self.ifname.encode(), 0) + bytes(22))
        except OSError:
            return False
        flags = struct.unpack("H", req[16:18])[0]
        return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)

    def holders(self) -> tuple[str, ...]:
        """Directors holding the VIP now (see `holds`)."""
        return tuple(node for node in DIRECTORS if self.holds(node))


def _iface_state(ifname: str, vip: str) -> tuple[bool, bool]:
    """In the calling thread's namespace: (interface up with carrier, VIP configured on it)."""
    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return False, False
        flags = ipr.get_links(idx[0])[0]["flags"]
        up = bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)
        has = any(a.get_attr("IFA_ADDRESS") == vip for a in ipr.get_addr(index=idx[0]))
        return up, has


class DaemonLab:
    """A namespace lab whose directors run ``directord run``, kept between commands.

    The common part of `PairLab` and `director.lab.ecmp_site.EcmpLab`: each director's files
    (configuration, control socket, log) under ``<workdir>/<director>/``, its daemon found
    again by namespace and command line, the real servers prepared with ``directord realserver
    prep``, the state file (`state_file`) that lets a later command (``status``, ``drill``,
    ``down``) find the lab, and the teardown. Every method blocks; not thread-safe.

    A subclass sets `TOPOLOGY` (the state file's ``topology``) and `OPTIONS` (the dataclass
    of its build options, stored in the state file and given back to its constructor).

    Args:
        options: the build options (a dataclass with ``prefix``).
        lab: the namespaces (not built yet).
        workdir: where configurations/logs go.
        use_prep_cmd: prepare the real servers with ``directord realserver prep``.
    """

    TOPOLOGY = ""
    OPTIONS: type = object

    def __init__(self, options: Any, lab: Lab, workdir: Path, *, use_prep_cmd: bool) -> None:
        self.options = options
        self.lab = lab
        self.plan = lab.plan
        self.workdir = workdir
        self.use_prep_cmd = use_prep_cmd

    # -- names ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The namespace prefix."""
        return str(self.options.prefix)

    @property
    def vip(self) -> str:
        """The VIP."""
        return self.plan.vip

    @property
    def directors(self) -> tuple[str, ...]:
        """The directors' roles: ``("dir1", "dir2", ...)``."""
        return self.plan.directors

    def config_path(self, node: str) -> Path:
        """``<workdir>/<node>/directord.yaml``."""
        return self.workdir / node / "directord.yaml"

    def log_path(self, node: str) -> Path:
        """``<workdir>/<node>/directord.log`` (the daemon's stdout and stderr)."""
        return self.workdir / node / "directord.log"

    def socket_path(self, node: str) -> Path:
        """The daemon's control socket."""
        return self.workdir / node / "directord.sock"

    # -- state file and files ----------------------------------------------------------

    def save_state(self) -> None:
        """Write the state file (topology, options, workdir, build time)."""
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        doc = {
            "topology": self.TOPOLOGY,
            "options": asdict(self.options),
            "workdir": str(self.workdir),
            "created": time.time(),
            "realserver_prep": self.use_prep_cmd,
        }
        write_file_atomic(state_file(self.prefix), (json.dumps(doc, indent=2) + "\n").encode(), 0o644)

    @classmethod
    def attach(cls, prefix: str) -> Any:
        """The lab ``lab up`` built with this prefix.

        Raises:
            FileNotFoundError: no state file for ``prefix``.
            ValueError: the state file is of another topology.
        """
        doc = read_state(prefix)
        if doc.get("topology", "pair") != cls.TOPOLOGY:
            raise ValueError(f"the lab {prefix} is a {doc.get('topology', 'pair')} lab, not {cls.TOPOLOGY}")
        return cls(cls.OPTIONS(**doc["options"]), doc["workdir"])

    @staticmethod
    def exists(prefix: str) -> bool:
        """True when a state file for ``prefix`` exists."""
        return state_file(prefix).exists()

    def _remove_files(self) -> None:
        state_file(self.prefix).unlink(missing_ok=True)
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def down(self) -> list[str]:
        """Stop everything and delete the namespaces, the state file and the work folder.

        Daemons get SIGTERM first (they release what they hold), for up to 20 seconds, then
        whatever is left in the namespaces is killed. Idempotent, never raises. Returns the
        namespaces deleted.
        """
        for node in self.directors:
            try:
                self.signal_daemon(node, signal.SIGTERM)
            except Exception:
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(self.daemon_pid(n) for n in self.directors):
            time.sleep(0.2)
        gone = []
        try:
            gone = [n for n in list_netns() if n.startswith(self.prefix + "-")]
            self.lab.close()
        except Exception:
            pass
        gone = sorted(set(gone + cleanup_netns(self.prefix)))
        self._remove_files()
        return gone

    # -- real servers ----------------------------------------------------------------------

    def prep_real_servers(self) -> None:
        """Run ``directord realserver prep --vip VIP --mode MODE`` in every real server (all at
        once, each up to 300 seconds; its state file in the work folder).

        Raises:
            RuntimeError: a prep exited non-zero (its output is in the message).
        """

        def argv(rs: str) -> list[str]:
            return [
                sys.executable,
                "-m",
                "director.cli",
                "realserver",
                "prep",
                "--vip",
                self.vip,
                "--mode",
                self.plan.mode,
                "--state-file",
                str(self.workdir / f"{rs}-realserver.json"),
            ]

        procs = {
            rs: self.lab.popen(rs, argv(rs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for rs in self.plan.real_servers
        }
        for rs, p in procs.items():
            out, _ = p.communicate(timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"directord realserver prep in {rs} exited {p.returncode}: {out[-2000:]}")

    # -- processes -------------------------------------------------------------------------

    def _find(self, role: str, match) -> int | None:
        ns = self.lab.ns(role)
        if not netns_exists(ns):
            return None
        for pid in sorted(pids_in_netns(ns)):
            if match(_cmdline(pid)):
                return pid
        return None

    def daemon_pid(self, node: str) -> int | None:
        """PID of ``directord run`` in ``node``'s namespace, None when it does not run."""
        return self._find(node, _is_daemon)

    def httpd_pid(self, rs: str) -> int | None:
        """PID of the HTTP server in real server ``rs``, None when it does not run."""
        return self._find(rs, _is_httpd)

    def start_daemon(self, node: str) -> int:
        """Start ``directord run --log-format json`` in ``node`` (own session; output appended to
        `log_path`: the drill reads events from it); returns its pid."""
        with open(self.log_path(node), "ab") as logf:
            p = self.lab.popen(
                node,
                [
                    sys.executable,
                    "-m",
                    "director.cli",
                    "run",
                    "-c",
                    str(self.config_path(node)),
                    "--control-socket",
                    str(self.socket_path(node)),
                    "--log-format",
                    "json",
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return p.pid

    def signal_daemon(self, node: str, sig: int) -> int | None:
        """Send ``sig`` to ``node``'s daemon; returns its pid (None: not running)."""
        pid = self.daemon_pid(node)
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return None
        return pid

    def kill_httpd(self, rs: str) -> int | None:
        """SIGKILL real server ``rs``'s HTTP server; returns its pid (None: not running)."""
        pid = self.httpd_pid(rs)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
        return pid

    # -- links ---------------------------------------------------------------------------------

    def node_links(self, role: str, *, up: bool) -> None:
        """All of a node's own links up/down (a node failure: its cables pulled)."""
        for ifname, _bridge in self.plan.node(role).links:
            link_set(self.lab.ns(role), ifname, up=up)

    # -- observation -------------------------------------------------------------------------

    def log_tail(self, node: str, chars: int = 2500) -> str:
        """The end of ``node``'s daemon log."""
        try:
            return self.log_path(node).read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def namespaces(self) -> dict[str, list[tuple[int, str]]]:
        """The lab's namespaces now, each with its processes: ``{name: [(pid, command line)]}``."""
        return {
            name: [(pid, " ".join(_cmdline(pid))) for pid in sorted(pids_in_netns(name))]
            for name in list_netns()
            if name.startswith(self.prefix + "-")
        }

    def daemon_status(self, node: str) -> Any:
        """``directord status`` of ``node``'s daemon over its control socket (a dict), or a
        sentence saying why there is none (5 seconds at the most)."""
        if not self.socket_path(node).exists():
            return "no control socket"
        try:
            return request(str(self.socket_path(node)), "status", timeout=5.0).get("status") or {}
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    def status(self) -> dict[str, Any]:
        """What exists now: ``{"prefix", "topology", "options", "workdir", "vip", "namespaces":
        {name: [(pid, command line)]}, "daemons": {node: pid or None}, "daemon_status": {node:
        `daemon_status`}, "ipvs": {node: ipvsadm -Ln or its error}}``."""
        doc: dict[str, Any] = {
            "prefix": self.prefix,
            "topology": self.TOPOLOGY,
            "options": asdict(self.options),
            "workdir": str(self.workdir),
            "vip": self.vip,
            "namespaces": self.namespaces(),
            "daemons": {},
            "daemon_status": {},
            "ipvs": {},
        }
        for node in self.directors:
            doc["daemons"][node] = self.daemon_pid(node)
            if not netns_exists(self.lab.ns(node)):
                continue
            r = self.lab.exec(node, ["ipvsadm", "-Ln"], check=False)
            doc["ipvs"][node] = r.stdout if r.returncode == 0 else r.stderr.strip()
            doc["daemon_status"][node] = self.daemon_status(node)
        return doc


class PairLab(DaemonLab):
    """A two-director HA lab (see the module doc). Build with `up`, find again with `attach`,
    remove with `down`. Every method blocks; not thread-safe except `holders`, which the drill's
    sampler calls from its own thread.

    Args:
        options: the build options.
        workdir: where configurations/logs go (default `workdir_of`).
    """

    TOPOLOGY = "pair"
    OPTIONS = PairOptions

    def __init__(self, options: PairOptions, workdir: str | os.PathLike | None = None) -> None:
        wd = Path(workdir) if workdir else workdir_of(options.prefix)
        use_prep_cmd = options.mode in ("dr", "tun") and realserver_prep_available()
        lab = Lab(
            options.prefix,
            real_servers=options.real_servers,
            directors=2,
            mode=options.mode,
            ha_link=True,
            bond=options.bond,
            prepare_real_servers=not use_prep_cmd,
            vip_on_director=False,
            http_port=options.port,
            log_dir=wd / "logs",
            ready_timeout=120.0,
        )
        super().__init__(options, lab, wd, use_prep_cmd=use_prep_cmd)

    def config_text(self, node: str) -> str:
        """The generated configuration of ``node`` (see `pair_config`)."""
        return pair_config(
            self.plan,
            node,
            authkeys=str(self.workdir / "authkeys"),
            state_dir=str(self.workdir / node / "state"),
            port=self.options.port,
        )

    # -- life cycle ----------------------------------------------------------------------

    def up(self, *, wait: bool = True, timeout: float = 300.0) -> PairLab:
        """Build the namespaces, prepare and start the real servers, write the configurations,
        start both daemons and (with ``wait``) wait until `settled` (``timeout`` seconds).

        Leftovers of the same prefix are removed first. On any error everything is torn down.

        Raises:
            TimeoutError: not settled in time; RuntimeError: a daemon exited;
            OSError / pyroute2.NetlinkError: the kernel refused (not root, no bonding/ipip).
        """
        self._remove_files()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.lab.build()
            if self.use_prep_cmd:
                self.prep_real_servers()
            keys = self.workdir / "authkeys"
            # 0600 from the start: the key is never readable by others, not even briefly
            write_file_atomic(keys, ("auth 1\n1 sha1 " + os.urandom(12).hex() + "\n").encode(), 0o600)
            for node in DIRECTORS:
                (self.workdir / node / "state").mkdir(parents=True, exist_ok=True)
                write_file_atomic(self.config_path(node), self.config_text(node).encode(), 0o644)
                # reschedule DR connections that reuse a client port (net/netfilter/ipvs: conn_reuse_mode)
                self.lab.sysctl(node, "net.ipv4.vs.conn_reuse_mode", 3)
            for node in DIRECTORS:
                self.start_daemon(node)
            self.save_state()
            if wait:
                self.wait_settled(timeout)
        except BaseException:
            self.down()
            raise
        return self

    # -- links ---------------------------------------------------------------------------------

    def heartbeat_ports(self, *, up: bool) -> None:
        """The heartbeat bridge's ports (switch side of each director's ``eth1``) up/down."""
        assert self.plan.heartbeat_if
        for node in DIRECTORS:
            self.lab.port_set(node, up=up, ifname=self.plan.heartbeat_if)

    def restore(self, *, timeout: float = 300.0) -> None:
        """Undo any drill's fault: every link and switch port up, both daemons and every HTTP
        server running, then wait until `settled` (``timeout`` seconds).

        A daemon still stopping when this starts (a drill that sent SIGTERM ends as soon as the
        peer serves; the daemon then stops its checker process and exits) is started again once
        it has exited, while waiting.

        Raises:
            TimeoutError: not settled within ``timeout`` seconds (the daemons' log tails are in the message).
        """
        for node in self.plan.nodes:
            for ifname, _bridge in node.links:
                link_set(self.plan.switch_ns, port_name(node.role, ifname), up=True)
                link_set(node.ns, ifname, up=True)
        for rs in self.plan.real_servers:
            if self.httpd_pid(rs) is None:
                self.lab.start_httpd(rs, wait=False)
        start = time.monotonic()
        started: dict[str, float] = {}
        while True:
            for node in DIRECTORS:
                # a daemon just started may not show yet: give it a minute before starting another
                if self.daemon_pid(node) is None and time.monotonic() - started.get(node, -1e9) > 60.0:
                    self.start_daemon(node)
                    started[node] = time.monotonic()
            if self.settled():
                return
            if time.monotonic() - start > timeout:
                raise self._not_settled(timeout)
            time.sleep(0.5)

    # -- observation -------------------------------------------------------------------------

    def holders(self) -> tuple[str, ...]:
        """Directors holding the VIP on the network now: VIP on the service interface and that
        interface up with carrier (read in each director's namespace)."""
        held = []
        for node in DIRECTORS:
            try:
                up, has = call_in_netns(self.lab.ns(node), _iface_state, self.plan.service_if, self.vip)
            except OSError:
                continue
            if up and has:
                held.append(node)
        return tuple(held)

    def ipvs_table(self, node: str) -> dict[str, dict]:
        """``ipvsadm -Ln`` of ``node`` parsed (`director.lab.drive.parse_ipvsadm_list`); {} on error."""
        r = self.lab.exec(node, ["ipvsadm", "-Ln"], check=False)
        return parse_ipvsadm_list(r.stdout) if r.returncode == 0 else {}

    def tables(self) -> dict[str, dict]:
        """Each director's table reduced by `director.lab.scenarios.table_shape`."""
        return {node: table_shape(self.ipvs_table(node)) for node in DIRECTORS}

    def settled(self) -> bool:
        """dir1 alone holds the VIP, both daemons run, and both tables list every real server
        with a non-zero weight."""
        if self.holders() != ("dir1",) or not all(self.daemon_pid(n) for n in DIRECTORS):
            return False
        tables = self.tables()
        for node in DIRECTORS:
            dests = [d for svc in tables[node].values() for d in svc.values()]
            if len(dests) != len(self.plan.real_servers) or any(w == 0 for _fwd, w in dests):
                return False
        return True

    def wait_settled(self, timeout: float = 300.0) -> float:
        """Wait until `settled`; returns the seconds waited.

        Raises:
            TimeoutError: not within ``timeout`` seconds (the daemons' log tails are in the message).
        """
        start = time.monotonic()
        while not self.settled():
            if time.monotonic() - start > timeout:
                raise self._not_settled(timeout)
            time.sleep(0.5)
        return time.monotonic() - start

    def _not_settled(self, timeout: float) -> TimeoutError:
        return TimeoutError(
            f"the pair did not settle in {timeout:.0f} s (holders {self.holders()}):\n"
            + "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in DIRECTORS)
        )

    def metrics(self, node: str, timeout: float = 30.0) -> dict[str, list[tuple[dict[str, str], float]]]:
        """One scrape of ``node``'s ``/metrics`` (from inside its namespace; its configuration must
        have ``global.http`` on `METRICS_PORT`), parsed with
        prometheus-client's parser: ``{sample name: [(labels, value), ...]}``.

        Raises:
            OSError, TimeoutError: no answer; ValueError: not a 200 answer or not the text format.
        """
        # imported here: only the drills that read metrics need the parser
        from prometheus_client.parser import text_string_to_metric_families

        status, body = http_get(self.lab.ns(node), "127.0.0.1", METRICS_PORT, "/metrics", timeout=timeout)
        if status != 200:
            raise ValueError(f"{node} /metrics answered {status}: {body[:200]!r}")
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return samples

    def status(self) -> dict[str, Any]:
        """What exists now: `DaemonLab.status` with ``"holders"`` (directors holding the VIP) and
        ``"ha": {node: the daemon's HA status, or why there is none}``."""
        doc = super().status()
        doc["holders"] = list(self.holders()) if doc["namespaces"] else []
        doc["ha"] = {n: s.get("ha") if isinstance(s, dict) else s for n, s in doc.pop("daemon_status").items()}
        return doc


def namespace_lines(namespaces: dict[str, list[tuple[int, str]]]) -> list[str]:
    """Status lines of `DaemonLab.namespaces`: a heading, then each namespace with its
    processes (command lines cut at 90 characters)."""
    lines = ["namespaces and processes:"]
    for name, procs in namespaces.items():
        lines.append(f"  {name}: " + ("; ".join(f"{pid} {cmd[:90]}" for pid, cmd in procs) or "-"))
    return lines


def status_head(doc: dict[str, Any], shape: str, up_command: str) -> list[str]:
    """The first lines of a `DaemonLab.status` text: the lab, its ``shape``, VIP and files,
    and when no namespace exists, a line saying so and naming ``up_command``."""
    lines = [f"lab {doc['prefix']}: {shape}; VIP {doc['vip']}; files in {doc['workdir']}"]
    if not doc["namespaces"]:
        lines.append(f"no namespaces exist (run `{up_command}`)")
    return lines


def render_status(doc: dict[str, Any]) -> str:
    """Text of `PairLab.status` for ``directord lab status``."""
    o = doc["options"]
    shape = f"{o['mode']} forwarding, {o['real_servers']} real servers{', bonded uplinks' if o['bond'] else ''}"
    lines = status_head(doc, shape, "directord lab up")
    if not doc["namespaces"]:
        return "\n".join(lines)
    lines.append("VIP held by: " + (" and ".join(doc["holders"]) or "nobody"))
    lines += namespace_lines(doc["namespaces"])
    for node in DIRECTORS:
        ha = doc["ha"].get(node)
        if isinstance(ha, dict):
            peers = ", ".join(f"{p.get('node')} {p.get('status')}" for p in ha.get("peers", []))
            ha_text = f"HA state {ha.get('state')}, peers: {peers or '-'}"
        else:
            ha_text = f"HA: {ha}"
        lines.append(f"{node}: daemon pid {doc['daemons'].get(node) or 'not running'}; {ha_text}")
        for line in str(doc["ipvs"].get(node, "")).splitlines():
            lines.append(f"    {line}")
    return "\n".join(lines)
