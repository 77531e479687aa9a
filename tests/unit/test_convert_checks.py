"""`directord convert`: what each ldirectord check becomes, and ``--strict``.

Expected values come from ldirectord 4.12's code (``/usr/sbin/ldirectord``: ``_check_real``,
``check_dns``, ``check_radius``, ``check_sip``, ``check_sql``, ``check_smtp``, ``check_ftp``,
``check_pop``, ``check_imap``, ``check_nntp``, ``check_ldap``, ``check_simpletcp``,
``check_ping``) and the Perl clients it uses (Net::SMTP, Net::FTP, Mail::POP3Client,
Net::IMAP::Simple, Net::DNS, IO::Socket::SSL's client defaults).
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
import re2
import yaml

from checks.protocols.dialogue import ldirectord_dialogue
from director.cli import main as cli_main
from director.config import parse_config
from director.convert import ConvertError, convert_files, convert_text

DATA = Path(__file__).resolve().parents[1] / "data" / "ldirectord"


def conv(text: str):
    """Convert a dedented ldirectord.cf text; return (virtual_services, issues)."""
    result = convert_text(textwrap.dedent(text), "t.cf")
    return yaml.safe_load(result.text)["virtual_services"], result.issues


def check_of(block: str, port: int = 80, protocol: str = "tcp"):
    """The converted check and the issues of one virtual ``VIP:port`` with ``block``'s lines."""
    text = f"virtual=192.168.6.240:{port}\n\treal=192.168.6.2:{port} gate\n\tprotocol={protocol}\n" + "".join(
        f"\t{line}\n" for line in block.strip().splitlines()
    )
    services, issues = conv(text)
    return services[0]["check"], issues


def weaker(issues) -> list[str]:
    return [str(i) for i in issues if i.weaker]


def uncomment_samples(text: str) -> str:
    """Debian's example ldirectord.cf with every sample virtual service uncommented.

    Each ``#virtual=``/``#virtual6=`` line and the ``#<TAB>`` lines after it lose their ``#``
    (lines commented twice, ``#<TAB>#persistent=600``, stay comments).  Three edits make the
    file one ldirectord itself accepts: the range sample gets its own VIP (192.168.6.241; as
    shipped it repeats the first sample's 192.168.6.240:80, a duplicate virtual), the SQL
    samples' host names ``sql01->sql03`` become addresses, and the SIP sample's
    ``192.168.6.2::5060`` its single colon.
    """
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        if re.match(r"#\s*virtual6?\s*=", line):
            in_block = True
            line = line[1:]
            if out and out[-1].startswith("# and a single real server"):
                line = line.replace("192.168.6.240:80", "192.168.6.241:80")
        elif in_block and line.startswith("#\t"):
            line = line[1:]
        else:
            in_block = False
        out.append(line)
    text = "\n".join(out) + "\n"
    return text.replace("real=sql01->sql03:", "real=192.168.10.1->192.168.10.3:").replace("::5060 gate", ":5060 gate")


@pytest.fixture
def debian_all(tmp_path) -> Path:
    path = tmp_path / "ldirectord.cf"
    path.write_text(uncomment_samples((DATA / "debian-example.cf").read_text()))
    return path


# --- each service type -----------------------------------------------------------------------


def steps(service: str, login: str = "", passwd: str = "") -> list[dict[str, str]]:
    """The YAML ``dialogue`` convert writes for ldirectord's ``service`` check: the steps of
    checks.protocols.dialogue.ldirectord_dialogue (whose content test_checks_dialogue.py pins), one mapping each."""
    return [{kind: text} for kind, text in ldirectord_dialogue(service, login, passwd, "/", "")]


def test_smtp_and_submission_dialogue():
    for svc, port in (("smtp", 25), ("submission", 587)):
        c, issues = check_of(f"service={svc}", port)
        assert c["type"] == "tcp" and "tls" not in c
        assert c["dialogue"] == steps(svc)
        assert c["dialogue"][2] == {"send": "EHLO localhost.localdomain\r\n"}  # the YAML shape, once
        assert not weaker(issues)


def test_ftp_logs_in_or_downloads_and_matches():
    c, issues = check_of("service=ftp", 21)
    assert c["dialogue"] == steps("ftp") and not weaker(issues)
    # with a receive pattern ldirectord downloads the request and matches it: the ftp check does
    c, issues = check_of('service=ftp\nlogin="bob"\npasswd="pw"\nrequest="welcome.msg"\nreceive="test"', 21)
    got = (c["type"], c["login"], c["password"], c["query"], c["expect"])
    assert got == ("ftp", "bob", "pw", "/welcome.msg", "test")
    assert "dialogue" not in c and not weaker(issues)
    c, issues = check_of('service=ftp\nrequest="welcome.msg"\nreceive="(a)\\1"', 21)
    assert (c["type"], c["login"], c.get("expect")) == ("ftp", "anonymous", None)
    assert [w.split("directord ")[-1] for w in weaker(issues)][0].startswith("downloads it only")


@pytest.mark.parametrize(("svc", "tls"), [("ldap", False), ("ldaps", True)])
def test_ldap_binds_and_reads_the_requested_entry(svc, tls):
    c, issues = check_of(f'service={svc}\nrequest="dc=example,dc=com"\nreceive="^dc=example"', 389)
    got = (c["type"], c["query"], c["expect"], c.get("tls", False))
    assert got == ("ldap", "dc=example,dc=com", "^dc=example", tls)
    assert "login" not in c and not weaker(issues)  # an anonymous bind, as ldirectord without login and passwd
    c, _ = check_of(f'service={svc}\nlogin="cn=admin"\npasswd="pw"', 389)
    assert (c["login"], c["password"], c["query"]) == ("cn=admin", "pw", "")
    c, _ = check_of(f'service={svc}\nlogin="cn=admin"', 389)
    assert "login" not in c  # a login without passwd binds anonymously (check_ldap)


@pytest.mark.parametrize("svc,port,tls", [("pop", 110, False), ("pops", 995, True)])
def test_pop_greeting_then_user_pass(svc, port, tls):
    c, _ = check_of(f"service={svc}", port)
    assert c["dialogue"] == steps(svc)
    assert c.get("tls", False) is tls and c.get("verify_tls") == ("full" if tls else None)
    c, issues = check_of(f'service={svc}\nlogin="u"\npasswd="p"', port)
    assert c["dialogue"] == steps(svc, "u", "p") and not weaker(issues)


@pytest.mark.parametrize("svc,port,tls", [("imap", 143, False), ("imaps", 993, True)])
def test_imap_greeting_then_login(svc, port, tls):
    c, _ = check_of(f'service={svc}\nlogin="u"\npasswd="p\\"q"', port)
    assert c["dialogue"] == steps(svc, "u", 'p\\"q')  # the parser keeps the backslash as written
    assert c.get("tls", False) is tls


def test_nntp_banner():
    c, issues = check_of("service=nntp", 119)
    assert c["dialogue"] == steps("nntp") and not weaker(issues)


def test_dns_query_from_request_expect_from_receive():
    c, issues = check_of('service=dns\nrequest="www.example.com"\nreceive="192\\.0\\.2\\.1"', 53, "udp")
    assert (c["type"], c["query_name"], c["query_type"], c["transport"], c["expect"]) == (
        "dns",
        "www.example.com",
        "A",
        "udp",
        r"192\.0\.2\.1",
    )
    assert not [i for i in issues if i.severity == "warning"]
    # An address: Net::DNS's search asks for its PTR record; TCP service: usevc.
    c, _ = check_of('service=dns\nrequest="192.0.2.1"\nreceive="^ns1\\.example\\.com$"', 53, "tcp")
    assert (c["query_name"], c["query_type"], c["transport"]) == ("1.2.0.192.in-addr.arpa.", "PTR", "tcp")
    # ^ and $ anchor to the record's data (last on its zone-file line, names end with a dot).
    assert c["expect"] == r"(?m)\s(?:ns1\.example\.com)\.?$"
    pattern = re2.compile(c["expect"])
    assert pattern.search("1.2.0.192.in-addr.arpa. 300 IN PTR ns1.example.com.\n")
    assert not pattern.search("1.2.0.192.in-addr.arpa. 300 IN PTR xns1.example.com.\n")


def test_dns_per_real_pair_overrides_the_query():
    services, _ = conv(
        'virtual=192.168.6.240:53\n\treal=192.168.6.2:53 gate\n\treal=192.168.6.3:53 gate 1 "b.example", "10.0.0.2"\n'
        '\trequest="a.example"\n\treceive="10.0.0.1"\n'
    )
    (svc,) = services
    assert svc["check"]["query_name"] == "a.example" and svc["check"]["expect"] == "10.0.0.1"
    assert "check" not in svc["real_servers"][0]
    assert svc["real_servers"][1]["check"] == {"query_name": "b.example", "expect": "10.0.0.2"}


def test_radius_sip_sql():
    c, _ = check_of('service=radius\nlogin="u"\npasswd="p"\nsecret="s"\nchecktimeout=2', 1812, "udp")
    assert {k: c[k] for k in ("type", "login", "password", "secret", "timeout")} == {
        "type": "radius",
        "login": "u",
        "password": "p",
        "secret": "s",
        "timeout": 2,
    }
    c, _ = check_of('service=sip\nlogin="probe@example.com"', 5060, "udp")
    assert (c["type"], c["login"], c["expect"]) == ("sip", "probe@example.com", r"^SIP/2\.0 200 OK")
    for svc, port in (("mysql", 3306), ("pgsql", 5432), ("oracle", 1521)):
        c, issues = check_of(f'service={svc}\nlogin="r"\npasswd="p"\ndatabase="d"\nrequest="SELECT 1"', port)
        assert {k: c[k] for k in ("type", "login", "password", "database", "query")} == {
            "type": svc,
            "login": "r",
            "password": "p",
            "database": "d",
            "query": "SELECT 1",
        }
        assert not weaker(issues)


def test_sip_over_tcp_is_an_options_dialogue():
    c, _ = check_of('service=sip\nlogin="probe@example.com"', 5060, "tcp")
    assert c["type"] == "tcp" and c["dialogue"] == steps("sip", "probe@example.com")


@pytest.mark.parametrize(
    "block,port,protocol,needle",
    [
        # checks ldirectord never passes
        ("service=radius", 1812, "udp", "t.cf:1: secret: a radius check without secret"),
        ('service=mysql\nrequest="SELECT 1"', 3306, "tcp", "t.cf:1: login: a mysql check needs login= and request="),
        ('service=pgsql\nlogin="u"', 5432, "tcp", "t.cf:1: request: a pgsql check needs login= and request="),
        ('service=oracle\nlogin="u"\nrequest="x"', 1521, "tcp", "t.cf:1: database: an oracle check needs database="),
        ('service=oracle\nlogin="u"\ndatabase="a)("\nrequest="x"', 1521, "tcp", "t.cf:6: database: an oracle SID is"),
        # settings a dialogue cannot carry (checks.protocols.dialogue.SettingError), at their own line
        ('service=pop\nlogin="bob\x00"\npasswd="pw"', 110, "tcp", "t.cf:5: login: login must not hold a line break"),
        ('service=imap\nlogin="bob"\npasswd="p\x00w"', 143, "tcp", "t.cf:6: passwd: passwd must not hold a line break"),
        ('service=ftp\npasswd="\u20ac"', 21, "tcp", "t.cf:5: passwd: passwd must be Latin-1 text"),
        ('service=sip\nlogin="a b@example.com"', 5060, "tcp", "t.cf:5: login: sip login must be user@host"),
        ('service=simpletcp\nrequest="\u20ac"', 9000, "tcp", "t.cf:5: request: request must be Latin-1 text"),
        ('service=simpletcp\nrequest="\u20ac"', 9000, "udp", "t.cf:5: request: request must be Latin-1 text"),
    ],
)
def test_conversion_errors_of_one_check(block, port, protocol, needle):
    text = f"virtual=192.168.6.240:{port}\n\treal=192.168.6.2:{port} gate\n\tprotocol={protocol}\n" + "".join(
        f"\t{line}\n" for line in block.splitlines()
    )
    with pytest.raises(ConvertError) as info:
        convert_text(text, "t.cf")
    errors = [str(e) for e in info.value.issues if e.severity == "error"]
    assert len(errors) == 1 and errors[0].startswith(needle), errors
    assert "p\\x00w" not in str(info.value)  # a password is not quoted


def test_a_per_real_request_a_dialogue_cannot_carry_is_an_error_at_the_real_line():
    text = (
        'virtual=192.168.6.240:9000\n\treal=192.168.6.2:9000 gate\n\treal=192.168.6.3:9000 gate 1 "\u20ac", "x"\n'
        '\tservice=simpletcp\n\trequest="PING"\n'
    )
    with pytest.raises(ConvertError) as info:
        convert_text(text, "t.cf")
    assert [str(e) for e in info.value.issues if e.severity == "error"] == [
        "t.cf:3: real: request must be Latin-1 text (it is sent one byte per character)"
    ]


def test_simpletcp_over_tcp_and_udp():
    c, _ = check_of('service=simpletcp\nrequest="PING\\n"\nreceive="^PONG$"', 9000)
    assert c["dialogue"] == [{"send": "PING\n"}, {"expect": "(?m)^PONG$"}]
    c, _ = check_of('service=simpletcp\nrequest="PING"\nreceive="PONG"', 9000, "udp")
    assert (c["type"], c["send"], c["expect"]) == ("udp", "PING", "(?m)PONG")


def test_ping_and_connect_on_udp_are_icmp_echo():
    c, issues = check_of("checktype=ping\nchecktimeout=2", 8082)
    assert (c["type"], c["timeout"]) == ("ping", 2) and "port" not in c and not weaker(issues)
    c, _ = check_of("checktype=connect", 9999, "udp")
    assert c["type"] == "ping"


def test_check_on_the_other_protocol_is_a_ping_listed_as_weaker():
    # Authen::Radius always speaks UDP: a TCP virtual's radius check has no directord counterpart.
    c, issues = check_of('service=radius\nsecret="s"', 1812, "tcp")
    assert c["type"] == "ping" and "secret" not in c
    (line,) = weaker(issues)
    assert "service radius" in line and "ldirectord runs its radius check over UDP" in line


def test_on_none_off_and_no_service_are_not_weaker():
    for block in ("checktype=on", "service=none", "checktype=off"):
        c, issues = check_of(block, 8080)
        assert c["type"] in ("none", "external") and not weaker(issues)


# --- the weaker-check list and --strict ---------------------------------------------------------


def test_debian_example_with_every_sample_uncommented(debian_all, tmp_path, capsys):
    result = convert_files(str(debian_all))
    services = yaml.safe_load(result.text)["virtual_services"]
    assert len(services) == 20
    types = [s["check"]["type"] for s in services]
    # Only the sample written checktype=on / service=none is unchecked, as in ldirectord.
    assert types.count("none") == 1
    assert types == [
        "http",
        "http",
        "http",
        "https",
        "ftp",
        "tcp",
        "tcp",
        "tcp",
        "tcp",
        "ldap",
        "tcp",
        "dns",
        "mysql",
        "pgsql",
        "oracle",
        "none",
        "ping",
        "radius",
        "sip",
        "tcp",
    ]
    assert all("dialogue" in s["check"] for s in services if s.get("port") in (25, 587, 110, 143, 119))
    oracle = services[types.index("oracle")]["check"]
    assert {k: oracle[k] for k in ("login", "password", "database", "query")} == {
        "login": "readuser",
        "password": "genericpassword",
        "database": "portal",
        "query": "SELECT * FROM link",
    }
    # directord checks every Debian sample as much as ldirectord does.
    assert weaker(result.issues) == []
    # The written file passes `directord check` (the loader refuses the mysql, pgsql and
    # oracle checks where their drivers are missing: this test runs where they are installed).
    pytest.importorskip("oracledb")
    out = tmp_path / "directord.yaml"
    assert cli_main(["convert", "--ldirectord", str(debian_all), "-o", str(out)]) == 0
    assert "weaker" not in capsys.readouterr().err
    assert cli_main(["check", "-c", str(out)]) == 0
    assert os.stat(out).st_mode & 0o777 == 0o600  # it holds the SQL and RADIUS passwords
    parse_config(out.read_text(), str(out))
    # --strict passes on the whole example.
    assert cli_main(["convert", "--strict", "--ldirectord", str(debian_all), "-o", str(tmp_path / "s.yaml")]) == 0
    assert "weaker" not in capsys.readouterr().err
    assert (tmp_path / "s.yaml").read_text() == out.read_text()


PROXY_AND_PERL_RECEIVE = """\
virtual=192.168.84.5:3128
\treal=10.0.1.4:3128 masq
\tservice=http_proxy
\trequest="http://www.example.com/"

virtual=192.168.6.240:80
\treal=192.168.6.2:80 gate
\tservice=http
\treceive="(ok)\\1"
"""


def test_strict_refuses_http_proxy_and_a_perl_only_receive(tmp_path, capsys):
    cf = tmp_path / "ldirectord.cf"
    cf.write_text(PROXY_AND_PERL_RECEIVE)
    out = tmp_path / "directord.yaml"
    assert cli_main(["convert", "--strict", "--ldirectord", str(cf), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    assert (
        f"error: {cf}:1: check: 192.168.84.5:3128/tcp, service http_proxy: weaker check than ldirectord's: "
        "ldirectord fetches 'http://www.example.com/' through the real server as an HTTP proxy; directord "
        "connects only" in err
    )
    assert (
        f"error: {cf}:6: check: 192.168.6.240:80/tcp, service http: weaker check than ldirectord's: ldirectord "
        "matches the receive pattern '(ok)\\\\1' (line 9) on the body; directord checks the status only" in err
    )
    assert "2 weaker checks than ldirectord's (--strict); nothing written" in err
    # Without --strict: the same two lines as warnings, and the file is written.
    assert cli_main(["convert", "--ldirectord", str(cf), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {cf}:1: check: 192.168.84.5:3128/tcp, service http_proxy: weaker check" in err
    assert f"warning: {cf}:6: check: 192.168.6.240:80/tcp, service http: weaker check" in err
    assert "2 weaker checks than ldirectord's (listed above; --strict refuses them)" in err
    assert out.exists() and os.stat(out).st_mode & 0o777 == 0o644
    assert cli_main(["check", "-c", str(out)]) == 0


def test_strict_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli_main(["convert", "--help"])
    assert "--strict" in capsys.readouterr().out
