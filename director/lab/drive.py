"""Driving `directord run` inside a lab, and reading the kernel table with `ipvsadm` as an outside witness.

Used by the kernel tests and by `directord lab demo`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ha.durable import write_file_atomic

from .site import Lab


def parse_ipvsadm_list(text: str) -> dict[str, dict]:
    """Parse ``ipvsadm -Ln`` output.

    Returns:
        ``{"TCP 10.77.0.100:80": {"line": <service line>, "dests":
        {"10.77.0.21:80": (forward, weight, active_conns, inactive_conns)}}}``
        where forward is ipvsadm's word (``Route``, ``Masq``, ``Tunnel``, ``Local``).
    """
    table: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        f = line.split()
        if f and f[0] in ("TCP", "UDP", "SCTP", "FWM"):
            current = table.setdefault(f"{f[0]} {f[1]}", {"line": line.strip(), "dests": {}})
        elif len(f) >= 6 and f[0] == "->" and current is not None and f[1] != "RemoteAddress:Port":
            current["dests"][f[1]] = (f[2], int(f[3]), int(f[4]), int(f[5]))
    return table


def ipvsadm_table(lab: Lab, role: str = "dir1") -> dict[str, dict]:
    """The IPVS table of ``role``'s namespace as ``ipvsadm -Ln`` shows it (see `parse_ipvsadm_list`)."""
    return parse_ipvsadm_list(lab.exec(role, ["ipvsadm", "-Ln"]).stdout)


class DirectordProcess:
    """`directord run` in one lab namespace, driven through its configuration file and signals.

    Args:
        lab: the lab.
        workdir: folder for the configuration, control socket and log.
        role: the namespace role to run in (``dir1``).
    """

    def __init__(self, lab: Lab, workdir: str | os.PathLike, role: str = "dir1") -> None:
        self.lab = lab
        self.role = role
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "directord.yaml"
        self.socket = str(workdir / "directord.sock")
        self.log = workdir / "directord.log"
        self.proc: subprocess.Popen | None = None

    def write(self, text: str) -> None:
        """Replace the configuration file atomically and durably (``text`` is dedented; mode 0644)."""
        write_file_atomic(self.config, textwrap.dedent(text).encode(), 0o644)

    def start(self) -> None:
        """Start the daemon (its stdout/stderr append to `log`)."""
        with open(self.log, "ab") as logf:
            self.proc = self.lab.popen(
                self.role,
                [sys.executable, "-m", "director.cli", "run", "-c", str(self.config), "--control-socket", self.socket],
                stdout=logf,
                stderr=subprocess.STDOUT,
            )

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait (seconds); returns the exit status, None if it was not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def reload(self, text: str) -> None:
        """Write a new configuration and send SIGHUP."""
        self.write(text)
        if self.proc is None:
            raise RuntimeError("directord is not running")
        self.proc.send_signal(signal.SIGHUP)

    def alive(self) -> bool:
        """True while the daemon process runs."""
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The process state and the end of its log, for failure messages."""
        state = "not started" if self.proc is None else f"pid {self.proc.pid}, exit status {self.proc.poll()}"
        try:
            text = self.log.read_text(errors="replace")[-chars:]
        except OSError:
            text = ""
        return f"[{state}]\n{text}"
