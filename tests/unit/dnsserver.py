"""A real DNS server for the ``dns`` and ``udp`` check tests: dnsmasq in the foreground on
127.0.0.1, on a free port, with a few fixed names and no upstream server.

Names served (`start_dnsmasq`): ``ok.test`` A 192.0.2.7, MX 10 mail.ok.test; ``nx.test``
NXDOMAIN; ``big.test`` 12 TXT records of 100 characters each (about 1.4 KB: a UDP reply without
EDNS is truncated at 512 bytes, RFC 1035 section 4.2.1); any other name REFUSED (no upstream).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from checkhelpers import stop_process

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if shutil.which("dnsmasq", path="/usr/sbin") else None
)  # fmt: skip

#: A query for ``ok.test`` A, ID 0x4242, RD (RFC 1035 section 4.1.1 header, 4.1.2 question).
OK_QUERY = bytes.fromhex("4242 0100 0001 0000 0000 0000 026f6b 0474657374 00 0001 0001")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(OK_QUERY, ("127.0.0.1", port))
            return sock.recv(512)[:2] == OK_QUERY[:2]
        except OSError:
            return False


@contextlib.contextmanager
def start_dnsmasq() -> Iterator[int]:
    """Run dnsmasq on 127.0.0.1 (UDP and TCP) until the block ends; yields its port.

    Skips the test when dnsmasq is not installed (Debian package ``dnsmasq-base``).
    """
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    port = free_port()
    argv = [
        DNSMASQ,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--pid-file",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--address=/ok.test/192.0.2.7",
        "--mx-host=ok.test,mail.ok.test,10",
        "--address=/nx.test/",
        *(f"--txt-record=big.test,{i:02d}{'x' * 98}" for i in range(12)),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                stderr = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
                raise RuntimeError(f"dnsmasq did not start on 127.0.0.1:{port}: {stderr.strip()}")
            time.sleep(0.05)
        yield port
    finally:
        stop_process(proc)
