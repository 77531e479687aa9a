"""The heartbeat 3.0.6-compatible node: liveness, reliable delivery, v1 resource takeover.

Pure logic. No sockets, no clock reads, no sleeps, no randomness that is not
injected. The driver (the daemon) owns the I/O and calls the entry points;
each returns a list of *actions* for it to carry out, in order:

* ``start(now)``, once;
* ``on_packet(data, source, now)`` for every datagram received on any medium;
* ``on_tick(now)`` at least every 250 ms, and at ``next_deadline()``
  (keepalives, timeouts and retransmissions happen here);
* ``acquired(group, ok, now)`` / ``released(group, now)`` after it carried out
  an `Acquire` / `Release`;
* ``stop(now)`` for a graceful stop; the driver keeps calling ``on_tick``
  until it receives `Stopped`;
* ``set_connectivity(conn, now)`` whenever the probes (ping nodes, carrier of
  the resource links) change; ``standby(now, which)`` / ``takeover(now,
  which)`` for the admin commands (`AdminRefused` when not possible now).

``now`` is a monotonic time in seconds (float). The ``ts`` field of outgoing
packets is the wall clock, from the injected ``wallclock`` callable.

Actions: `Send` (the same bytes go out on every medium), `Acquire` /
`Release` (configure / remove a resource group's addresses; `Acquire` also
announces them: gratuitous ARP / unsolicited NA), `PeerStatus`, `Log`,
`Stopped`. The driver must carry out `Acquire` / `Release` of one group in
the order given and confirm each with `acquired` / `released`.

Protocol sources (facts only, no code): heartbeat 3.0.6
``heartbeat/heartbeat.c`` (status messages, ``check_for_timeouts``,
``should_drop_message``, ``reqnodes``/``repnodes``, ``send_ack_if_needed``,
``is_lost_packet``, ``process_rexmit``, ``nak_rexmit``), ``hb_rexmit.c``
(retransmission requests), ``hb_resource.c`` (nice_failback,
``process_resources``, ``req_our_resources``, ``takeover_from_node``,
``hb_rsc_recover_dead_resources``, ``ask_for_resources``, ``go_standby``,
``hb_giveup_resources``), ``ha_msg_internal.c`` (trailing fields),
``lib/req_resource`` and ``rc.d/ip-request*`` (``ip-request-resp``);
checked against captures of two real heartbeat 3.0.6 daemons.

Behaviour, as heartbeat does it
-------------------------------
* Start: three status messages at once (``init``, ``up``, ``up``), then one
  every keepalive. ``dt`` (hex milliseconds) is deadtime + 2000 ms for the
  first 5 s, then deadtime; a status goes out at once when it changes.
  Status ``active`` once the peer answered our ``reqnodes`` (sent to the first
  live peer every second until answered) or was declared dead.
* Liveness: a peer silent for the ``dt`` it advertises is dead; before the
  link is up (every node heard from or dead), ``initdead`` applies. A status
  later than ``warntime`` is logged as a late heartbeat.
* Sequence numbers: per peer; a gap schedules one ``NS_rexmit`` per missing
  seq (decimal ``firstseq``/``lastseq``) after a random 50-250 ms, repeated
  every 250 ms until the packet arrives; more than 250 missing resets the
  tracking. ``NS_ackmsg`` every 10th seq (``seq % 10 == trigger``, a random
  trigger per peer) and when the first gap is filled. Requests for our
  packets are answered from a history of the last 500 sequenced packets with
  the identical bytes (at most once per 240 ms per packet, 50 per request),
  or ``NS_nak_rexmit`` when out of history.
* Generations: a packet with a lower ``hg`` than the peer's known one is a
  replay and is dropped; a status with a higher one is a restart (tracking
  reset); a status with the same one from a peer declared dead is a
  partition that healed.
* Resources (haresources v1, ``crm no``): with ``auto_failback`` on / off
  (nice_failback), ``starting`` at comm up, ``resource rsc_hold=... rtype=full
  isstable=0|1 [info=...]`` replies; when both nodes start together neither
  is stable and each takes its *own* groups after a delay (heartbeat's
  ``RQSTDELAY``, 10 s); a dead peer's groups are taken after
  ``stonith node=<peer> result=n_stnth`` (or ``unneeded`` when it held
  nothing); a peer's ``shutdone`` hands over at once; with auto_failback on,
  the holder of foreign groups hands them back through the ``ask_resources``
  handshake (``me`` / ``other`` / ``done``, 10 s for the first answer).
* Graceful stop: status, ``resource rsc_hold=none ... info=shutdown``, release
  every group, ``shutdone st=dead``, then keepalives for a short while (to
  answer retransmission requests), then `Stopped`.

Choices where heartbeat's behaviour was unclear or unwanted
-----------------------------------------------------------
* Local takeover delay: with ``compat: heartbeat`` the 10 s ``RQSTDELAY``;
  otherwise 2 x keepalive. Safe in a mixed pair too: when neither node is
  stable each node only takes its *own* groups, which never overlap, and
  never a group the peer says it holds.
* A ``starting`` that arrives before our link is up is kept and answered at
  comm up (heartbeat drops it, and both nodes then wait for the delay).
* ``ip-request-resp dest=<self> ipaddr=<first resource> weown=yes ok=OK`` is
  sent after the driver confirmed the acquisition of a group we took as its
  preferred owner (heartbeat sends it first, to trigger its own handler;
  peers ignore it, it is addressed to its sender).
* Liveness counts every *new sequenced* packet of the peer's current
  generation (heartbeat counts status messages only); ``NS_*`` packets carry
  no sequence number, could be replayed, and never count.
* A retransmitted, older status refreshes liveness but not the peer's status.
* A status later than deadtime is logged but does not declare the peer dead
  (heartbeat does, to catch up after its own stall; here a stall of our own
  process is detected, see below).
* Stall guard: when an entry point runs more than 0.5 s after the deadline
  we announced, our process was stalled; peers get that much grace before
  being judged dead (their queued packets arrive right after), and a CRITICAL
  log says when our own heartbeats stopped for longer than our ``dt``.
* Lossy links: once loss is seen (a gap in the peer's stream or a
  retransmission request for ours), each status is sent three times, spread
  over the keepalive interval (identical bytes, as heartbeat sends the same
  packet on every medium), for 60 s after the last sign of loss. This keeps
  the 0.8 s default deadtime free of false deaths at 30 % loss, and 1 s at
  40 % (simulated, ten minutes per seed).
* Partition healed (a peer declared dead returns with the same generation):
  heartbeat restarts *both* nodes, which gives every group back to its
  preferred owner after a long outage. Here the same outcome without the
  outage: each group stays with / goes back to its preferred owner (the first
  column of haresources), in every auto_failback mode; the other node
  releases it. The keeper emits ``Acquire(group, "re-announce after
  partition")`` at once and again after ``announce_repeats x
  announce_interval`` (the loser's own announcements may still be in
  flight). The keeper also re-announces when the peer stops claiming our
  groups while we hold them (the asymmetric case: our process was stalled
  and the peer took over). And a node that holds the peer's groups while the
  peer claims them (``resource`` messages; a one-way partition) releases
  them: heartbeat only logs "both machines own foreign resources". A real
  heartbeat peer restarts itself as usual; its ``shutdone`` then hands its
  groups to us, and its restart fails them back (auto_failback on) or not.
  Not covered with a real peer: a one-way partition where the real peer
  holds our group and never sees us "return" (it keeps it, so do we).
* At start every group gets a `Release` (a no-op when absent): a process
  that crashed may have left addresses configured that are no longer ours
  (heartbeat leaves them, a duplicate address with auto_failback off).
* On a peer's ``shutdone`` heartbeat also runs a standby-acquire of groups it
  already holds; skipped, the takeover covers it. The peer is reported
  ``dead`` at once; its statuses of the same generation are ignored for
  reporting until its deadtime passes or it restarts.
* Graceful stop waits (at most 30 s) for outstanding driver operations, not
  for the peer's stability, then releases; if releases are not confirmed in
  30 s, ``shutdone`` goes out anyway (an error is logged).
* A failed acquisition is retried every 5 s while the group should be ours.
* ``legacy`` (auto_failback absent: heartbeat's nice_failback off): no
  ``starting``/``resource`` messages; at comm up the preferred owner asks the
  peer for each of its groups with ``ip-request ipaddr=<key>``; the holder
  releases it and answers ``ip-request-resp dest=<asker> ipaddr=<key>
  ok=OK``, then the owner takes it (failback always). Heartbeat never takes
  a group nobody answered for; here the owner takes it after the local
  takeover delay. Alone, the owner takes its groups at once. Dead peer and
  ``shutdone``: takeover as above.
* No acks are sent to ourselves (heartbeat acks its own broadcasts).
* Only one or two nodes are supported (heartbeat's v1 takeover is two-node).
* Connectivity (ipfail's idea without ipfail's API messages): each node
  sends ``directord-connectivity link=up|down ping=UP/TOTAL`` on change and
  every 2 s; while the peer is alive and its report has been better for
  2 x keepalive (+ ping_interval with ping nodes, as both sides probe at
  different moments), the worse node goes standby for everything it holds;
  once its report is as good again it sends ``hb_takeover rsc_hold=local``
  if auto_failback is on. Two connectivity handovers are at least 2 s apart.
  The holder of the peer's groups delays auto failback while the returning
  owner reports worse connectivity.
* ``hb_takeover`` (heartbeat's script message): a directord node receiving
  it goes standby for the matching groups. A heartbeat 3.0.6 node hands the
  message to its ``rc.d/hb_takeover`` script, which in Debian's package runs
  its standby for them: it follows too.

Layout
------
Dependencies point one way, from the node down to its parts: no part imports
`ha.node.core`; among the parts, handover -> resources -> legacy -> groups and
receiver -> outbound -> delivery, with membership, inbound and api below them.
Each part is pure and has its own unit tests (``tests/unit/test_ha_node_<part>.py``).

* `ha.node.api`: the vocabulary (actions, `AdminRefused`, message types,
  `COUNTERS`, snapshot types);
* `ha.node.inbound`: admission of datagrams (signature, required fields, own
  packets, unknown senders) and the per-source account of rejected ones;
* `ha.node.outbound`: our messages (trailing fields, signing, the send
  history) and our status (``dt`` with its startup bonus, keepalives, copies
  on a lossy link);
* `ha.node.delivery`: reliable delivery's data (sequence numbers, the send
  history, a peer's stream with its reorder window and acks, generation checks);
* `ha.node.receiver`: reliable delivery driven: the checks of each received
  message, acks, retransmission requests and answers;
* `ha.node.membership`: the peers' liveness (deadtime, warntime, initdead,
  late heartbeats, stall grace, dead and alive);
* `ha.node.groups`: the resource groups, the resource sets and the driver
  operations (`Acquire` / `Release` and their confirmations);
* `ha.node.legacy`: ``auto_failback: legacy`` (``ip-request``);
* `ha.node.resources`: the v1 resource protocol (nice_failback, takeover,
  standby and the failback handshake, split brain healed, the graceful stop);
* `ha.node.handover`: connectivity reports and the handovers they decide,
  ``hb_takeover`` requests;
* `ha.node.core`: `HeartbeatNode`, composing them: entry points, dispatch of
  accepted messages, comm state.
"""

from ha.node import api
from ha.node.api import *  # noqa: F403 - the vocabulary: api's public names (its __all__) are this package's
from ha.node.core import HeartbeatNode

__all__ = [*api.__all__, "HeartbeatNode"]
