"""Connectivity of a director: ping nodes and resource-link carrier, as pure logic.

Two inputs decide whether a director is fit to hold the VIP while its peer
is alive:

* *ping nodes* (heartbeat's ``ping`` directive, acted upon as its ``ipfail``
  plugin does): addresses probed with ICMP echo; each is *reachable* or not
  after rise/fall counting (``fall`` missed probes in a row = unreachable,
  ``rise`` answered probes in a row = reachable again, the probe-based
  failure detection of VRRP trackers and of bonding's ARP monitor);
* *link monitoring* (bonding's ``miimon`` idea): the carrier of every
  interface that carries a resource address.

`Connectivity` is what a node reports to its peer; the node with the worse
report hands its groups to the other (`ha.node`). The probing I/O is
`ha.probe`, with the ICMP echo codec of `checks.protocols.icmp` (shared with the ``ping``
health check).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Connectivity", "PingTracker"]


@dataclass(frozen=True)
class Connectivity:
    """One node's connectivity report.

    Attributes:
        link_up: every interface carrying a resource address has carrier.
        ping_up: ping nodes currently reachable.
        ping_total: ping nodes configured.

    Reports compare by `score`: carrier first, then the number of reachable
    ping nodes (ipfail compares the counts of ping nodes each side sees).
    """

    link_up: bool = True
    ping_up: int = 0
    ping_total: int = 0

    @property
    def score(self) -> tuple[int, int]:
        """``(1 if link_up else 0, ping_up)``: higher is better."""
        return (1 if self.link_up else 0, self.ping_up)

    def __str__(self) -> str:
        text = f"link {'up' if self.link_up else 'down'}"
        if self.ping_total:
            text += f", ping nodes {self.ping_up}/{self.ping_total}"
        return text

    def to_fields(self) -> list[tuple[str, str]]:
        """The message fields (after ``t``): ``link=up|down``, ``ping=UP/TOTAL`` (decimal)."""
        return [("link", "up" if self.link_up else "down"), ("ping", f"{self.ping_up}/{self.ping_total}")]

    @classmethod
    def from_fields(cls, link: str | None, ping: str | None) -> Connectivity:
        """Parse the fields of `to_fields`.

        Raises:
            ValueError: a field is missing or malformed, or UP > TOTAL.
        """
        if link not in ("up", "down"):
            raise ValueError(f"bad link field {link!r}")
        if ping is None or ping.count("/") != 1:
            raise ValueError(f"bad ping field {ping!r}")
        up_text, total_text = ping.split("/")
        if not (up_text.isascii() and up_text.isdigit() and total_text.isascii() and total_text.isdigit()):
            raise ValueError(f"bad ping field {ping!r}")
        if len(up_text) > 6 or len(total_text) > 6:
            raise ValueError(f"bad ping field {ping!r}")
        up, total = int(up_text), int(total_text)
        if up > total:
            raise ValueError(f"ping field {ping!r}: more reachable than configured")
        return cls(link == "up", up, total)


class PingTracker:
    """Rise/fall counting for one ping node.

    Args:
        rise: answered probes in a row that make an unreachable node reachable.
        fall: missed probes in a row that make a reachable node unreachable.

    A node starts *reachable* (so a freshly started director does not hand
    its groups away before its first probes could answer); `record` returns
    True when the state changed.

    Raises:
        ValueError: rise or fall below 1.
    """

    def __init__(self, rise: int, fall: int) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.reachable = True
        self._run = 0  # consecutive results against the current state
        self.sent = 0
        self.answered = 0

    def record(self, answered: bool) -> bool:
        """Count one probe result; True when `reachable` changed."""
        self.sent += 1
        if answered:
            self.answered += 1
        if answered == self.reachable:
            self._run = 0
            return False
        self._run += 1
        if self._run >= (self.rise if answered else self.fall):
            self.reachable = answered
            self._run = 0
            return True
        return False
