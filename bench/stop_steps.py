"""Steps of a graceful stop, from the two directors' logs of a `failover_gap` run.

    python bench/stop_steps.py DIR1_LOG DIR2_LOG

For every ``stopping`` line of dir1's daemon (SIGTERM), the seconds from it to dir1's
``releasing``, to its VIP removed (``released dir1``), to its ``shutdone``, and to dir2's
``acquiring`` and ``acquired``: a table of medians and every value. Reads the text log lines
(`failover_gap.py` keeps each daemon's log under ``out/bench/failover_gap/directord/dirN/``),
so it also reads the logs of versions older than the JSON event log; both daemons log on one
host, so their timestamps compare (resolution 1 ms).
"""

from __future__ import annotations

import datetime
import re
import statistics
import sys

LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \S+: (.*)")
STEPS = (
    ("dir1 releasing", 1, lambda m: m.startswith("releasing")),
    ("dir1 VIP removed", 1, lambda m: m.startswith("released dir1")),
    ("dir1 shutdone sent", 1, lambda m: "sending shutdone" in m),
    ("dir2 acquiring", 2, lambda m: m.startswith("acquiring")),
    ("dir2 acquired", 2, lambda m: m.startswith("acquired")),
)


def parse(path: str) -> list[tuple[float, str]]:
    """(Unix time, message) of every log line of ``path``."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out.append((when, m.group(2)))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    logs = {1: parse(argv[0]), 2: parse(argv[1])}
    stops = [t for t, m in logs[1] if m.startswith("stopping (the IPVS table")]
    print(f"{len(stops)} graceful stops\n")
    print("| seconds after SIGTERM to | median | each stop |")
    print("|---|---|---|")
    for name, node, match in STEPS:
        values = []
        for start in stops:
            found = next((t - start for t, m in logs[node] if t >= start and match(m)), None)
            if found is not None:
                values.append(round(found, 3))
        median = f"{statistics.median(values):.3f}" if values else "-"
        print(f"| {name} | {median} | {', '.join(f'{v:.3f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
