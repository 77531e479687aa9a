"""bench/check_cpu.py's HTTPS variant: the configurations each system is given for
``--scheme https`` (written by detection.make_daemon, nothing started) and the farm serving
TLS on the backends' port."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import check_cpu  # noqa: E402
import detection as det  # noqa: E402
import incumbents as inc  # noqa: E402

SVC = inc.Service(det.VIP, det.PORT, (det.rip(0), det.rip(1)), "nat")


def written(system: str, scheme: str, workdir: Path) -> str:
    """The configuration text detection.make_daemon writes for check_cpu's ``system``."""
    d = det.make_daemon(det.Topo("unused", 2), check_cpu.SYSTEMS[system], SVC, workdir, scheme)
    return Path(d.marker).read_text()


def test_https_configurations_check_over_tls_without_verification(tmp_path):
    from director.config import load_config

    ka = written("keepalived", "https", tmp_path / "ka")
    assert ka.count("    SSL_GET {\n") == 2 and "HTTP_GET" not in ka
    assert "SSL {" not in ka  # no ca: keepalived does not verify the certificate
    assert "      url {\n        path /healthz\n        status_code 200\n      }\n      connect_timeout 1\n" in ka
    assert ka.count("{") == ka.count("}")
    ld = written("ldirectord", "https", tmp_path / "ld")
    assert "\tservice=https\n" in ld and "\tchecktype=negotiate\n" in ld and "service=http\n" not in ld
    assert ld.startswith("checkinterval=1\nchecktimeout=1\n")
    dd = written("directord", "https", tmp_path / "dd")
    assert "    check: {type: https, path: /healthz, verify_tls: none}\n" in dd
    cfg = load_config(str(tmp_path / "dd" / "directord.yaml"))  # the project's own loader takes it
    (vs,) = cfg.services
    assert vs.check.type == "https" and vs.check.verify_tls == "none"


def test_http_configurations_keep_the_plain_checks(tmp_path):
    assert written("keepalived", "http", tmp_path / "ka").count("    HTTP_GET {\n") == 2
    assert "\tservice=http\n" in written("ldirectord", "http", tmp_path / "ld")
    assert "    check: {type: http, path: /healthz}\n" in written("directord", "http", tmp_path / "dd")
    assert check_cpu.SETTINGS["http"]["keepalived"].startswith("HTTP_GET")
    assert check_cpu.SETTINGS["https"]["keepalived"].startswith("SSL_GET")


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed (apt-get install keepalived)")
def test_keepalived_accepts_the_ssl_get_configuration(tmp_path):
    conf = tmp_path / "keepalived.conf"
    conf.write_text(written("keepalived", "https", tmp_path / "ka"))
    r = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def directord_spec(workdir: Path):
    """The check of the configuration check_cpu gives directord with ``--scheme https``."""
    from director.config import load_config

    written("directord", "https", workdir)
    return load_config(str(workdir / "directord.yaml")).services[0].check


def check_in(ns: str, spec):
    """One check of ``10.79.0.1:8443`` with ``spec`` (`checks.base.run_check`) from inside ``ns``."""
    from checks.base import CheckTarget, run_check
    from director.lab.netns import call_in_netns

    target = CheckTarget("rs", "rs 10.79.0.1:8443", None, 0, "10.79.0.1", 8443, spec)
    return call_in_netns(ns, asyncio.run, run_check(target))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl not installed (apt-get install openssl)"
)


@pytest.fixture
def tls_farm(tmp_path):
    """The farm serving HTTPS on ``10.79.0.1:8443`` in a namespace of its own: ``(ns, (cert, key))``."""
    from director.lab import netns as N

    tls = (tmp_path / "cert.pem", tmp_path / "key.pem")
    inc.self_signed_cert(*tls)
    pre = f"bfarmtls{os.getpid()}"
    ns = f"{pre}-farm"
    N.cleanup_netns(pre)
    N.create_netns(ns)
    proc = None
    try:
        N.exec_in_netns(ns, ["ip", "link", "set", "lo", "up"])
        N.add_address(ns, "lo", "10.79.0.1/32")
        argv = [sys.executable, inc.__file__, "farm", "--port", "8443", "--tls-cert", str(tls[0])]
        argv += ["--tls-key", str(tls[1]), "10.79.0.1"]
        proc = N.run_in_netns(ns, argv, stdout=subprocess.PIPE, text=True, env=inc.repo_env())
        assert proc.stdout.readline().startswith("listening")
        yield ns, tls
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        N.cleanup_netns(pre)  # <pre>-*: the namespace itself


@needs_root
@needs_openssl
def test_farm_serves_https_on_the_backend_port(tls_farm, tmp_path):
    from director.lab import netns as N

    ns, (cert, _key) = tls_farm

    def connect() -> socket.socket:
        s = N.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(("10.79.0.1", 8443))
        return s

    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # as the checks: no verification
    with client.wrap_socket(connect()) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := s.recv(1024):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"\r\n\r\nok\n")
    assert b"BEGIN CERTIFICATE" in cert.read_bytes()

    with connect() as s:  # plain HTTP on the TLS port: a failed handshake, no HTTP reply
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        try:
            plain = s.recv(1024)
        except ConnectionResetError:
            plain = b""
    assert not plain.startswith(b"HTTP/")
    time.sleep(0.2)
    assert inc.farm_requests(ns) == 1  # only the request over TLS reached the handler

    # directord's own check, as check_cpu configures it, passes; its plain HTTP check fails
    https = directord_spec(tmp_path / "dd")
    assert check_in(ns, https).ok
    assert not check_in(ns, dataclasses.replace(https, type="http")).ok
    assert inc.farm_requests(ns) == 2


#: ldirectord 4.12's check_http request (its user agent, ``verify_hostname => 0``), printing the status.
LWP_GET = (
    "use LWP::UserAgent; my $ua = new LWP::UserAgent(ssl_opts => { verify_hostname => 0 });"
    ' print $ua->request(HTTP::Request->new("GET", "https://10.79.0.1:8443/healthz"))->status_line;'
)


def lwp_https() -> bool:
    return subprocess.run(["perl", "-MLWP::Protocol::https", "-e", "1"], capture_output=True).returncode == 0


@needs_root
@needs_openssl
@pytest.mark.skipif(shutil.which("perl") is None or not lwp_https(), reason="no perl LWP::Protocol::https")
def test_ldirectord_is_given_the_farm_certificate_its_lwp_insists_on(tls_farm, tmp_path):
    ns, tls = tls_farm
    d = det.make_daemon(det.Topo("unused", 1, tls), "ldirectord-tuned", SVC, tmp_path / "ld", "https")
    assert d.env is not None and d.env["PERL_LWP_SSL_CA_FILE"] == str(tls[0])

    def get(env) -> str:
        argv = ["ip", "netns", "exec", ns, "perl", "-e", LWP_GET]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).stdout

    plain_env = {k: v for k, v in os.environ.items() if k not in ("PERL_LWP_SSL_CA_FILE", "HTTPS_CA_FILE")}
    assert "certificate verify failed" in get(plain_env)  # why it needs the certificate
    assert get(d.env).startswith("200")
    http = det.make_daemon(det.Topo("unused", 1, tls), "ldirectord-tuned", SVC, tmp_path / "ld-http", "http")
    assert http.env is None


@needs_root
@needs_openssl
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_main_gives_the_farm_a_certificate_for_https_only(scheme, tmp_path, monkeypatch):
    got = []

    def topo(prefix, n, tls=None):
        got.append(tls)
        raise RuntimeError("no lab here")

    monkeypatch.setattr(check_cpu.det, "Topo", topo)
    args = ["--systems", "directord", "--real-servers", "2", "--out-dir", str(tmp_path)]
    with pytest.raises(RuntimeError, match="no lab here"):
        check_cpu.main([*args, "--scheme", scheme] if scheme == "https" else args)
    if scheme == "http":
        assert got == [None] and not (tmp_path / "check_cpu").exists()
    else:
        ((cert, key),) = got
        assert cert.parent == key.parent == tmp_path / "check_cpu"
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)  # a usable pair
