"""The systemd units directord ships, with the path of the ``directord`` actually installed.

The units in ``etc/`` (`DAEMON_UNIT`, `REALSERVER_UNIT`; this module holds copies, kept equal
to those files by a test, so an installed wheel has them too) name the command as
`SHIPPED_COMMAND`, ``/usr/local/bin/directord``. A director installed in a venv or with pipx
has it elsewhere: `render` puts the command this process runs from (`installed_command`) in
every ``Exec*=`` line, ``directord install-units`` writes the daemon's unit that way, and
``directord realserver prep --persist`` its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from ha.durable import write_file_atomic

__all__ = [
    "DAEMON_UNIT",
    "REALSERVER_UNIT",
    "SHIPPED_COMMAND",
    "UNITS",
    "install_units",
    "installed_command",
    "render",
]

#: The command as the shipped units name it.
SHIPPED_COMMAND = "/usr/local/bin/directord"
DAEMON_UNIT = "directord.service"
REALSERVER_UNIT = "directord-realserver.service"

#: Copies of ``etc/directord.service`` and ``etc/directord-realserver.service``.
UNITS: dict[str, str] = {
    DAEMON_UNIT: """\
[Unit]
Description=directord IPVS director (virtual services, health checks, HA)
Documentation=man:ipvsadm(8)
# ip_vs is loaded by the kernel on first use or by /etc/modules-load.d: the daemon loads no module
After=network-online.target systemd-modules-load.service
Wants=network-online.target

[Service]
# READY=1 once the control socket answers, the HA service (if any) runs and the first
# reconcile pass is done; STATUS= follows the state; sent by the main process only
Type=notify
NotifyAccess=main
ExecStartPre=/usr/local/bin/directord check -c /etc/directord/directord.yaml
ExecStart=/usr/local/bin/directord run -c /etc/directord/directord.yaml
# synchronous: exits 1 (and systemctl reload fails) when the file is refused; the running
# configuration stays
ExecReload=/usr/local/bin/directord reload -c /etc/directord/directord.yaml
# fed from the daemon's event loop every 5 s: a loop stuck for 10 s (the heartbeat stopped long
# before, so the peer already took over) gets the daemon killed (SIGABRT) and restarted
WatchdogSec=10s
Restart=on-failure
RestartSec=2
# stopping leaves the IPVS table in place, so a restart changes nothing
KillSignal=SIGTERM
# SIGTERM to the daemon alone: it stops its own children in order. With a bgp section its
# BIRD must keep the sessions up through the graceful shutdown (GRACEFUL_SHUTDOWN, the
# bgp.graceful_shutdown_wait, the withdraw), which the default control-group mode would cut
# short by signalling BIRD too; what is left after the daemon exits gets SIGKILL. Keep
# TimeoutStopSec (90 s by default) above graceful_shutdown_wait.
KillMode=mixed
LimitNOFILE=65536

# Sandboxing (systemd.exec(5)). The daemon runs as root with these capabilities only:
# CAP_NET_ADMIN: IPVS over generic netlink, the VIPs over rtnetlink, the IPVS sync daemons,
#   SO_RCVBUFFORCE on the heartbeat sockets;
# CAP_NET_RAW: gratuitous ARP (AF_PACKET), unsolicited neighbour advertisements and ping
#   nodes (raw ICMP/ICMPv6 sockets), SO_BINDTODEVICE on kernels before 5.7;
# CAP_NET_BIND_SERVICE: heartbeat's UDP port 694.
# External checks run with the same set and the same view of the file system: one that
# needs more (another capability, a writable path, /home, a shared /tmp) needs a drop-in
# (systemctl edit directord).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# /run/directord: the control socket (global.control_socket); /var/lib/directord: the HA
# node's uuid, generation and lock (ha.state_dir). Other paths there need ReadWritePaths=.
RuntimeDirectory=directord
RuntimeDirectoryMode=0700
StateDirectory=directord
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelTunables=yes
# With a bgp: section the daemon sets the ARP and IPVS switches active-active directors need
# (conf/all/arp_ignore, arp_announce, vs/sloppy_tcp, vs/sloppy_sctp) and puts them back at stop.
ReadWritePaths=/proc/sys/net/ipv4
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
UMask=0077

[Install]
WantedBy=multi-user.target
""",
    REALSERVER_UNIT: """\
[Unit]
Description=directord: prepare this host as an LVS real server (VIPs, ARP and rp_filter sysctls)
Documentation=man:ipvsadm(8)
# Before the network comes up, so the host never answers ARP for a VIP it holds.
DefaultDependencies=no
After=systemd-sysctl.service systemd-modules-load.service local-fs.target
Before=network-pre.target shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target
ConditionPathExists=/etc/default/directord-realserver

[Service]
Type=oneshot
RemainAfterExit=yes
# DIRECTORD_REALSERVER_ARGS holds the prep arguments ("--vip VIP ... --mode dr"),
# written by `directord realserver prep --persist`.
EnvironmentFile=/etc/default/directord-realserver
ExecStart=/usr/local/bin/directord realserver prep $DIRECTORD_REALSERVER_ARGS

# Sandboxing (systemd.exec(5)), as far as prep allows: it writes sysctls under /proc/sys
# (so no ProtectKernelTunables=), may load ipip for --mode tun with modprobe (so no
# ProtectKernelModules=, and CAP_SYS_MODULE), adds addresses and tunl0 over rtnetlink
# (CAP_NET_ADMIN) and records what it changed in /var/lib/directord. No PrivateTmp=: it
# uses no /tmp, and this unit runs before the ordering PrivateTmp= adds.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_MODULE
NoNewPrivileges=yes
StateDirectory=directord
ProtectSystem=strict
ProtectHome=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service @module
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
""",
}


def installed_command(argv0: str | None = None, executable: str | None = None) -> str:
    """The command that runs this directord: ``argv0`` (``sys.argv[0]``) when it is an
    absolute path to an executable named ``directord``; else the ``directord`` console script
    beside ``executable`` (``sys.executable``: a venv's ``bin/``); else
    ``EXECUTABLE -m director.cli``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    if os.path.isabs(argv0) and os.path.basename(argv0) == "directord" and os.access(argv0, os.X_OK):
        return argv0
    beside = os.path.join(os.path.dirname(executable), "directord")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return f"{executable} -m director.cli"


def render(name: str, command: str) -> str:
    """The unit ``name`` (a key of `UNITS`) with ``command`` instead of `SHIPPED_COMMAND` in its
    ``Exec*=`` lines.

    Raises:
        KeyError: no such unit.
        ValueError: ``command`` has a character a unit file cannot carry unquoted (whitespace
            inside a path, a quote, ``%``, ``$``, a backslash or a newline).
    """
    program = command.split(" -m ", 1)[0]
    if any(ch in command for ch in "\"'%$\\\n") or any(ch.isspace() for ch in program):
        raise ValueError(f"cannot put {command!r} in a unit file's ExecStart=")
    lines = []
    for line in UNITS[name].splitlines(keepends=True):
        if line.startswith("Exec") and SHIPPED_COMMAND in line:
            line = line.replace(SHIPPED_COMMAND, command)
        lines.append(line)
    return "".join(lines)


def install_units(dest: str, command: str, names: Iterable[str] = (DAEMON_UNIT,)) -> list[str]:
    """Write the units ``names`` into the directory ``dest`` with ``command`` (`render`),
    atomically and durably, mode 0644; the paths written.

    Raises:
        OSError: ``dest`` is missing or not writable.
        ValueError: see `render`.
    """
    written = []
    for name in names:
        path = os.path.join(dest, name)
        write_file_atomic(path, render(name, command).encode(), mode=0o644)
        written.append(path)
    return written
