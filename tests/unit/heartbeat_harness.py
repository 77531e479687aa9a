"""A real heartbeat 3.0.6 node (Debian package ``heartbeat``) inside a network namespace.

For interoperability tests of directord's heartbeat node against the daemon it
replaces. Everything happens inside namespaces the test creates:

* :class:`HeartbeatNet`: a switch namespace holding a bridge (``br0``) and one
  namespace per node, each with an ``eth0`` veth plugged into the bridge and
  an address ``10.250.0.<n>/24`` *with* a broadcast address (heartbeat's
  ``bcast`` medium sends to the interface's broadcast address; without one
  it sends to 0.0.0.0 and the nodes never hear each other).
* :class:`RealHeartbeat`: one heartbeat process, started as
  ``ip netns exec NS unshare -m -u -p -f --mount-proc --kill-child <script>``.
  The script gives the node its own host name (heartbeat's node name is
  ``uname -n``), bind-mounts the node's own copies of ``/etc/ha.d`` and
  ``/var/lib/heartbeat`` (uuid, generation counter, host cache: they survive
  a restart, so the generation grows as on a real machine), mounts a tmpfs on
  ``/run`` with the directories heartbeat expects, and execs
  ``/usr/libexec/heartbeat/heartbeat -f -l`` (foreground). Heartbeat is
  process 1 of its own PID namespace: a SIGKILL of it takes every process it
  started (resource-agent scripts, ``send_arp``) with it, and the mounts live
  only in its private mount namespace, so nothing is left behind on the host.

Facts used (heartbeat 3.0.6 ``heartbeat/config.c``: ``logfile``,
``debugfile``, ``use_logd``, node name from ``uname -n``, authkeys mode 600;
resource-agents ``IPaddr``: the address goes on the interface named in
haresources).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from director.lab.netns import (
    add_bridge,
    call_in_netns,
    create_netns,
    delete_netns,
    link_set,
    list_addresses,
    list_netns,
    netns_exists,
)

HEARTBEAT = "/usr/libexec/heartbeat/heartbeat"
HA_D = "/etc/ha.d"
VAR_LIB = "/var/lib/heartbeat"
#: Directories heartbeat and its helpers expect under /run (owned by hacluster:haclient, mode 750).
RUN_DIRS = ("/run/heartbeat", "/run/heartbeat/ccm", "/run/heartbeat/crm", "/run/heartbeat/dopd", "/run/crm")
#: Prefix of the namespaces made here: ``hbi<creator pid>-<role>``.
NS_PREFIX = "hbi"
#: ha.cf keys the harness sets itself (log locations).
_OWN_KEYS = ("logfile", "debugfile", "use_logd", "logfacility")


def heartbeat_installed() -> bool:
    """True if the heartbeat daemon binary and the ``IPaddr`` resource agent are installed."""
    return os.access(HEARTBEAT, os.X_OK) and os.path.exists(os.path.join(HA_D, "resource.d", "IPaddr"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete ``hbi<pid>-*`` namespaces whose creating process is gone (an interrupted run).

    Namespaces of live processes (a concurrent run) are left alone. Returns the names deleted.
    """
    gone = []
    for name in list_netns():
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-.+", name)
        if m and not _pid_alive(int(m[1])):
            delete_netns(name)
            gone.append(name)
    return gone


class HeartbeatNet:
    """Node namespaces on one bridge: ``roles[i]`` gets ``10.250.0.<i+1>/24`` on its ``eth0``.

    Args:
        roles: short role names (``"a"``, ``"b"``); namespace ``hbi<pid>-<role>``.
        subnet: IPv4 /24 (or larger) the node addresses come from.

    ``build()`` (or ``with``) creates everything; ``close()`` deletes the
    namespaces and kills what runs in them (idempotent, never raises).

    Raises (build): ``OSError`` / ``pyroute2.NetlinkError`` when the kernel refuses.
    """

    def __init__(self, roles: Sequence[str] = ("a", "b"), subnet: str = "10.250.0.0/24") -> None:
        self.prefix = f"{NS_PREFIX}{os.getpid()}"
        self.roles = tuple(roles)
        self.network = ipaddress.ip_network(subnet)
        if self.network.version != 4:
            raise ValueError("heartbeat's bcast medium is IPv4 only")
        hosts = list(self.network.hosts())
        self._addr = {role: str(hosts[i]) for i, role in enumerate(self.roles)}
        self.switch_ns = f"{self.prefix}-sw"
        self._built = False

    def ns(self, role: str) -> str:
        """The namespace name of a role."""
        if role not in self._addr:
            raise KeyError(role)
        return f"{self.prefix}-{role}"

    def addr(self, role: str) -> str:
        """The IPv4 address of a role's ``eth0`` (no prefix length)."""
        return self._addr[role]

    @property
    def broadcast(self) -> str:
        """The subnet's broadcast address."""
        return str(self.network.broadcast_address)

    def __enter__(self) -> HeartbeatNet:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> HeartbeatNet:
        """Create the switch namespace, its bridge, and the node namespaces; returns self."""
        remove_stale_namespaces()
        self._built = True
        create_netns(self.switch_ns)
        add_bridge(self.switch_ns, "br0")
        for role in self.roles:
            create_netns(self.ns(role))
            call_in_netns(self.switch_ns, self._plug, role)
            call_in_netns(self.ns(role), self._configure, role)
        return self

    def _plug(self, role: str) -> None:
        from pyroute2 import IPRoute

        port = f"p-{role}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": self.ns(role)})
            idx = ipr.link_lookup(ifname=port)[0]
            ipr.link("set", index=idx, master=ipr.link_lookup(ifname="br0")[0])
            ipr.link("set", index=idx, state="up")

    def _configure(self, role: str) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, state="up")
            ipr.addr(
                "add",
                index=idx,
                address=self._addr[role],
                prefixlen=self.network.prefixlen,
                broadcast=self.broadcast,
            )

    def link_set(self, role: str, *, up: bool) -> None:
        """Take a node's ``eth0`` up or down (a cable pull seen from the node)."""
        link_set(self.ns(role), "eth0", up=up)

    def addresses(self, role: str) -> list[str]:
        """The node's addresses as ``"addr/prefixlen"`` (every interface)."""
        return list_addresses(self.ns(role))

    def close(self) -> None:
        """Delete the namespaces, killing their processes first (idempotent, never raises)."""
        if not self._built:
            return
        for name in [*(self.ns(r) for r in self.roles), self.switch_ns]:
            try:
                delete_netns(name)
            except Exception:  # keep tearing down
                pass
        self._built = False


def _own_lines(text: str) -> list[str]:
    """ha.cf lines without the keys the harness sets itself."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0].lower() in _OWN_KEYS:
            continue
        out.append(line)
    return out


class RealHeartbeat:
    """One real heartbeat daemon in network namespace ``ns``, as node ``node_name``.

    Args:
        ns: an existing network namespace (e.g. ``HeartbeatNet.ns("a")``).
        node_name: the host name the node gets (heartbeat's node name).
        workdir: a directory of this node's own: ``etc_ha.d`` (a copy of the
            installed ``/etc/ha.d`` with the three files below), ``varlib``
            (its ``/var/lib/heartbeat``), ``start.sh``, ``ha-log`` (heartbeat's
            log), ``ha-debug``, ``stdout.log``. Kept across restarts.
        ha_cf, haresources, authkeys: file contents. ``logfile``,
            ``debugfile``, ``use_logd`` and ``logfacility`` lines of ``ha_cf``
            are replaced by the harness's own. ``authkeys`` is written mode 600.

    ``start()`` / ``stop()`` may alternate; ``cleanup()`` kills whatever is
    left. Times are in seconds.
    """

    def __init__(
        self, ns: str, node_name: str, workdir: str | os.PathLike, ha_cf: str, haresources: str, authkeys: str
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", node_name):
            raise ValueError(f"not a usable host name: {node_name!r}")
        self.ns = ns
        self.node_name = node_name
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "ha-log"
        self.debug_path = self.workdir / "ha-debug"
        self.stdout_path = self.workdir / "stdout.log"
        self._proc: subprocess.Popen | None = None
        self._setup(ha_cf, haresources, authkeys)

    # -- files --------------------------------------------------------------------

    def _setup(self, ha_cf: str, haresources: str, authkeys: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        etc = self.workdir / "etc_ha.d"
        varlib = self.workdir / "varlib"
        if not etc.exists():
            shutil.copytree(HA_D, etc, symlinks=True)
        if not varlib.exists():
            # the package's directory tree (ccm, crm, cores, ...) with its owners, no state yet
            subprocess.run(["cp", "-a", VAR_LIB, str(varlib)], check=True)
            for stale in ("hb_uuid", "hb_generation", "hostcache", "delhostcache"):
                try:
                    (varlib / stale).unlink()
                except FileNotFoundError:
                    pass
        lines = [
            f"logfile {self.log_path}",
            f"debugfile {self.debug_path}",
            "use_logd no",
            *_own_lines(ha_cf),
        ]
        (etc / "ha.cf").write_text("\n".join(lines) + "\n")
        (etc / "haresources").write_text(haresources if haresources.endswith("\n") else haresources + "\n")
        keys = etc / "authkeys"
        if keys.exists():
            keys.unlink()
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(authkeys if authkeys.endswith("\n") else authkeys + "\n")
        os.chmod(keys, 0o600)
        script = self.workdir / "start.sh"
        mkdirs = "\n".join(f"mkdir -p {d} && chown hacluster:haclient {d} && chmod 750 {d}" for d in RUN_DIRS)
        script.write_text(
            f"""#!/bin/sh
set -e
hostname {self.node_name}
mount --make-rprivate /
mount --bind {etc} {HA_D}
mount --bind {varlib} {VAR_LIB}
mount -t tmpfs -o mode=755 tmpfs /run
{mkdirs}
mkdir -p /run/resource-agents /run/lock
exec {HEARTBEAT} -f -l
"""
        )
        script.chmod(0o755)

    # -- life cycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the started process tree has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the daemon (returns at once; heartbeat then takes a while to talk).

        Raises:
            RuntimeError: already running, or heartbeat is not installed.
            FileNotFoundError: the namespace does not exist.
        """
        if self.running:
            raise RuntimeError(f"heartbeat {self.node_name} already running")
        if not heartbeat_installed():
            raise RuntimeError("heartbeat is not installed (apt-get install heartbeat)")
        if not netns_exists(self.ns):
            raise FileNotFoundError(errno.ENOENT, "no such network namespace", self.ns)
        with open(self.stdout_path, "ab") as out:
            self._proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns,
                    "unshare",
                    "-m",
                    "-u",
                    "-p",
                    "-f",
                    "--mount-proc",
                    "--kill-child",
                    str(self.workdir / "start.sh"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _descendants(self) -> list[int]:
        """PIDs below the started process, breadth first (children before grandchildren)."""
        if self._proc is None:
            return []
        out: list[int] = []
        todo = [self._proc.pid]
        while todo:
            pid = todo.pop(0)
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                except OSError:
                    continue
                for k in kids:
                    out.append(int(k))
                    todo.append(int(k))
        return out

    @property
    def master_pid(self) -> int | None:
        """PID (host view) of heartbeat's master control process (process 1 of its PID namespace)."""
        kids = self._descendants()
        return kids[0] if kids else None

    def stop(self, graceful: bool = True, timeout: float = 30.0) -> int | None:
        """Stop the daemon; returns the exit status of the ``unshare`` process (None if not running).

        ``graceful``: SIGTERM to heartbeat, which releases its resources and
        tells its peer (``shutdone``); SIGKILL after ``timeout`` seconds.
        Otherwise SIGKILL of heartbeat, which as process 1 of its PID
        namespace takes the whole tree with it (its addresses stay
        configured, as after a crash).
        """
        if self._proc is None:
            return None
        proc = self._proc
        if proc.poll() is None:
            master = self.master_pid
            if master is None:
                proc.kill()  # --kill-child: the child goes too
            else:
                try:
                    os.kill(master, signal.SIGTERM if graceful else signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=timeout if graceful else 10.0)
            except subprocess.TimeoutExpired:
                self._kill_all()
                proc.wait(timeout=10.0)
        self._proc = None
        return proc.returncode

    def _kill_all(self) -> None:
        # heartbeat first: as process 1 of its PID namespace its death takes every process
        # in it (no respawning of killed children); then whatever is left, unshare last
        for pid in [*self._descendants(), self._proc.pid] if self._proc else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        """Kill anything still running (idempotent, never raises). Mounts go with the processes."""
        try:
            if self._proc is not None:
                self._kill_all()
                self._proc.wait(timeout=10.0)
        except Exception:
            pass
        self._proc = None

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the running node, as an administrator on its machine would:
        in its network, mount, UTS and PID namespaces (its ``/etc/ha.d``,
        ``/var/lib/heartbeat``, ``/run`` and host name), e.g.
        ``["/usr/share/heartbeat/hb_standby", "foreign"]``. Returns the completed
        process (text output captured; a non-zero exit status is not an error).

        Raises:
            RuntimeError: the node is not running.
            subprocess.TimeoutExpired: not done within ``timeout`` seconds.
        """
        master = self.master_pid
        if not self.running or master is None:
            raise RuntimeError(f"heartbeat {self.node_name} is not running")
        return subprocess.run(
            ["nsenter", "-t", str(master), "-m", "-u", "-n", "-p", "--", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- observation -------------------------------------------------------------------

    def log_text(self) -> str:
        """Heartbeat's log so far (its ``logfile``; grows only, so offsets into it stay valid)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        """What the started processes wrote to stdout/stderr (configuration complaints, ``unshare``)."""
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        """Current length of :meth:`log_text` (an offset for :meth:`wait_log`)."""
        return len(self.log_text())

    def wait_log(self, pattern: str, timeout: float, since: int = 0) -> re.Match:
        """Wait until regex ``pattern`` appears in the log after offset ``since``; returns the match.

        Raises:
            TimeoutError: not within ``timeout`` seconds (the log tail is in the message).
            RuntimeError: the daemon exited meanwhile.
        """
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            text = self.log_text()
            m = rx.search(text, since)
            if m:
                return m
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"heartbeat {self.node_name} exited ({self._proc.returncode}): "
                    f"{text[-3000:]}\n{self.stdout_text()[-1000:]}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{pattern!r} not in {self.node_name}'s log within {timeout} s: {text[-3000:]}")
            time.sleep(0.1)

    def has_address(self, addr: str) -> bool:
        """True if ``addr`` (an IP, no prefix) is configured on any interface of the namespace."""
        want = ipaddress.ip_address(addr)
        return any(ipaddress.ip_interface(a).ip == want for a in list_addresses(self.ns))

    def processes(self) -> list[int]:
        """PIDs (host view) of every process of this node's tree, the ``unshare`` process included."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self._proc.pid, *self._descendants()]


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll ``pred()`` until true; returns the seconds it took.

    Raises:
        TimeoutError: still false after ``timeout`` seconds.
    """
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)
