"""What rejecting one hostile heartbeat datagram costs in CPU, by kind and authkeys method.

Runs anywhere (no root, no network):

    python bench/reject_cost.py [--repeat 300] [--json PATH]

For each datagram below and each method of authkeys (sha1, md5, crc), the CPU time of
`ha.wire.decode_packet` (what the node calls on every datagram it receives), median of
``--repeat`` calls, in microseconds, with the error it ends in:

* ``text, 4,000 fields``: 31 KB of text framing with a made-up ``auth`` line;
* ``netstring, wrong MAC``: 60 KB of 6,000 fields under a made-up outer MAC;
* ``netstring, no MAC``: the same without an outer MAC;
* ``small forged status``: a 300-byte status signed with another key (crc has no key: anybody
  can sign with it, so this one is accepted there);
* ``authentic status``: the same signed with the right key (accepted: the parse is paid).

A keepalive interval is 200,000 µs at the shipped defaults; before the MAC was checked
over the raw bytes, the first three cost 50,000-230,000 µs each (a parse of every field),
so ten of them a second starved a pair's keepalives. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ha.auth import parse_authkeys
from ha.wire import Message, WireError, add_standard_fields, decode_packet, encode_packet

KEYS = {
    "sha1": "auth 1\n1 sha1 bench-secret\n",
    "md5": "auth 1\n1 md5 bench-secret\n",
    "crc": "auth 1\n1 crc\n",
}


def datagrams(method: str) -> dict[str, bytes]:
    """The datagrams of the table, for authkeys `method`."""
    keys = parse_authkeys(KEYS[method], method)
    other = parse_authkeys(KEYS[method].replace("bench-secret", "other-secret"), "other")
    status = add_standard_fields(
        Message.from_pairs([("t", "status"), ("st", "active"), ("dt", "320"), ("protocol", "1")]),
        src="dir1",
        srcuuid=bytes(range(16)),
        seq=7,
        hg=0x6B0245D4,
        ts=0x6B024853,
        ld="0.00 0.01 0.05 1/90 100",
        ttl=3,
    )
    many_ns = b"###\n" + b"7:(0)a=bc," * 6000 + b"%%%\n"
    return {
        "text, 4,000 fields": b">>>\n"
        + b"".join(b"f%d=v\n" % i for i in range(4000))
        + b"auth=1 "
        + b"0" * 40
        + b"\n<<<\n\0",
        "netstring, wrong MAC": many_ns + b"42:1 " + b"0" * 40 + b",",
        "netstring, no MAC": many_ns,
        "small forged status": encode_packet(status, other),
        "authentic status": encode_packet(status, keys),
    }


def cost(data: bytes, method: str, repeat: int) -> tuple[float, str]:
    """Median CPU microseconds of one `decode_packet`, and how it ended."""
    keys = parse_authkeys(KEYS[method], method)
    samples = []
    outcome = "accepted"
    for _ in range(repeat):
        t0 = time.process_time()
        try:
            decode_packet(data, keys)
        except WireError as exc:
            outcome = type(exc).__name__
        samples.append(time.process_time() - t0)
    return statistics.median(samples) * 1e6, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300, help="calls per cell (median)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = []
    for method in KEYS:
        for name, data in datagrams(method).items():
            us, outcome = cost(data, method, args.repeat)
            rows.append(
                {"datagram": name, "bytes": len(data), "method": method, "us": round(us, 1), "outcome": outcome}
            )
    print("| datagram | bytes | method | CPU per datagram (µs) | outcome |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['datagram']} | {r['bytes']:,} | {r['method']} | {r['us']:,.1f} | {r['outcome']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
