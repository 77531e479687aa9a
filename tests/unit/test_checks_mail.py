"""ldirectord's pop, pops, imap and imaps negotiate checks, as the dialogues `convert` writes
(`checks.protocols.dialogue.ldirectord_dialogue`), against a real POP3/IMAP server.

The real server is Debian's Dovecot (packages ``dovecot-imapd`` and ``dovecot-pop3d``,
test-only), started in the foreground from a configuration of its own on loopback: a
passwd-file with one user, Maildir storage in a temporary folder, POP3 and IMAP in clear and
over implicit TLS (a self-signed certificate).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkhelpers import free_port, self_signed, stop_process, target, wait_listening

from checks.base import CheckResult, run_check
from checks.protocols.dialogue import LDIRECTORD_IMPLICIT_TLS, ldirectord_dialogue
from checks.spec import CheckSpec

USER, PASSWORD = "checker", "s3cret pass"

DOVECOT_CONF = """\
protocols = imap pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
# no delay, and no growing penalty for the failed logins the tests make from loopback
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""


@dataclass
class Dovecot:
    ports: dict[str, int]  # ldirectord service (pop, pops, imap, imaps) -> port
    process: subprocess.Popen[str]
    folder: Path


@contextlib.contextmanager
def run_dovecot() -> Iterator[Dovecot]:
    """Dovecot on 127.0.0.1 with POP3, POP3S, IMAP and IMAPS on free ports, one user."""
    dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(dovecot).exists():
        pytest.skip("dovecot is not installed (Debian packages dovecot-imapd and dovecot-pop3d, test-only)")
    for protocol in ("imap", "pop3"):
        if not Path(f"/usr/lib/dovecot/{protocol}").exists():
            pytest.skip(f"dovecot's {protocol} server is not installed (Debian package dovecot-{protocol}d)")
    if os.geteuid() != 0:
        pytest.skip("dovecot runs its mail processes as nobody: needs root")
    pytest.importorskip("cryptography")
    # not under pytest's tmp_path: its parents are private to root, and the mail processes run
    # as nobody
    folder = Path(tempfile.mkdtemp(prefix="directord-dovecot-"))
    try:
        folder.chmod(0o755)
        self_signed(folder / "cert.pem", folder / "key.pem", "mail.test")
        (folder / "users").write_text(f"{USER}:{PASSWORD}\n")
        (folder / "home").mkdir()
        os.chown(folder / "home", 65534, 65534)
        ports = {name: free_port() for name in ("pop", "pops", "imap", "imaps")}
        conf = folder / "dovecot.conf"
        conf.write_text(
            DOVECOT_CONF.format(
                d=folder, imap=ports["imap"], imaps=ports["imaps"], pop3=ports["pop"], pop3s=ports["pops"]
            )
        )
        process = subprocess.Popen(
            [dovecot, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            for port in ports.values():
                wait_listening(port, process, name="dovecot")
            yield Dovecot(ports, process, folder)
        finally:
            stop_process(process, 10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with run_dovecot() as server:
        yield server


async def ldirectord_check(port: int, service: str, login: str = "", passwd: str = "", **fields) -> CheckResult:
    """One check of ``service`` as `convert` writes ldirectord's negotiate check of it."""
    steps = ldirectord_dialogue(service, login, passwd, "", "")
    assert steps is not None
    tls = service in LDIRECTORD_IMPLICIT_TLS
    spec = CheckSpec(type="tcp", dialogue=steps, tls=tls, verify_tls="none", timeout=fields.pop("timeout", 3.0))
    return await run_check(target(spec, port), None)


@pytest.mark.parametrize("service", ["pop", "pops", "imap", "imaps"])
async def test_login_passes_against_dovecot(dovecot, service):
    result = await ldirectord_check(dovecot.ports[service], service, USER, PASSWORD)
    assert result.ok, result.reason


@pytest.mark.parametrize("service", ["pop", "pops", "imap", "imaps"])
async def test_without_login_the_greeting_is_the_check(dovecot, service):
    result = await ldirectord_check(dovecot.ports[service], service)
    assert result.ok, result.reason


@pytest.mark.parametrize("service", ["pop", "pops", "imap", "imaps"])
async def test_wrong_password_fails_on_the_servers_answer(service):
    # Dovecot answers -ERR / "1 NO" and keeps the connection open: the dialogue's fail step ends
    # the check on that answer, as Mail::POP3Client and Net::IMAP::Simple return on it, not at
    # the time limit.  A Dovecot of its own: each failed login from an address makes the next
    # answers to that address slower (its auth penalty, up to 15 s)
    with run_dovecot() as dovecot:
        result = await ldirectord_check(dovecot.ports[service], service, USER, "not the password", timeout=5.0)
    assert not result.ok
    assert not result.timed_out, result.reason
    answer = '"-ERR [AUTH] Authentication failed."' if service.startswith("pop") else '"1 NO [AUTHENTICATIONFAILED]'
    assert answer in result.reason, result.reason


async def test_a_user_that_does_not_exist_fails():
    with run_dovecot() as dovecot:
        result = await ldirectord_check(dovecot.ports["imap"], "imap", "nobody-here", PASSWORD, timeout=5.0)
    assert not result.ok and not result.timed_out, result.reason


async def test_clear_text_check_against_the_tls_port_fails(dovecot):
    # imap's dialogue without TLS against the imaps listener: the greeting never comes in clear
    steps = ldirectord_dialogue("imap", USER, PASSWORD, "", "")
    spec = CheckSpec(type="tcp", dialogue=steps, timeout=1.0)
    result = await run_check(target(spec, dovecot.ports["imaps"]), None)
    assert not result.ok


async def test_checks_fail_once_dovecot_is_stopped():
    with run_dovecot() as server:
        before = await ldirectord_check(server.ports["imap"], "imap", USER, PASSWORD)
        stop_process(server.process, 10)
        after = {s: await ldirectord_check(server.ports[s], s, USER, PASSWORD) for s in server.ports}
    assert before.ok, before.reason
    assert all(not r.ok and not r.timed_out for r in after.values()), after
