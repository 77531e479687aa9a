"""IPVS connection synchronisation: the kernel's sync daemons, encoded, decoded and planned (pure).

A director that runs the *master* sync daemon multicasts the state of its
IPVS connections (UDP, group 224.0.0.81 port 8848 by default, on one
interface); one that runs the *backup* daemon joins that group and creates the
same connection entries in its own table. After a VIP move the new active
director then forwards an established connection to the real server that
already serves it, instead of answering its next segment with a TCP reset.
The kernel runs both daemons at once on one director ("master & backup
support at a time" in ``net/netfilter/ipvs/ip_vs_sync.c``), so directord
starts both on both directors and never switches them on a role change: the
active one's master has connections to send, the standby's has none.

Wire format (``include/uapi/linux/ip_vs.h``; the kernel side is
``ip_vs_genl_new_daemon``, ``ip_vs_genl_del_daemon`` and
``ip_vs_genl_dump_daemons`` in ``net/netfilter/ipvs/ip_vs_ctl.c``):

* commands IPVS_CMD_NEW_DAEMON 9, DEL_DAEMON 10, GET_DAEMON 11 (a dump);
* one nested attribute IPVS_CMD_ATTR_DAEMON (3) holding IPVS_DAEMON_ATTR_STATE
  (1, u32: IP_VS_STATE_MASTER 1 or IP_VS_STATE_BACKUP 2), MCAST_IFN (2, the
  interface name, NUL-terminated, at most 15 bytes) and SYNC_ID (3, u32);
  NEW needs all three, DEL only the state. The multicast group, port, TTL and
  maximum message length keep the kernel's defaults (the payload fits the
  interface's MTU).

The kernel answers NEW for a state already running with EEXIST, DEL for one
not running with ESRCH, and NEW with ENODEV for an interface it does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from director.model import valid_ifname

from .errors import IPVSError
from .netlink import (
    U32,
    genlmsg,
    nla_get_int,
    nla_get_string,
    nla_parse_nested,
    nla_put,
    nla_put_string,
    nla_put_u32,
)
from .uapi import (
    IP_VS_STATE_BACKUP,
    IP_VS_STATE_MASTER,
    IPVS_CMD_ATTR_DAEMON,
    IPVS_CMD_DEL_DAEMON,
    IPVS_CMD_GET_DAEMON,
    IPVS_CMD_NEW_DAEMON,
    IPVS_DAEMON_ATTR_MCAST_IFN,
    IPVS_DAEMON_ATTR_STATE,
    IPVS_DAEMON_ATTR_SYNC_ID,
    IPVS_GENL_VERSION,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
)

__all__ = [
    "SyncDaemon",
    "SyncOp",
    "STATES",
    "daemon_dump_request",
    "encode_sync_op",
    "parse_daemon_body",
    "plan_sync",
    "sync_daemons_for",
]

SyncState = Literal["master", "backup"]
#: ``IP_VS_STATE_MASTER`` and ``IP_VS_STATE_BACKUP`` (include/uapi/linux/ip_vs.h).
STATES: dict[SyncState, int] = {"master": IP_VS_STATE_MASTER, "backup": IP_VS_STATE_BACKUP}
_STATE_NAMES = {v: k for k, v in STATES.items()}


@dataclass(frozen=True, order=True)
class SyncDaemon:
    """One running (or wanted) sync daemon: ``state`` ``"master"``/``"backup"``, the
    multicast ``interface`` name and the ``syncid`` (0-255) that tells the pairs of one
    network apart (a backup ignores messages of another syncid)."""

    state: SyncState
    interface: str
    syncid: int = 0

    def __str__(self) -> str:
        return f"{self.state} sync daemon (interface {self.interface}, syncid {self.syncid})"


@dataclass(frozen=True)
class SyncOp:
    """Start ``daemon`` (``kind`` ``"start"``) or stop the daemon of ``daemon.state``
    (``"stop"``; the interface and syncid are those it ran with)."""

    kind: Literal["start", "stop"]
    daemon: SyncDaemon

    def __str__(self) -> str:
        return f"{self.kind} {self.daemon}"


def sync_daemons_for(interface: str, syncid: int) -> tuple[SyncDaemon, SyncDaemon]:
    """The two daemons directord runs on every director: master and backup on ``interface``."""
    return SyncDaemon("master", interface, syncid), SyncDaemon("backup", interface, syncid)


def plan_sync(desired: Sequence[SyncDaemon] | None, running: Sequence[SyncDaemon]) -> list[SyncOp]:
    """Operations that turn the ``running`` daemons into the ``desired`` ones.

    ``desired`` None means "not managed": nothing is planned, whatever runs.
    Per state: a daemon that runs with another interface or syncid is stopped
    and started again (the kernel cannot change a running one); one that is
    not desired is stopped; a desired one that does not run is started. Stops
    come first.
    """
    if desired is None:
        return []
    want = {d.state: d for d in desired}
    have = {d.state: d for d in running}
    stops = [SyncOp("stop", have[s]) for s in STATES if s in have and want.get(s) != have[s]]
    starts = [SyncOp("start", want[s]) for s in STATES if s in want and want[s] != have.get(s)]
    return stops + starts


def encode_sync_op(family_id: int, seq: int, op: SyncOp) -> bytes:
    """The netlink message (``NLM_F_REQUEST | NLM_F_ACK``) that carries out ``op``.

    Raises:
        ValueError: an unknown state, an interface name the kernel would refuse
            (`valid_ifname`), or a syncid outside 0-255.
    """
    d = op.daemon
    if d.state not in STATES:
        raise ValueError(f"unknown sync daemon state {d.state!r}")
    inner = nla_put_u32(IPVS_DAEMON_ATTR_STATE, STATES[d.state])
    if op.kind == "start":
        if not valid_ifname(d.interface):
            raise ValueError(f"not an interface name the kernel takes: {d.interface!r}")
        if not 0 <= d.syncid <= 255:
            raise ValueError(f"syncid must be 0-255, got {d.syncid}")
        inner += nla_put_string(IPVS_DAEMON_ATTR_MCAST_IFN, d.interface) + nla_put_u32(
            IPVS_DAEMON_ATTR_SYNC_ID, d.syncid
        )
        cmd = IPVS_CMD_NEW_DAEMON
    elif op.kind == "stop":
        cmd = IPVS_CMD_DEL_DAEMON
    else:
        raise ValueError(f"unknown sync daemon operation {op.kind!r}")
    attrs = nla_put(IPVS_CMD_ATTR_DAEMON, inner)  # nested, without NLA_F_NESTED, as the other requests
    return genlmsg(family_id, seq, cmd, IPVS_GENL_VERSION, attrs, flags=NLM_F_REQUEST | NLM_F_ACK)


def daemon_dump_request(family_id: int, seq: int) -> bytes:
    """The IPVS_CMD_GET_DAEMON dump request: one answer message per running daemon."""
    return genlmsg(family_id, seq, IPVS_CMD_GET_DAEMON, IPVS_GENL_VERSION, flags=NLM_F_REQUEST | NLM_F_DUMP)


def parse_daemon_body(body: memoryview | bytes) -> SyncDaemon:
    """Decode one answer of the daemon dump (its attributes, after the genl header).

    Raises:
        IPVSError: the message lacks the daemon attribute or holds an unknown state.
    """
    attrs = nla_parse_nested(body, IPVS_CMD_ATTR_DAEMON)
    state = nla_get_int(body, attrs, IPVS_DAEMON_ATTR_STATE, U32)
    if state not in _STATE_NAMES:
        raise IPVSError(f"IPVS sync daemon with unknown state {state}")
    return SyncDaemon(
        _STATE_NAMES[state],
        nla_get_string(body, attrs, IPVS_DAEMON_ATTR_MCAST_IFN),
        nla_get_int(body, attrs, IPVS_DAEMON_ATTR_SYNC_ID, U32),
    )
