"""The namespace lab (`Lab`): the topology of `director.lab.topology.plan_lab` built in
network namespaces (`director.lab.netns`), its real servers' HTTP servers, and its teardown.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ha.rtnl import iproute

from .netns import (
    add_address,
    add_bridge,
    address_kwargs,
    call_in_netns,
    cleanup_netns,
    create_netns,
    del_address,
    exec_in_netns,
    get_sysctl,
    http_get,
    link_index,
    link_set,
    run_in_netns,
    set_sysctl,
    set_sysctls,
    tcp_connectable,
)
from .topology import LabPlan, Mode, Node, plan_lab, port_name

log = logging.getLogger("directord.lab")

#: Bond of the ``bond`` lab option (pyroute2 names of IFLA_BOND_* attributes):
#: mode 2 = balance-xor (BOND_MODE_XOR), xmit_hash_policy 1 = layer3+4
#: (BOND_XMIT_POLICY_LAYER34), both from include/uapi/linux/if_bonding.h;
#: miimon in milliseconds.
BOND_OPTIONS = {"bond_mode": 2, "bond_xmit_hash_policy": 1, "bond_miimon": 100}

#: Repository root (holds the ``director`` package), put on PYTHONPATH of lab processes.
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class _HttpdProc:
    proc: subprocess.Popen
    argv: list[str]
    log_path: Path
    normal: bool  # started without --hang/--status
    hung: bool = False  # hang mode switched on by signal


class Lab:
    """A namespace lab of a client, director(s) and real servers on one bridge.

    Use as a context manager::

        with Lab("t1", real_servers=3) as lab:
            lab.exec(lab.director, ["ipvsadm", "-A", "-t", f"{lab.vip}:80", "-s", "rr"])
            status, body = lab.get("/")          # client -> VIP:80

    ``build()`` first deletes leftovers named ``<prefix>-*`` (an earlier run
    that was killed), then creates the switch namespace ``<prefix>-sw`` with
    the bridge(s), one namespace per node (see :func:`plan_lab`), the VIP on
    ``dir1``'s ``eth0`` (``vip_on_director``), and starts
    ``python -m director.lab.httpd --name rsN --port <http_port>`` in every
    real server (``start_httpd``), waiting until each accepts connections
    (``ready_timeout`` seconds). ``close()`` (also on exceptions and
    KeyboardInterrupt) kills the lab's processes and deletes its namespaces;
    it is idempotent.

    Not thread-safe: drive one Lab from one thread at a time. Every method
    may be called from an asyncio event-loop thread (netlink work happens in
    worker threads) but blocks it for its duration.

    ``plan``: build this plan (of `plan_lab` or a routed topology such as
    `director.lab.ecmp.plan_ecmp`) instead of planning one from the shape
    arguments, which are then ignored; ``prefix`` must be the plan's.

    Raises (from ``build``): OSError / pyroute2.NetlinkError on kernel
    refusal (not root, missing module such as ``ipip`` for ``tun``),
    TimeoutError if a real server's httpd does not come up.
    """

    def __init__(
        self,
        prefix: str = "dlab",
        *,
        real_servers: int = 3,
        directors: int = 1,
        mode: Mode = "dr",
        subnet: str = "10.77.0.0/24",
        inside_subnet: str = "10.77.1.0/24",
        ipv6: bool = False,
        ha_link: bool = False,
        bond: bool = False,
        prepare_real_servers: bool = True,
        vip_on_director: bool = True,
        http_port: int = 80,
        start_httpd: bool = True,
        ready_timeout: float = 60.0,
        log_dir: str | os.PathLike | None = None,
        python: str | None = None,
        plan: LabPlan | None = None,
    ) -> None:
        self.plan = plan or plan_lab(
            prefix,
            real_servers=real_servers,
            directors=directors,
            mode=mode,
            subnet=subnet,
            inside_subnet=inside_subnet,
            ipv6=ipv6,
            ha_link=ha_link,
            bond=bond,
            prepare_real_servers=prepare_real_servers,
        )
        if self.plan.prefix != prefix:
            raise ValueError(f"the plan is of the prefix {self.plan.prefix!r}, not {prefix!r}")
        self.prefix = prefix
        self.mode: Mode = self.plan.mode
        self.http_port = http_port
        self.ready_timeout = ready_timeout
        self.python = python or sys.executable
        self._vip_on_director = vip_on_director
        self._start_httpd = start_httpd
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"{prefix}-lab-"))
        self._httpd: dict[str, _HttpdProc] = {}
        self._procs: list[subprocess.Popen] = []
        self._built = False

    # -- naming ----------------------------------------------------------------

    @property
    def client(self) -> str:
        """Namespace name of the client."""
        return self.ns("client")

    @property
    def director(self) -> str:
        """Namespace name of ``dir1``."""
        return self.ns("dir1")

    @property
    def directors(self) -> list[str]:
        """Namespace names of the directors, ``dir1`` first."""
        return [self.ns(r) for r in self.plan.directors]

    @property
    def real_servers(self) -> list[str]:
        """Roles of the real servers: ``["rs1", "rs2", ...]``."""
        return list(self.plan.real_servers)

    @property
    def switch(self) -> str:
        """Namespace name holding the bridge(s)."""
        return self.plan.switch_ns

    @property
    def vip(self) -> str:
        """The IPv4 VIP (front subnet ``.100``)."""
        return self.plan.vip

    @property
    def vip6(self) -> str | None:
        """The IPv6 VIP, or None without ``ipv6``."""
        return self.plan.vip6

    @property
    def dip(self) -> str:
        """``dir1``'s front address (DIP)."""
        return self.plan.addr["dir1"]

    def ns(self, role: str) -> str:
        """Namespace name of a role (``"client"``, ``"dir1"``, ``"rs2"``) or of a name already prefixed.

        Raises:
            KeyError: unknown role.
        """
        if role.startswith(self.prefix + "-"):
            return role
        if role == "sw":
            return self.plan.switch_ns
        return self.plan.node(role).ns

    def role(self, name: str) -> str:
        """The role of a namespace or role name (inverse of :meth:`ns`)."""
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + "-") else name

    def addr(self, role: str) -> str:
        """IPv4 address of a role (for NAT real servers: the inside address)."""
        return self.plan.addr[self.role(role)]

    def rip(self, rs: str) -> str:
        """The RIP of real server ``rs`` (``"rs1"``)."""
        return self.addr(rs)

    @property
    def rips(self) -> list[str]:
        """RIPs in real-server order."""
        return [self.addr(r) for r in self.plan.real_servers]

    # -- life cycle ------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> Lab:
        """Create everything (see the class doc); returns self."""
        plan = self.plan
        removed = cleanup_netns(self.prefix)
        if removed:
            log.info("removed leftover namespaces %s", removed)
        self._built = True
        self.log_dir.mkdir(parents=True, exist_ok=True)
        create_netns(plan.switch_ns)
        for br in plan.bridges:
            add_bridge(plan.switch_ns, br)
        for node in plan.nodes:
            create_netns(node.ns)
        # One worker thread per namespace for all of its netlink work.
        call_in_netns(plan.switch_ns, self._wire_switch)
        for node in plan.nodes:
            call_in_netns(node.ns, self._configure_node, node)
            if node.sysctls:
                set_sysctls(node.ns, node.sysctls)
        if self._vip_on_director:
            self.add_vip("dir1")
        if self._start_httpd:
            for rs in plan.real_servers:
                self.start_httpd(rs, wait=False)
            for rs in plan.real_servers:
                self.wait_httpd(rs)
        return self

    def _wire_switch(self) -> None:
        with iproute() as ipr:
            for a, b in self.plan.bridge_links:
                ipr.link("add", ifname=f"{a}-{b}", kind="veth", peer={"ifname": f"{b}-{a}"})
                for port, bridge in ((f"{a}-{b}", a), (f"{b}-{a}", b)):
                    idx = link_index(ipr, port)
                    ipr.link("set", index=idx, master=link_index(ipr, bridge))
                    ipr.link("set", index=idx, state="up")
            for node in self.plan.nodes:
                for ifname, bridge in node.links:
                    port = port_name(node.role, ifname)
                    ipr.link("add", ifname=port, kind="veth", peer={"ifname": ifname, "net_ns_fd": node.ns})
                    idx = link_index(ipr, port)
                    ipr.link("set", index=idx, master=link_index(ipr, bridge))
                    ipr.link("set", index=idx, state="up")

    def _configure_node(self, node: Node) -> None:
        with iproute() as ipr:
            if node.tunnel:
                # tunl0 appears in every namespace once the ipip module is loaded.
                idx = ipr.link_lookup(ifname="tunl0")
                if not idx:
                    raise FileNotFoundError(errno.ENODEV, "tunl0 missing (is the ipip module loaded?)", node.ns)
                ipr.link("set", index=idx[0], state="up")
            for bond, legs in node.bonds:
                ipr.link("add", ifname=bond, kind="bond", **BOND_OPTIONS)
                bidx = link_index(ipr, bond)
                for leg in legs:  # a slave must be down while it is enslaved
                    lidx = link_index(ipr, leg)
                    ipr.link("set", index=lidx, state="down")
                    ipr.link("set", index=lidx, master=bidx)
                ipr.link("set", index=bidx, state="up")
            for ifname, _bridge in node.links:
                ipr.link("set", index=link_index(ipr, ifname), state="up")
            for ifname, cidr in node.addresses:
                ipr.addr("add", index=link_index(ipr, ifname), **address_kwargs(cidr))
            for dst, gw in node.routes:
                fam_dst = "::/0" if dst == "default6" else ("0.0.0.0/0" if dst == "default" else dst)
                ipr.route("replace", dst=fam_dst, gateway=gw)

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces (idempotent, never raises)."""
        for rs in list(self._httpd):
            try:
                self.stop_httpd(rs, timeout=2.0)
            except Exception as e:  # keep tearing down
                log.warning("stopping httpd %s: %s", rs, e)
        for p in self._procs:
            _terminate(p, 2.0)
        self._procs.clear()
        if self._built:
            try:
                cleanup_netns(self.prefix)
            except Exception as e:
                log.warning("deleting lab namespaces: %s", e)
            self._built = False
        if self._own_log_dir:
            for f in self.log_dir.glob("*"):
                try:
                    f.unlink()
                except OSError:
                    pass
            try:
                self.log_dir.rmdir()
            except OSError:
                pass

    # -- addresses and links ---------------------------------------------------

    def add_vip(self, role: str = "dir1", ifname: str | None = None) -> None:
        """Put the VIP (and VIP6) on ``role``'s ``ifname`` (default: the service
        interface, see `LabPlan.service_if`) as /32 (/128); no-op if present."""
        ifname = ifname or self.plan.service_if
        add_address(self.ns(role), ifname, f"{self.vip}/32", exist_ok=True)
        if self.vip6:
            add_address(self.ns(role), ifname, f"{self.vip6}/128", exist_ok=True)

    def del_vip(self, role: str = "dir1", ifname: str | None = None) -> None:
        """Remove the VIP (and VIP6) from ``role``'s ``ifname`` (default: the service interface); no-op if absent."""
        ifname = ifname or self.plan.service_if
        del_address(self.ns(role), ifname, f"{self.vip}/32")
        if self.vip6:
            del_address(self.ns(role), ifname, f"{self.vip6}/128")

    def link_set(self, role: str, *, up: bool, ifname: str = "eth0") -> None:
        """Take a node's link up/down (a "cable pull" seen from the node)."""
        link_set(self.ns(role), ifname, up=up)

    def port_set(self, role: str, *, up: bool, ifname: str = "eth0") -> None:
        """Take the switch-side port of a node's link up/down (a switch port failure).

        The node's own interface stays administratively up but loses carrier
        (a veth reports its peer's state), and keeps its addresses.
        """
        link_set(self.plan.switch_ns, port_name(self.role(role), ifname), up=up)

    def sysctl(self, role: str, key: str, value: Any = None) -> str:
        """Read (``value`` None) or write a sysctl in a node; returns the value read/written."""
        if value is None:
            return get_sysctl(self.ns(role), key)
        set_sysctl(self.ns(role), key, value)
        return str(value)

    # -- processes ---------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + pp if pp else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def popen(self, role: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start a process in a node (``ip netns exec``); the lab stops it on close."""
        popen_kwargs.setdefault("env", self._env())
        p = run_in_netns(self.ns(role), argv, **popen_kwargs)
        self._procs.append(p)
        return p

    def exec(
        self,
        role: str,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 60.0,
    ) -> subprocess.CompletedProcess:
        """Run a short command in a node to completion (see :func:`exec_in_netns`)."""
        return exec_in_netns(self.ns(role), argv, input=input, check=check, timeout=timeout)

    def start_httpd(
        self,
        rs: str,
        *,
        hang: bool = False,
        status: int | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> subprocess.Popen:
        """(Re)start the HTTP server of real server ``rs`` (``"rs1"``).

        A running one is stopped first. ``hang``: accept and never answer;
        ``status``: answer every request with that HTTP status. With ``wait``
        block until it accepts connections (``ready_timeout`` seconds).
        Its output goes to ``<log_dir>/<rs>-httpd.log``.

        Raises:
            TimeoutError: not accepting connections in time.
        """
        rs = self.role(rs)
        if rs in self._httpd:
            self.stop_httpd(rs)
        port = port or self.http_port
        argv = [self.python, "-m", "director.lab.httpd", "--name", rs, "--port", str(port)]
        if hang:
            argv.append("--hang")
        if status is not None:
            argv += ["--status", str(status)]
        log_path = self.log_dir / f"{rs}-httpd.log"
        with open(log_path, "ab") as logf:
            proc = run_in_netns(
                self.ns(rs), argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=self._env()
            )
        self._httpd[rs] = _HttpdProc(proc, argv, log_path, normal=not hang and status is None)
        if wait:
            self.wait_httpd(rs, port=port)
        return proc

    def wait_httpd(self, rs: str, *, port: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``rs``'s HTTP server accepts TCP connections on its RIP.

        Raises:
            TimeoutError: not within ``timeout`` (default ``ready_timeout``) seconds.
            RuntimeError: the server process exited (its log is in the message).
        """
        rs = self.role(rs)
        port = port or self.http_port
        h = self._httpd.get(rs)
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            if h is not None and h.proc.poll() is not None:
                raise RuntimeError(f"httpd of {rs} exited with {h.proc.returncode}: {self._tail(h.log_path)}")
            if tcp_connectable(self.ns(rs), self.addr(rs), port, timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"httpd of {rs} not accepting on {self.addr(rs)}:{port}: {self._tail(h.log_path) if h else ''}"
                )
            time.sleep(0.1)

    @staticmethod
    def _tail(path: Path, n: int = 2000) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop_httpd(self, rs: str, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop ``rs``'s HTTP server: SIGTERM (SIGKILL with ``kill``, or after ``timeout`` seconds)."""
        rs = self.role(rs)
        h = self._httpd.pop(rs, None)
        if h is None:
            return
        if kill:
            h.proc.kill()
            h.proc.wait()
        else:
            _terminate(h.proc, timeout)

    def httpd(self, rs: str) -> subprocess.Popen | None:
        """The running HTTP server process of ``rs``, or None."""
        h = self._httpd.get(self.role(rs))
        return h.proc if h else None

    def set_hang(self, rs: str, hang: bool = True) -> None:
        """Switch ``rs``'s running HTTP server into (or out of) hang mode (SIGUSR1 / SIGUSR2).

        ``ip netns exec`` execs the command in place, so the Popen's pid is the server's.

        Raises:
            RuntimeError: no server running for ``rs``.
        """
        h = self._httpd.get(self.role(rs))
        if h is None or h.proc.poll() is not None:
            raise RuntimeError(f"no httpd running for {rs}")
        h.proc.send_signal(signal.SIGUSR1 if hang else signal.SIGUSR2)
        h.hung = hang

    def reset_real_servers(self) -> None:
        """Bring every real server back to normal: switch ports and links up, HTTP servers
        running, answering 200 and not hanging (restarted where needed).

        For fixtures shared by several tests. Waits for restarted servers (``ready_timeout``).
        """
        restarted = []
        for rs in self.plan.real_servers:
            node = self.plan.node(rs)
            for ifname, _bridge in node.links:
                link_set(self.plan.switch_ns, port_name(rs, ifname), up=True)
                link_set(node.ns, ifname, up=True)
            h = self._httpd.get(rs)
            if h is None or h.proc.poll() is not None or not h.normal:
                self.start_httpd(rs, wait=False)
                restarted.append(rs)
            elif h.hung:
                self.set_hang(rs, False)
        for rs in restarted:
            self.wait_httpd(rs)

    def get(
        self,
        path: str = "/",
        *,
        addr: str | None = None,
        port: int | None = None,
        timeout: float = 1.0,
        role: str = "client",
    ) -> tuple[int, str]:
        """HTTP GET from ``role`` (default the client) to ``addr`` (default the VIP); see :func:`http_get`.

        ``path`` may also be a whole URL (``"http://10.77.0.21:80/x"``), which then wins over ``addr``/``port``.
        """
        if "://" in path:
            return http_get(self.ns(role), path, port or self.http_port, "/", timeout)
        return http_get(self.ns(role), addr or self.vip, port or self.http_port, path, timeout)


def _terminate(p: subprocess.Popen, timeout: float) -> None:
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass
