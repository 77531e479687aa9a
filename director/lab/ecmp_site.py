"""The routed lab of active-active directors behind `directord lab up --topology ecmp`.

`EcmpLab` builds the plan of `director.lab.ecmp.plan_ecmp` in namespaces
(`director.lab.site.Lab`), starts the router's BIRD (``bird -f`` in the router's namespace,
its configuration, control socket and log in ``<workdir>/router/``), prepares the real
servers (``directord realserver prep`` when it exists) and their HTTP servers, writes each
director's configuration (`director.lab.ecmp.director_config`) and starts ``directord run``
in every director. Like the pair lab (`director.lab.pair.DaemonLab`) it persists between
``lab up`` and ``lab down`` in the state file ``/run/directord-lab/<prefix>.json``.

What a drill drives: `DaemonLab.start_daemon`, `DaemonLab.signal_daemon` (stop, kill),
`DaemonLab.node_links` (a node failure), `EcmpLab.client_get` (a request through the VIP
from the client), and what it observes: `EcmpLab.bgp_sessions` (the router's sessions),
`EcmpLab.vip_next_hops` (the directors the router's kernel spreads the VIP over).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ha.durable import write_file_atomic

from .ecmp import EcmpPlan, director_config, plan_ecmp, router_bird_conf
from .netns import exec_in_netns, http_get, netns_exists, wait_until
from .pair import DaemonLab, namespace_lines, realserver_prep_available, status_head, workdir_of
from .site import Lab

#: BIRD's binaries (Debian package bird2).
BIRD, BIRDC = "/usr/sbin/bird", "/usr/sbin/birdc"
#: Seconds a ``birdc`` or ``ip`` command of `status` may take.
COMMAND_TIMEOUT = 10.0
#: Longest output of a ``birdc``/``ip`` command kept in a status (characters).
MAX_OUTPUT = 20000


@dataclass(frozen=True)
class EcmpOptions:
    """How a routed lab is built: namespace ``prefix``, ``directors`` (2..8), ``real_servers``
    count, HTTP ``port``, the virtual service's ``scheduler`` (``mh`` or ``wlc``)."""

    prefix: str = "dlab"
    directors: int = 3
    real_servers: int = 3
    port: int = 80
    scheduler: str = "mh"


def parse_protocols(text: str) -> list[dict[str, str]]:
    """The rows of ``birdc show protocols``: ``[{"name", "proto", "table", "state", "since",
    "info"}]`` (``info`` may be empty; BIRD 2 prints ``Name Proto Table State Since Info``
    after a ``BIRD ... ready.`` banner). Lines that are not rows are skipped."""
    rows = []
    for line in text.splitlines()[:1000]:
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[0] in ("BIRD", "Name") or parts[3] not in ("up", "down", "start", "stop", "flush"):
            continue
        rows.append(
            {
                "name": parts[0],
                "proto": parts[1],
                "table": parts[2],
                "state": parts[3],
                "since": parts[4],
                "info": parts[5].strip() if len(parts) > 5 else "",
            }
        )
    return rows


_VIA = re.compile(r"\bvia (?:inet )?([0-9.]+)")


def parse_next_hops(text: str) -> list[str]:
    """The gateways of ``ip route show PREFIX`` output, in order: one for a plain route,
    one per ``nexthop via ...`` of a multipath route, none for a device route."""
    return _VIA.findall(text[:MAX_OUTPUT])


class EcmpLab(DaemonLab):
    """The routed lab (see the module doc). Build with `up`, find again with `attach`, remove
    with `down`. Every method blocks; not thread-safe.

    Args:
        options: the build options.
        workdir: where configurations/logs go (default `director.lab.pair.workdir_of`).

    Raises:
        ValueError: options out of bounds (see `plan_ecmp`).
    """

    TOPOLOGY = "ecmp"
    OPTIONS = EcmpOptions

    def __init__(self, options: EcmpOptions, workdir: str | os.PathLike | None = None) -> None:
        wd = Path(workdir) if workdir else workdir_of(options.prefix)
        use_prep_cmd = realserver_prep_available()
        self.ecmp: EcmpPlan = plan_ecmp(
            options.prefix,
            directors=options.directors,
            real_servers=options.real_servers,
            prepare_real_servers=not use_prep_cmd,
        )
        lab = Lab(
            options.prefix,
            plan=self.ecmp.lab,
            vip_on_director=False,
            http_port=options.port,
            log_dir=wd / "logs",
            ready_timeout=60.0,
        )
        super().__init__(options, lab, wd, use_prep_cmd=use_prep_cmd)

    # -- names ------------------------------------------------------------------------

    @property
    def router(self) -> str:
        """The router's role (``"router"``)."""
        return self.ecmp.router

    @property
    def bird_dir(self) -> Path:
        """``<workdir>/router/``: the router BIRD's configuration, control socket and log."""
        return self.workdir / self.router

    @property
    def bird_socket(self) -> Path:
        """The router BIRD's control socket."""
        return self.bird_dir / "bird.ctl"

    def state_dir(self, node: str) -> Path:
        """Director ``node``'s ``global.state_dir`` (its drain file, its recorded sysctls)."""
        return self.workdir / node / "state"

    def config_text(self, node: str) -> str:
        """The generated configuration of director ``node`` (see `director_config`)."""
        return director_config(
            self.ecmp,
            node,
            state_dir=str(self.state_dir(node)),
            bgp_run_dir=str(self.workdir / node / "bgp"),
            port=self.options.port,
            scheduler=self.options.scheduler,
        )

    # -- life cycle ----------------------------------------------------------------------

    def up(self, *, start_daemons: bool = True, timeout: float = 30.0) -> EcmpLab:
        """Build the namespaces, start the router's BIRD (and wait until it answers on its
        control socket, ``timeout`` seconds), prepare and start the real servers, write the
        directors' configurations and, with ``start_daemons``, start ``directord run`` in each.

        It does not wait for the directors to announce the VIP. Leftovers of the same prefix
        are removed first; on any error everything is torn down.

        Raises:
            TimeoutError: BIRD or an HTTP server not up in time; RuntimeError: BIRD or a
            real server's preparation failed; OSError / pyroute2.NetlinkError: the kernel
            refused (not root).
        """
        self._remove_files()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.lab.build()
            self.start_bird(timeout=timeout)
            if self.use_prep_cmd:
                self.prep_real_servers()
            for node in self.directors:
                (self.workdir / node / "state").mkdir(parents=True, exist_ok=True)
                (self.workdir / node / "bgp").mkdir(parents=True, exist_ok=True)
                write_file_atomic(self.config_path(node), self.config_text(node).encode(), 0o644)
            self.save_state()
            if start_daemons:
                for node in self.directors:
                    self.start_daemon(node)
        except BaseException:
            self.down()
            raise
        return self

    def start_bird(self, *, timeout: float = 30.0) -> int:
        """Write the router's BIRD configuration and start ``bird -f`` in the router's
        namespace (output appended to ``<workdir>/router/bird.out``); wait until ``birdc``
        answers (``timeout`` seconds). Returns BIRD's pid.

        Raises:
            RuntimeError: BIRD exited (its output is in the message); TimeoutError: no answer.
        """
        self.bird_dir.mkdir(parents=True, exist_ok=True)
        conf = self.bird_dir / "bird.conf"
        text = router_bird_conf(self.ecmp, log_path=str(self.bird_dir / "bird.log"))
        write_file_atomic(conf, text.encode(), 0o644)
        out = self.bird_dir / "bird.out"
        with open(out, "ab") as f:
            p = self.lab.popen(
                self.router,
                [BIRD, "-f", "-c", str(conf), "-s", str(self.bird_socket)],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def answers() -> bool:
            if p.poll() is not None:
                raise RuntimeError(f"bird in {self.router} exited {p.returncode}: {Lab._tail(out)}")
            return self.birdc("show status", timeout=2.0).returncode == 0

        wait_until(answers, timeout, 0.05, what=f"bird answering on {self.bird_socket}")
        return p.pid

    # -- the router -------------------------------------------------------------------------

    def birdc(self, command: str, *, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """``birdc -s SOCKET COMMAND`` (words split on blanks) against the router's BIRD, run
        in the router's namespace; never raises for a non-zero exit (check ``returncode``).

        Raises:
            subprocess.TimeoutExpired: no answer within ``timeout`` seconds.
        """
        return exec_in_netns(
            self.ecmp.router_ns,
            [BIRDC, "-s", str(self.bird_socket), *command.split()],
            check=False,
            timeout=timeout,
        )

    def bgp_sessions(self) -> dict[str, dict[str, str]]:
        """The router's BGP protocols by name (``dir1``..): `parse_protocols` rows; the
        ``info`` of an established session is ``Established``. Empty when BIRD does not answer."""
        try:
            r = self.birdc("show protocols")
        except subprocess.TimeoutExpired:
            return {}
        return {row["name"]: row for row in parse_protocols(r.stdout) if row["proto"] == "BGP"}

    def vip_route(self) -> str:
        """``ip route show VIP/32`` in the router's namespace (its kernel's route; empty: none)."""
        r = exec_in_netns(
            self.ecmp.router_ns, ["ip", "route", "show", f"{self.vip}/32"], check=False, timeout=COMMAND_TIMEOUT
        )
        return (r.stdout if r.returncode == 0 else r.stderr)[:MAX_OUTPUT]

    def vip_next_hops(self) -> list[str]:
        """The directors the router's kernel forwards the VIP to, as roles in next-hop order
        (an address that is no director's is given as is)."""
        by_addr = {self.plan.addr[d]: d for d in self.directors}
        return [by_addr.get(a, a) for a in parse_next_hops(self.vip_route())]

    # -- the client --------------------------------------------------------------------------

    def client_get(self, path: str = "/", *, timeout: float = 1.0) -> tuple[int, str]:
        """One HTTP GET from the client to VIP:port over a new connection (``timeout`` seconds);
        ``(status, body)``, the body naming the real server (see `director.lab.netns.http_get`)."""
        return http_get(self.lab.client, self.vip, self.options.port, path, timeout)

    # -- observation -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """`DaemonLab.status` with ``"bgp": {node: the daemon's bgp status, or why there is
        none}``, ``"router": {"protocols": birdc show protocols, "sessions": {name: row},
        "route": ip route show VIP/32, "next_hops": [director]}`` (empty when the router's
        namespace is gone)."""
        doc = super().status()
        doc["bgp"] = {n: s.get("bgp") if isinstance(s, dict) else s for n, s in doc.pop("daemon_status").items()}
        doc["router"] = {}
        if netns_exists(self.ecmp.router_ns):
            try:
                r = self.birdc("show protocols")
                protocols = (r.stdout or r.stderr)[:MAX_OUTPUT]
            except subprocess.TimeoutExpired:
                protocols = f"birdc did not answer in {COMMAND_TIMEOUT:g} s"
            route = self.vip_route()
            doc["router"] = {
                "protocols": protocols,
                "sessions": {row["name"]: row for row in parse_protocols(protocols) if row["proto"] == "BGP"},
                "route": route,
                "next_hops": self.vip_next_hops(),
            }
        return doc


def render_status(doc: dict[str, Any]) -> str:
    """Text of `EcmpLab.status` for ``directord lab status``."""
    o = doc["options"]
    shape = f"routed (ECMP over BGP), {o['directors']} directors, {o['real_servers']} real servers"
    lines = status_head(doc, shape, "directord lab up --topology ecmp")
    if not doc["namespaces"]:
        return "\n".join(lines)
    router = doc.get("router") or {}
    lines.append("router BGP sessions:")
    sessions = router.get("sessions") or {}
    for name, row in sessions.items():
        lines.append(f"  {name}: {row['state']} since {row['since']} {row['info']}".rstrip())
    if not sessions:
        lines.append("  " + (router.get("protocols") or "no answer from the router's BIRD").strip()[:500])
    route = (router.get("route") or "").strip()
    lines.append(f"router route for {doc['vip']}/32: " + (route.splitlines()[0] if route else "none"))
    for line in route.splitlines()[1:]:
        lines.append(f"    {line.strip()}")
    hops = router.get("next_hops") or []
    lines.append("ECMP next hops: " + (", ".join(hops) if hops else "none"))
    lines += namespace_lines(doc["namespaces"])
    for node, pid in doc["daemons"].items():
        bgp = doc["bgp"].get(node)
        lines.append(f"{node}: daemon pid {pid or 'not running'}; BGP: {bgp}")
        for line in str(doc["ipvs"].get(node, "")).splitlines():
            lines.append(f"    {line}")
    return "\n".join(lines)
