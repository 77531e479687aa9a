"""`directord convert` checked against ldirectord itself, on real IPVS in the namespace lab.

For each ldirectord.cf sample (tests/data/ldirectord), in the lab's director
namespace: the real ldirectord (Debian package ``ldirectord`` 4.12, run as
``ldirectord -d FILE start``: foreground, debug) programs the table from the
original file; the table is read with ``ipvsadm -Ln`` (and ``--thresholds``)
once it equals the table the file describes (written out by hand below),
then rs1 and rs2 stop serving and the table is read again (removal, weight 0,
fallback server), and once more after they serve again. ldirectord is stopped, the table flushed (``ipvsadm -C``),
the real servers restored, and ``directord run`` does the same on the
converted file. Both tools must produce the same two tables, equal to the
hand-written ones.

Timing bounds are generous: the guest runs 10-25x slower than a host and
perl starts slowly there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from director.convert import convert_files, write_atomic
from director.lab.drive import DirectordProcess

pytestmark = pytest.mark.kernel

DATA = Path(__file__).resolve().parents[1] / "data" / "ldirectord"
LDIRECTORD = "/usr/sbin/ldirectord"
CONVERGE_S = 300.0

# --- reading the table ---------------------------------------------------------------------

Table = dict[str, dict[str, tuple[str, int, int, int]]]


def parse_tables(plain: str, thresholds: str) -> Table:
    """``ipvsadm -Ln`` and ``ipvsadm -Ln --thresholds`` as ``{service line: {dest: (forward, weight, u, l)}}``.

    Service lines are whitespace-normalised; connection counters are left out.
    Columns are found by their header names, so the parser does not depend on
    ipvsadm's column order.
    """

    def rows(text: str) -> tuple[dict[str, list[list[str]]], list[str]]:
        # The destination columns are named on the "-> RemoteAddress:Port" line (plain list) or,
        # with --thresholds, on the "Prot LocalAddress:Port" line (ipvsadm's print_title).
        services: dict[str, list[list[str]]] = {}
        header: list[str] = []
        current = None
        for line in text.splitlines():
            f = line.split()
            if not f:
                continue
            if f[0] == "Prot" and f[1] == "LocalAddress:Port":
                header = [] if f[2:] == ["Scheduler", "Flags"] else f[2:]
            elif f[0] == "->" and f[1] == "RemoteAddress:Port":
                header = f[2:] or header
            elif f[0] in ("TCP", "UDP", "SCTP", "FWM"):
                current = " ".join(f)
                services[current] = []
            elif f[0] == "->" and current is not None:
                services[current].append(f[1:])
        return services, header

    base, head = rows(plain)
    thr, thead = rows(thresholds)
    table: Table = {}
    for service, dests in base.items():
        limits = {d[0]: d for d in thr.get(service, [])}
        out = {}
        for d in dests:
            t = limits.get(d[0])
            u = int(t[1 + thead.index("Uthreshold")]) if t and "Uthreshold" in thead else -1
            lo = int(t[1 + thead.index("Lthreshold")]) if t and "Lthreshold" in thead else -1
            out[d[0]] = (d[1 + head.index("Forward")], int(d[1 + head.index("Weight")]), u, lo)
        table[service] = out
    return table


def read_table(lab) -> Table:
    plain = lab.exec(lab.director, ["ipvsadm", "-Ln"]).stdout
    thresholds = lab.exec(lab.director, ["ipvsadm", "-Ln", "--thresholds"]).stdout
    return parse_tables(plain, thresholds)


def converge(lab, expected: Table, what: str, log: Path | None = None) -> Table:
    """Wait until the table equals ``expected`` and stays so for a few seconds; return it."""
    deadline = time.monotonic() + CONVERGE_S
    table: Table = {}
    while time.monotonic() < deadline:
        table = read_table(lab)
        if table == expected:
            time.sleep(4)
            table = read_table(lab)
            if table == expected:
                return table
        time.sleep(1)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(
        f"{what}: table never equalled the expected one\n got:      {table}\n expected: {expected}\n--- log ---\n{tail}"
    )


# --- the samples -----------------------------------------------------------------------------

R, M, T = "Route", "Masq", "Tunnel"
VIP = "10.77.0.100"

LAB_UP: Table = {
    f"TCP {VIP}:80 wrr persistent 300 mask 255.255.255.0": {
        "10.77.0.21:80": (R, 3, 0, 0),
        "10.77.0.22:80": (R, 1, 20, 10),
    },
    f"TCP {VIP}:8080 lc": {"10.77.0.21:80": (M, 2, 0, 0), "10.77.0.22:80": (M, 1, 0, 0)},
    "FWM 1 sh (sh-port)": {"10.77.0.21:0": (R, 1, 0, 0), "10.77.0.22:0": (R, 1, 0, 0), "10.77.0.23:0": (R, 1, 0, 0)},
    f"UDP {VIP}:53 rr": {"10.77.0.21:53": (R, 1, 0, 0), "10.77.0.22:53": (R, 2, 0, 0)},
    f"TCP {VIP}:81 wlc": {"10.77.0.21:81": (T, 1, 0, 0), "10.77.0.22:81": (T, 1, 0, 0)},
    f"TCP {VIP}:82 wrr": {"10.77.0.23:82": (R, 1, 0, 0)},
}
# rs1 and rs2 stop serving: removal (quiescent=no) brings the fallback in; quiescent=yes keeps weight 0.
LAB_DOWN: Table = {
    f"TCP {VIP}:80 wrr persistent 300 mask 255.255.255.0": {"10.77.0.23:80": (R, 1, 0, 0)},
    f"TCP {VIP}:8080 lc": {"10.77.0.21:80": (M, 0, 0, 0), "10.77.0.22:80": (M, 0, 0, 0)},
    "FWM 1 sh (sh-port)": {"10.77.0.23:0": (R, 1, 0, 0)},
    f"UDP {VIP}:53 rr": {"10.77.0.21:53": (R, 1, 0, 0), "10.77.0.22:53": (R, 2, 0, 0)},
    f"TCP {VIP}:81 wlc": {"10.77.0.21:81": (T, 0, 0, 0), "10.77.0.22:81": (T, 0, 0, 0)},
    f"TCP {VIP}:82 wrr": {"10.77.0.23:82": (R, 1, 0, 0)},
}
DEBIAN_UP: Table = {
    f"TCP {VIP}:80 rr": {"10.77.0.21:80": (R, 1, 0, 0), "10.77.0.22:80": (R, 1, 0, 0), "10.77.0.23:80": (R, 1, 0, 0)},
}
DEBIAN_DOWN: Table = {f"TCP {VIP}:80 rr": {"10.77.0.23:80": (R, 1, 0, 0)}}

#: Text replacements that put the Debian sample on the lab: its addresses, the receive string
#: (the lab's servers answer with their name, "rs1"...) and a check timeout the slow guest can
#: meet (3 s is tight for perl and Python there); every directive stays as shipped.
DEBIAN_SUBST = (
    ("checktimeout=3", "checktimeout=10"),
    ("192.168.6.240", VIP),
    ("192.168.6.2:", "10.77.0.21:"),
    ("192.168.6.3:", "10.77.0.22:"),
    ("192.168.6.6:", "10.77.0.23:"),
    ('receive="Test Page"', 'receive="rs"'),
)

SAMPLES = {
    "lab-sites.cf": ((), LAB_UP, LAB_DOWN),
    "debian-example.cf": (DEBIAN_SUBST, DEBIAN_UP, DEBIAN_DOWN),
}

CHECK_SCRIPT = """#!/bin/bash
# external check: $1 VIP, $2 virtual port, $3 real server, $4 port; up when port 80 accepts.
exec 3<>"/dev/tcp/$3/80"
"""


# --- the tools -----------------------------------------------------------------------------


def run_ldirectord(lab, cf: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return lab.popen(lab.director, [LDIRECTORD, "-d", str(cf), "start"], stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def stop_backends(lab) -> None:
    for rs in ("rs1", "rs2"):
        lab.stop_httpd(rs, kill=True)


@pytest.fixture
def clean_table(lab):
    lab.exec(lab.director, ["ipvsadm", "-C"])
    lab.reset_real_servers()
    yield
    lab.exec(lab.director, ["ipvsadm", "-C"])
    lab.reset_real_servers()


@pytest.mark.skipif(not os.path.exists(LDIRECTORD), reason="ldirectord (Debian package) is not installed")
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_converted_file_programs_the_same_table_as_ldirectord(lab, clean_table, tmp_path, sample):
    subst, expected_up, expected_down = SAMPLES[sample]
    script = tmp_path / "check-port80"
    script.write_text(CHECK_SCRIPT)
    script.chmod(0o755)
    text = (DATA / sample).read_text()
    for old, new in subst + (("/usr/lib/directord-test/check-port80", str(script)),):
        text = text.replace(old, new)
    cf = tmp_path / f"convert-{os.getpid()}-{sample}"
    cf.write_text(text)

    # ldirectord on the original file
    log = tmp_path / "ldirectord.log"
    proc = run_ldirectord(lab, cf, log)
    try:
        ld_up = converge(lab, expected_up, f"ldirectord {sample}, all real servers up", log)
        stop_backends(lab)
        ld_down = converge(lab, expected_down, f"ldirectord {sample}, rs1 and rs2 down", log)
        lab.reset_real_servers()
        ld_back = converge(lab, expected_up, f"ldirectord {sample}, rs1 and rs2 back", log)
    finally:
        stop_process(proc)
    lab.exec(lab.director, ["ipvsadm", "-C"])
    lab.reset_real_servers()
    assert read_table(lab) == {}

    # directord on the converted file
    result = convert_files(str(cf))
    workdir = tmp_path / "directord"
    d = DirectordProcess(lab, workdir)
    workdir.mkdir(exist_ok=True)
    write_atomic(str(d.config), result.text)
    d.start()
    try:
        dd_up = converge(lab, expected_up, f"directord {sample}, all real servers up", d.log)
        stop_backends(lab)
        dd_down = converge(lab, expected_down, f"directord {sample}, rs1 and rs2 down", d.log)
        lab.reset_real_servers()
        dd_back = converge(lab, expected_up, f"directord {sample}, rs1 and rs2 back", d.log)
    finally:
        d.stop()

    assert dd_up == ld_up
    assert dd_down == ld_down
    assert dd_back == ld_back == ld_up  # the fallback leaves, weights come back
    assert ld_up != ld_down  # the down phase changed something: the comparison is not vacuous
    assert all(ld_up.values()) and ld_up  # every service has destinations


def test_table_parser_reads_thresholds_by_column_name():
    plain = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.77.0.100:80 wrr persistent 300 mask 255.255.255.0
  -> 10.77.0.22:80                Route   1      0          0
"""
    thresholds = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn
  -> RemoteAddress:Port
TCP  10.77.0.100:80 wrr persistent 300 mask 255.255.255.0
  -> 10.77.0.22:80                20         10         0          0
"""
    assert parse_tables(plain, thresholds) == {
        "TCP 10.77.0.100:80 wrr persistent 300 mask 255.255.255.0": {"10.77.0.22:80": ("Route", 1, 20, 10)}
    }
