"""A heartbeat pair under a flood of hostile datagrams: keepalives on time, no owner change.

Root only; two `directord run` daemons in namespaces (`hapair.PairNet`), the
pair's heartbeats on a dedicated link (``bcast eth1`` on bridge ``hb0``) and
an intruder namespace on that link. While a CPU load runs on each director
(a busy process, as a busy health checker would be), the intruder sends, as
fast as one process can, a mix of what an attacker or a broken host puts on
UDP 694: forged statuses (a real packet signed with the wrong key), 60 KB
text-framed datagrams of 4,000 fields and 60 KB netstring datagrams under a
made-up MAC (what used to cost a parse of 50-200 ms each), garbage, and
replays of the pair's own authentic packets (current and older generation).
A second intruder process spoofs dir1's heartbeat address and port (niced, as
an attacker on another host takes no CPU of the directors): its forged
datagrams, all different, land in the queue dir2 keeps for dir1's own
datagrams, which a flood from any other source never reaches.

Asserted: the VIP never leaves dir1 and never sits on both; neither daemon
sees a keepalive interval above the deadtime or its peer leave (intervals
above warntime are printed: on a loaded 2-core CI machine a process can be
off the CPU for a few hundred ms); the flood really arrived (thousands of datagrams rejected, counted per
source address in ``directord status``, the intruder's address first; on dir2, thousands
more under dir1's address).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hapair import (
    HeartbeatTap,
    PairNet,
    VipSampler,
    netns_problem,
    packet_fields,
    resign,
    wait_for,
)
from test_ha_faults import ONLY1, pair, start_pair

from director.lab import flood as flood_module

_problem = netns_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")

#: Seconds of flood.
FLOOD_SECONDS = 6.0


_BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def test_a_flood_of_hostile_datagrams_changes_nothing(tmp_path: Path):
    with PairNet("hfl", hb_link=True, hb_nodes=("intruder",)) as lab:
        d1, d2 = pair(lab, tmp_path, media=["bcast eth1"])
        dirs = (d1, d2)
        tap = HeartbeatTap(lab.ns("intruder"), lab.hb_broadcast)
        procs: list[subprocess.Popen] = []
        try:
            d1.start()
            old_gen = tap.receive(lambda _p, f: f.get("t") == b"status" and f.get("src") == b"dir1", 10)
            d1.crash()
            tap.close()
            tap = HeartbeatTap(lab.ns("intruder"), lab.hb_broadcast)
            start_pair(lab, d1, d2)
            current = tap.receive(lambda _p, f: f.get("t") == b"status" and f.get("src") == b"dir1", 5)
            tap.close()
            seq = int(packet_fields(current)["seq"], 16)
            wrong = b"not-the-pair-secret"
            many_text = b">>>\n" + b"".join(b"f%d=v\n" % i for i in range(4000)) + b"auth=1 " + b"0" * 40 + b"\n<<<\n"
            many_ns = b"###\n" + b"7:(0)a=bc," * 6000 + b"%%%\n42:1 " + b"0" * 40 + b","
            packets = [
                resign(current, wrong, seq=b"%x" % (seq + 1000)),
                resign(current, wrong, st=b"dead"),
                many_text + b"\0",
                many_ns,
                b"garbage",
                current[: len(current) // 2],
                current,  # authentic replays: parsed, then dropped by sequence
                old_gen,
            ]
            batch = tmp_path / "packets.json"
            flood_module.write_packets(batch, packets)
            # as dir1: more distinct datagrams than the 512 a node remembers to deliver a broadcast once
            spoofed = [resign(current, wrong, seq=b"%x" % (seq + 1 + i)) for i in range(600)]
            spoofed += [many_ns[:-41] + b"%040x" % i + b"," for i in range(20)]
            spoofed_batch = tmp_path / "spoofed.json"
            flood_module.write_packets(spoofed_batch, spoofed)
            d1.past_startup_bonus()
            d2.past_startup_bonus()
            before = {d.role: d.status()["counters"] for d in dirs}
            with VipSampler(lab) as vips:
                t0 = time.monotonic()
                for role in ("dir1", "dir2"):  # a busy director: the checker at its CPU cap
                    procs.append(
                        subprocess.Popen(
                            [
                                "ip",
                                "netns",
                                "exec",
                                lab.ns(role),
                                sys.executable,
                                "-I",
                                "-c",
                                _BUSY,
                                str(FLOOD_SECONDS + 1),
                            ]
                        )
                    )
                flooder = [sys.executable, "-I", flood_module.__file__, "--dest", lab.hb_broadcast]
                flooder += ["--seconds", str(FLOOD_SECONDS), "--max", "2000000"]
                intruder = ["ip", "netns", "exec", lab.ns("intruder")]
                spoofer = subprocess.Popen(
                    [*intruder, *flooder, "--packets", str(spoofed_batch), "--nice", "19"]
                    + ["--source", f"{lab.hb_addr['dir1']}:694"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                procs.append(spoofer)
                flood = subprocess.run(
                    [*intruder, *flooder, "--packets", str(batch)],
                    capture_output=True,
                    text=True,
                    timeout=FLOOD_SECONDS + 30,
                )
                assert flood.returncode == 0, flood.stderr
                spoofed_out, spoofed_err = spoofer.communicate(timeout=30)
                assert spoofer.returncode == 0, spoofed_err
                time.sleep(1.0)  # roles keep still after the flood too
                assert vips.seen(t0) == {ONLY1}, vips.seen(t0)
            sent = int(flood.stdout.split()[-3])  # the last "sent N errors M"
            sent_spoofed = int(spoofed_out.split()[-3])
            after = {d.role: d.status() for d in dirs}
            for d in dirs:
                doc = after[d.role]
                c = doc["counters"]
                delta = {k: c[k] - before[d.role][k] for k in c}
                rejected = delta["bad_auth"] + delta["malformed"]
                print(
                    f"\n{d.role}: flood sent {sent} (+{sent_spoofed} as dir1), rejected {rejected}, "
                    f"by source {[(r['address'], r['packets']) for r in doc['rejected_sources']]}, "
                    f"replays {delta['replay']}, "
                    f"old/dup {delta['old'] + delta['duplicate']}, late heartbeats {delta['late_heartbeats']}, "
                    f"media {doc['media']}"
                )
                assert rejected > 2000, (sent, delta)
                log_text = d.tail(200_000)
                assert "(> deadtime)" not in log_text and " is dead" not in log_text, log_text[-3000:]
                assert delta["internal_errors"] == 0
                assert doc["state"] == "active" and doc["peers"][0]["status"] == "active", doc
                by_source = {r["address"]: r["packets"] for r in doc["rejected_sources"]}
                assert by_source[lab.hb_addr["intruder"]] > 2000, doc["rejected_sources"]
                peer = "dir2" if d.role == "dir1" else "dir1"
                assert doc["media"][0]["peer_sources"] == [f"{lab.hb_addr[peer]}:694"], doc["media"]
            # dir1 drops datagrams from its own address at the kernel (a martian); dir2 takes them in
            # through the queue it keeps for dir1, whose keepalives came through all the same
            assert after["dir2"]["rejected_sources"][0]["address"] in (lab.hb_addr["intruder"], lab.hb_addr["dir1"])
            spoofed_seen = {r["address"]: r["packets"] for r in after["dir2"]["rejected_sources"]}
            assert spoofed_seen.get(lab.hb_addr["dir1"], 0) > 1000, (sent_spoofed, after["dir2"]["rejected_sources"])
            assert lab.hb_addr["dir1"] not in {r["address"] for r in after["dir1"]["rejected_sources"]}
            assert after["dir1"]["groups"][0]["held"] and not after["dir2"]["groups"][0]["held"]
            wait_for(
                lambda: all(d.status()["peers"][0]["last_heard_s"] < 0.5 for d in dirs),
                5,
                "both to hear the peer within a keepalive or two",
                dirs,
            )
        finally:
            for p in procs:
                p.kill()
                p.wait()
            for d in dirs:
                d.kill()
