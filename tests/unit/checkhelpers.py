"""What the tests of the check types (``test_checks*.py``) share: ports, targets, small servers
on loopback, certificates and a count of open descriptors.

* Ports: `free_port` (TCP), `free_udp_port`; `ipv6_loopback` and the mark `needs_ipv6`.
* Targets: `target` (a real server at ``rip:port``), `bare_target` and `run_checks` (targets
  run one after the other, results as tuples).
* Servers: `fake_server` (a hand-written TCP server: the hostile cases), its handler `silent`
  (accepts and never answers), `timed_against` (one check against such a server, timed),
  `udp_server` (answers each datagram with what a function returns), `ftp_server` (pyftpdlib's,
  in a thread), `wait_listening` and `stop_process` for a server process.
* Certificates (``cryptography``, imported when called): `ec_key`, `certificate` (self-signed or
  signed by a CA of the test), `write_pem`, `server_context`, `self_signed`.
* `open_fds`: the descriptors this process holds (the no-leak tests).

Everything listens on loopback only. Times are seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from checks.base import CheckTarget, run_check
from checks.spec import CheckSpec

# --- ports -------------------------------------------------------------------------------------


def _unused_port(host: str, kind: socket.SocketKind) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` (an IPv4 or IPv6 address): bound, then released.

    Raises OSError when ``host`` cannot be bound (e.g. ``::1`` without IPv6)."""
    return _unused_port(host, socket.SOCK_STREAM)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody has bound at ``host``: bound, then released. Raises OSError as `free_port`."""
    return _unused_port(host, socket.SOCK_DGRAM)


def ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here (IPv6 compiled in and enabled on loopback)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


#: The mark of tests that need ``::1``.
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 on loopback")


def open_fds() -> int:
    """How many file descriptors this process holds (entries of ``/proc/self/fd``)."""
    return len(os.listdir("/proc/self/fd"))


# --- targets -----------------------------------------------------------------------------------


def target(spec: CheckSpec, port: int, rip: str = "127.0.0.1") -> CheckTarget:
    """The real server ``rip:port`` checked with ``spec``, behind the VIP 192.0.2.1 on the same port."""
    return CheckTarget(key=(rip, port), name=f"rs {rip}:{port}", vip="192.0.2.1", vport=port, rip=rip, rport=port,
                       spec=spec)  # fmt: skip


def bare_target(port: int, rip: str = "127.0.0.1", **spec: Any) -> CheckTarget:
    """The real server ``rip:port`` named ``rs``, without VIP, checked with ``CheckSpec(**spec)``."""
    return CheckTarget(key="rs", name="rs", vip=None, vport=0, rip=rip, rport=port, spec=CheckSpec(**spec))


def run_checks(targets: Sequence[CheckTarget]) -> list[tuple[bool, str, bool, float]]:
    """Run the checks of ``targets`` one after the other in a new event loop; for each
    ``(ok, reason, timed_out, duration in seconds)``."""

    async def scenario() -> list[tuple[bool, str, bool, float]]:
        results = []
        for one in targets:
            result = await run_check(one, None)
            results.append((result.ok, result.reason, result.timed_out, result.duration))
        return results

    return asyncio.run(scenario())


# --- servers -----------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
R = TypeVar("R")


@contextlib.asynccontextmanager
async def fake_server(handle: Handler, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    """A small hand-written TCP server at ``host:port`` (0: any free port) running ``handle``
    for each connection; yields its port.

    A connection error or cancellation inside ``handle`` ends the session quietly; the
    connection is closed when ``handle`` returns. At the end the server stops and the sessions
    still running are cancelled. Raises OSError when ``host:port`` cannot be bound."""
    tasks: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, host, port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def timed_against(handle: Handler, run: Callable[[int], Awaitable[R]]) -> tuple[R, float]:
    """Start ``fake_server(handle)`` and await ``run(port)`` against it; returns what ``run``
    returned and how long it took, in seconds (the server stops afterwards)."""
    async with fake_server(handle) as port:
        start = time.monotonic()
        result = await run(port)
        elapsed = time.monotonic() - start
    return result, elapsed


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A `fake_server` handler that reads and never answers; it ends when the client closes."""
    while await reader.read(1024):
        pass


class Responder(asyncio.DatagramProtocol):
    """The protocol of `udp_server`: answers each datagram with the datagrams ``respond(data)``
    returns (none: silence) and keeps what it received in ``received``."""

    def __init__(self, respond: Callable[[bytes], list[bytes]]) -> None:
        self.respond = respond
        self.received: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        for reply in self.respond(data):
            self.transport.sendto(reply, addr)


@contextlib.asynccontextmanager
async def udp_server(
    respond: Callable[[bytes], list[bytes]], host: str = "127.0.0.1"
) -> AsyncIterator[tuple[int, Responder]]:
    """A UDP server at ``host`` (any free port) answering each datagram with ``respond(datagram)``;
    yields ``(port, protocol)``, the `Responder` holding what arrived. Raises OSError when
    ``host`` cannot be bound."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: Responder(respond), local_addr=(host, 0))
    try:
        yield transport.get_extra_info("sockname")[1], protocol
    finally:
        transport.close()


@contextlib.contextmanager
def ftp_server(
    root: Path, *, anonymous: bool = False, banner: str | None = None, host: str = "127.0.0.1"
) -> Iterator[int]:
    """pyftpdlib's FTP server at ``host`` (any free port), in a thread and an I/O loop of its own
    (servers may run side by side); yields its port.

    User ``alice`` (password ``s3cret``) reads ``root``, and so does ``anonymous`` when
    ``anonymous``; a wrong password is answered at once; ``banner`` replaces the greeting's
    text. The thread is joined (at most 5 s) when the block ends."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user("alice", "s3cret", str(root), perm="elr")
    if anonymous:
        authorizer.add_anonymous(str(root))

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.auth_failed_timeout = 0.0  # answer a wrong password at once
    if banner is not None:
        Handler.banner = banner
    server = FTPServer((host, 0), Handler, ioloop=IOLoop())
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.serve_forever(timeout=0.02, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)


def wait_listening(port: int, process: subprocess.Popen[str], seconds: float = 10.0, *, name: str = "server") -> None:
    """Wait until a TCP connection to ``127.0.0.1:port`` succeeds, trying every 50 ms.

    Raises RuntimeError naming ``name`` when ``process`` exits first (with its standard error,
    when piped, as text) or when nothing listens within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} does not listen on port {port}")


def stop_process(process: subprocess.Popen[Any], seconds: float = 5.0) -> None:
    """End a server started by a test: SIGTERM, then SIGKILL when it has not exited within
    ``seconds``; reaps it and closes its standard error pipe, if any."""
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


# --- certificates ------------------------------------------------------------------------------


def ec_key() -> Any:
    """A new private key on the P-256 curve (``cryptography``'s EllipticCurvePrivateKey)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def certificate(
    subject: str,
    key: Any,
    issuer: str | None = None,
    issuer_key: Any = None,
    *,
    ca: bool | None = None,
    names: Sequence[str] = (),
    key_ids: bool = False,
) -> Any:
    """An X.509 certificate (``cryptography``'s Certificate) whose common name is ``subject``,
    for ``key``'s public key, valid from 5 minutes ago for one day, signed with SHA-256 by
    ``issuer_key`` under the common name ``issuer``; self-signed (by ``key``) when ``issuer`` is
    None.

    ``ca``: None, no basic constraints; else a critical basicConstraints with that CA flag.
    ``names``: the subjectAltName, an IP address as iPAddress and anything else as dNSName; none,
    no subjectAltName. ``key_ids``: a CA gets a critical keyUsage (keyCertSign, cRLSign) and a
    subjectKeyIdentifier, any other an authorityKeyIdentifier of ``issuer_key``.
    Raises ImportError without ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    if issuer is None:
        issuer, issuer_key = subject, key
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_ids and ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if names:
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    if key_ids and not ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_pem(cert: Any, cert_file: Path, key: Any = None, key_file: Path | None = None) -> None:
    """Write ``cert`` to ``cert_file`` as PEM, and ``key`` (unencrypted PKCS#8 PEM) to ``key_file``
    when both are given."""
    from cryptography.hazmat.primitives import serialization

    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None and key_file is not None:
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def server_context(directory: Path, stem: str, cert: Any, key: Any) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` with ``key``, written to ``directory`` as
    ``<stem>.pem`` and ``<stem>.key``."""
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    write_pem(cert, cert_file, key, key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def self_signed(cert_file: Path, key_file: Path, name: str, key: Any = None) -> None:
    """Write a self-signed certificate for ``name`` (common name; subjectAltName ``name`` and
    127.0.0.1, no basic constraints) and its key (a new P-256 one unless ``key`` is given) as PEM.
    Raises ImportError without ``cryptography``."""
    key = key if key is not None else ec_key()
    write_pem(certificate(name, key, names=(name, "127.0.0.1")), cert_file, key, key_file)
