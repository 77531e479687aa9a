"""A UDP flooder for labs, tests and the soak: datagrams sent in turn to one address.

Run in the namespace of an intruder (``ip netns exec NS python -I FILE ...``):

    python -I director/lab/flood.py --packets FILE --dest ADDR [--port 694]
        --seconds S [--rate N] [--max N] [--nice N] [--source ADDR:PORT]

``FILE`` holds a JSON list of datagrams as hex strings (at most 1,000 are
used, each at most 65,507 bytes: one UDP datagram).  Without ``--rate`` the
datagrams go as fast as one process can send them; with it, in bursts every
20 ms at about N a second (a sender more than a second behind does not catch
up).  ``ENOBUFS`` and other send errors are counted and the sender pauses
0.5 ms.  Prints ``sent <n> errors <m>`` every 10 s and at the end.

``--source ADDR:PORT`` sends from that address and port even when it is not
the namespace's own (``IP_TRANSPARENT``, needs ``CAP_NET_ADMIN``): an
intruder spoofing a director's heartbeat address, so that its datagrams
reach the queue a node keeps for that peer. For lab namespaces only.

The module imports nothing of directord's, so it runs as a file under
``python -I`` with whatever copy of the project started it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["flood", "main", "load_packets", "write_packets", "MAX_RATE", "MAX_SECONDS", "MAX_PACKETS"]

#: Highest ``--rate`` accepted, datagrams per second.
MAX_RATE = 20_000
#: Longest ``--seconds`` accepted.
MAX_SECONDS = 25 * 3600
#: Datagrams read from the packets file; the rest are ignored.
MAX_PACKETS = 1000
#: Largest datagram sent, bytes (IPv4's UDP payload limit).
MAX_DATAGRAM = 65_507
#: Largest packets file read, bytes.
MAX_FILE = 64 << 20
#: Seconds between two bursts at a given rate.
SLOT = 0.02


def write_packets(path: str | os.PathLike[str], packets: Sequence[bytes]) -> None:
    """Write ``packets`` to ``path`` in the format `load_packets` reads (JSON list of hex strings)."""
    with open(path, "w", encoding="ascii") as f:
        json.dump([p.hex() for p in packets], f)


def load_packets(path: str | os.PathLike[str]) -> list[bytes]:
    """The datagrams of a packets file: at most `MAX_PACKETS`, each cut to `MAX_DATAGRAM` bytes.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a JSON list of hex strings, or holds none.
    """
    with open(path, "rb") as f:
        data = json.loads(f.read(MAX_FILE))
    if not isinstance(data, list) or not all(isinstance(h, str) for h in data):
        raise ValueError(f"{path}: not a JSON list of hex strings")
    packets = [bytes.fromhex(h)[:MAX_DATAGRAM] for h in data[:MAX_PACKETS]]
    if not packets:
        raise ValueError(f"{path}: no datagram")
    return packets


#: ``IP_TRANSPARENT`` (linux/in.h): bind to an address that is not ours.
_IP_TRANSPARENT = 19


def flood(
    packets: Sequence[bytes],
    dest: tuple[str, int],
    seconds: float,
    rate: float | None = None,
    limit: int = 10_000_000,
    report: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    source: tuple[str, int] | None = None,
) -> tuple[int, int]:
    """Send ``packets`` in turn to ``dest`` (broadcast allowed) for ``seconds`` seconds or until
    ``limit`` are sent; at about ``rate`` a second, or as fast as possible when ``None``.
    ``report(sent, errors)`` is called every 10 s.  With ``source`` (address, port), the
    datagrams leave from there, ours or not (``IP_TRANSPARENT``).  Returns ``(sent, errors)``.

    Raises:
        ValueError: no packets, or ``rate`` outside 1..`MAX_RATE`.
        OSError: ``source`` cannot be bound (no ``CAP_NET_ADMIN``, port in use).
    """
    if not packets:
        raise ValueError("no datagram to send")
    if rate is not None and not 1 <= rate <= MAX_RATE:
        raise ValueError(f"rate must be within 1..{MAX_RATE}, not {rate:g}")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        if source is not None:
            s.setsockopt(socket.SOL_IP, _IP_TRANSPARENT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(source)
        per_slot = limit if rate is None else max(1, round(rate * SLOT))
        start = clock()
        end, next_slot, next_report = start + seconds, start, start + 10.0
        sent = errors = 0
        while sent < limit:
            now = clock()
            if now >= end:
                break
            for _ in range(min(per_slot, limit - sent)):
                try:
                    s.sendto(packets[sent % len(packets)], dest)
                    sent += 1
                except OSError:
                    errors += 1
                    time.sleep(0.0005)
                if rate is None and (sent & 255) == 0 and clock() >= min(end, next_report):
                    break
            if report is not None and now >= next_report:
                report(sent, errors)
                next_report = now + 10.0
            if rate is not None:
                next_slot += SLOT
                if next_slot < now - 1.0:  # more than a second behind: do not catch up
                    next_slot = now
                delay = min(next_slot, end) - clock()
                if delay > 0:
                    time.sleep(delay)
        return sent, errors
    finally:
        s.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(prog="flood.py", description="send datagrams in turn to ADDR:PORT")
    ap.add_argument("--packets", required=True, help="JSON list of datagrams as hex strings")
    ap.add_argument("--dest", required=True, help="IPv4 address (a broadcast address is allowed)")
    ap.add_argument("--port", type=int, default=694, help="UDP port (default 694, heartbeat's)")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=float, default=None, help="datagrams a second (default: as fast as possible)")
    ap.add_argument("--max", type=int, default=10_000_000, help="stop after this many datagrams")
    ap.add_argument("--nice", type=int, default=0, help="nice increment of the flooder (0-19)")
    ap.add_argument("--source", default=None, help="ADDR:PORT to send from, ours or not (spoofing)")
    a = ap.parse_args(argv)
    if not 0 < a.seconds <= MAX_SECONDS:
        ap.error(f"--seconds must be within 0..{MAX_SECONDS}")
    if not 1 <= a.port <= 65535:
        ap.error("--port must be within 1..65535")
    if a.rate is not None and not 1 <= a.rate <= MAX_RATE:
        ap.error(f"--rate must be within 1..{MAX_RATE}")
    source = None
    if a.source is not None:
        address, _, port = a.source.rpartition(":")
        if not address or not port.isdigit() or not 1 <= int(port) <= 65535:
            ap.error(f"--source must be ADDR:PORT, not {a.source!r}")
        source = (address, int(port))
    if a.nice:
        os.nice(max(0, min(19, a.nice)))
    try:
        packets = load_packets(a.packets)
    except (OSError, ValueError) as exc:
        print(f"flood.py: {exc}", file=sys.stderr)
        return 2

    def report(sent: int, errors: int) -> None:
        print(f"sent {sent} errors {errors}", flush=True)

    try:
        sent, errors = flood(packets, (a.dest, a.port), a.seconds, a.rate, max(1, a.max), report, source=source)
    except OSError as exc:
        print(f"flood.py: cannot send from {a.source}: {exc}", file=sys.stderr)
        return 2
    report(sent, errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
