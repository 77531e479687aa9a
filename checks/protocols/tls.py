"""TLS client contexts of the checks (``https``, TLS in a ``tcp`` dialogue).

`client_context` builds one `ssl.SSLContext` per verification mode and CA file and keeps it, so
checks share it (building a context and loading the system's CA store costs milliseconds; the
handshake itself does not reload it).  The modes (`checks.spec.TLSVerify`):

- ``none``: no verification at all (``CERT_NONE``): any certificate, even an expired or
  self-signed one, passes.
- ``chain``: the certificate must chain to a trusted CA (``CERT_REQUIRED``), its name is not
  compared.  This is what ldirectord's ``https`` checks do on Debian 12: its LWP user agent sets
  ``verify_hostname => 0``, which LWP::Protocol::https and IO::Socket::SSL turn into "verify the
  chain, not the name" (``SSL_verify_mode`` stays ``SSL_VERIFY_PEER``).
- ``full``: chain and name (``check_hostname``), the name being the SNI name given to
  `server_name` (RFC 6125 matching, done by OpenSSL).

Contexts use Python's defaults otherwise (TLS 1.2 at least, the default ciphers), and
`server_name` gives the name sent as SNI (RFC 6066 section 3) and checked by ``full``.
"""

from __future__ import annotations

import functools
import ssl

from checks.spec import CheckSpec, TLSVerify

__all__ = ["client_context", "server_name", "context_for"]


@functools.lru_cache(maxsize=64)
def client_context(verify: TLSVerify, ca_file: str | None = None) -> ssl.SSLContext:
    """The shared client context of a verification mode (`checks.spec.TLSVerify`) and CA file.

    Args:
        verify: ``none``, ``chain`` or ``full``.
        ca_file: PEM file of the trusted CAs for ``chain``/``full``; ``None`` means the
            system's store.  Ignored with ``none``.

    Raises:
        OSError: ``ca_file`` cannot be read (a missing file: ``FileNotFoundError``).
        ssl.SSLError: ``ca_file`` holds no usable certificate.
    """
    if verify == "none":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=ca_file)
    if verify == "chain":
        context.check_hostname = False
    return context


def server_name(spec: CheckSpec) -> str | None:
    """The TLS server name of a check: ``spec.sni``, else ``spec.host`` without its port
    (``www.example.com:8443`` -> ``www.example.com``, ``[2001:db8::1]:443`` -> ``2001:db8::1``),
    else ``None`` (no SNI; ``full`` then checks the RIP against the certificate's IP addresses)."""
    if spec.sni is not None:
        return spec.sni
    host = spec.host
    if host is None:
        return None
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def context_for(spec: CheckSpec) -> ssl.SSLContext:
    """`client_context` of ``spec.verify_tls`` and ``spec.ca_file``; same errors."""
    return client_context(spec.verify_tls, spec.ca_file)
