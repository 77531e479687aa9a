"""TLS verification modes of ``https`` checks (`checks.protocols.tls`): ``none``, ``chain``, ``full``,
against a self-signed backend and one whose certificate a CA of the test signed.

``chain`` is what ldirectord 4.12 on Debian 12 does (LWP with ``verify_hostname => 0``: the
chain is verified, the name is not)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from checkhelpers import certificate, ec_key, server_context, write_pem

from checks.base import CheckTarget, run_check
from checks.spec import CheckSpec

pytest.importorskip("cryptography.x509")

LEAF_NAME = "www.example.com"


@dataclass
class Pki:
    ca: Path  # the CA's certificate (PEM): the ca_file of the checks
    self_signed: ssl.SSLContext  # server context: a self-signed certificate for LEAF_NAME
    ca_signed: ssl.SSLContext  # server context: a leaf for LEAF_NAME signed by the CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec_key()
    ca_cert = certificate("directord test CA", ca_key, ca=True, key_ids=True)
    write_pem(ca_cert, directory / "ca.pem")
    leaf_key = ec_key()
    leaf = certificate(LEAF_NAME, leaf_key, "directord test CA", ca_key, ca=False, names=(LEAF_NAME,), key_ids=True)
    own_key = ec_key()
    own = certificate(LEAF_NAME, own_key, ca=False, names=(LEAF_NAME,), key_ids=True)
    return Pki(
        ca=directory / "ca.pem",
        self_signed=server_context(directory, "self", own, own_key),
        ca_signed=server_context(directory, "leaf", leaf, leaf_key),
    )


@dataclass
class Backend:
    port: int = 0
    requests: int = 0
    server_names: list[str | None] = field(default_factory=list)


@contextlib.asynccontextmanager
async def https_backend(context: ssl.SSLContext):
    """An HTTPS server on 127.0.0.1 answering ``200 all ok``; records the SNI names it was sent."""
    backend = Backend()

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        backend.server_names.append(name)

    context.sni_callback = sni

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            backend.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nall ok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    backend.port = srv.sockets[0].getsockname()[1]
    try:
        yield backend
    finally:
        srv.close()
        await srv.wait_closed()


async def check(backend: Backend, **spec: object):
    settings = CheckSpec(type="https", timeout=3.0, expect_body="all ok", **spec)  # type: ignore[arg-type]
    target = CheckTarget("k", "rs", None, 443, "127.0.0.1", backend.port, settings)
    return await run_check(target, None)


# --- none: any certificate --------------------------------------------------------------------


async def test_none_passes_self_signed_and_ca_signed(pki):
    for context in (pki.self_signed, pki.ca_signed):
        async with https_backend(context) as backend:
            result = await check(backend, verify_tls="none")
        assert (result.ok, result.reason) == (True, "HTTP 200"), result
        assert backend.requests == 1


# --- chain: the CA, not the name (ldirectord 4.12 on Debian 12) ----------------------------------


async def test_chain_fails_self_signed(pki):
    async with https_backend(pki.self_signed) as backend:
        result = await check(backend, verify_tls="chain", ca_file=str(pki.ca))
    assert (result.ok, result.reason) == (False, "TLS certificate verify failed: self-signed certificate")
    assert backend.requests == 0


async def test_chain_passes_ca_signed_whatever_the_name(pki):
    async with https_backend(pki.ca_signed) as backend:
        by_address = await check(backend, verify_tls="chain", ca_file=str(pki.ca))
        wrong_name = await check(backend, verify_tls="chain", ca_file=str(pki.ca), sni="other.example.org")
    assert (by_address.ok, by_address.reason) == (True, "HTTP 200"), by_address
    assert (wrong_name.ok, wrong_name.reason) == (True, "HTTP 200"), wrong_name
    assert backend.server_names == [None, "other.example.org"]  # no SNI for an address


async def test_chain_fails_ca_signed_without_its_ca(pki):
    async with https_backend(pki.ca_signed) as backend:
        result = await check(backend, verify_tls="chain")  # the system's CAs only
    assert (result.ok, result.reason) == (
        False,
        "TLS certificate verify failed: unable to get local issuer certificate",
    )


# --- full: the CA and the name ---------------------------------------------------------------------


async def test_full_passes_when_the_name_matches(pki):
    async with https_backend(pki.ca_signed) as backend:
        by_sni = await check(backend, verify_tls="full", ca_file=str(pki.ca), sni=LEAF_NAME)
        by_host = await check(backend, verify_tls="full", ca_file=str(pki.ca), host=f"{LEAF_NAME}:8443")
    assert (by_sni.ok, by_sni.reason) == (True, "HTTP 200"), by_sni
    assert (by_host.ok, by_host.reason) == (True, "HTTP 200"), by_host
    assert backend.server_names == [LEAF_NAME, LEAF_NAME]


async def test_full_fails_on_a_wrong_name(pki):
    async with https_backend(pki.ca_signed) as backend:
        wrong = await check(backend, verify_tls="full", ca_file=str(pki.ca), sni="other.example.org")
        by_address = await check(backend, verify_tls="full", ca_file=str(pki.ca))
    assert not wrong.ok
    assert (
        wrong.reason
        == "TLS certificate verify failed: Hostname mismatch, certificate is not valid for 'other.example.org'."
    )
    assert not by_address.ok
    assert (
        by_address.reason
        == "TLS certificate verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'."
    )
    assert backend.requests == 0


async def test_full_fails_self_signed_even_with_the_right_name(pki):
    async with https_backend(pki.self_signed) as backend:
        result = await check(backend, verify_tls="full", ca_file=str(pki.ca), sni=LEAF_NAME)
    assert (result.ok, result.reason) == (False, "TLS certificate verify failed: self-signed certificate")


def test_modes_on_uvloop(pki):
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[tuple[bool, str]]:
        async with https_backend(pki.self_signed) as backend:
            results = [await check(backend, verify_tls="none"), await check(backend, verify_tls="chain")]
        async with https_backend(pki.ca_signed) as backend:
            results.append(await check(backend, verify_tls="chain", ca_file=str(pki.ca)))
            results.append(await check(backend, verify_tls="full", ca_file=str(pki.ca), sni=LEAF_NAME))
            results.append(await check(backend, verify_tls="full", ca_file=str(pki.ca), sni="other.example.org"))
        return [(r.ok, r.reason) for r in results]

    assert uvloop.run(main()) == [
        (True, "HTTP 200"),
        (False, "TLS certificate verify failed: self-signed certificate"),
        (True, "HTTP 200"),
        (True, "HTTP 200"),
        (False, "TLS certificate verify failed: Hostname mismatch, certificate is not valid for 'other.example.org'."),
    ]
