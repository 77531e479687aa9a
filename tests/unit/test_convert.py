"""`directord convert`: ldirectord.cf and heartbeat files to directord YAML, directive by directive.

Expected values come from ldirectord 4.12's code (``/usr/sbin/ldirectord``:
``set_defaults``, ``read_config``, ``add_real_server``, ``ld_setup``,
``_remove_service``, ``fallback_find``) and heartbeat 3.0.6's ha.cf rules.
Every converted sample must load with directord's own loader.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from director.cli import main as cli_main
from director.config import load_config, parse_config
from director.config.ha import parse_duration
from director.convert import (
    MAX_INPUT_BYTES,
    QUIESCENT_NOTE,
    ConvertError,
    convert_files,
    convert_text,
    write_atomic,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "ldirectord"


def conv(text: str, **kwargs):
    """Convert a dedented ldirectord.cf text; return (parsed YAML, issues)."""
    result = convert_text(textwrap.dedent(text), "test.cf", **kwargs)
    return yaml.safe_load(result.text), result.issues


def service(text: str, index: int = 0, **kwargs):
    data, issues = conv(text, **kwargs)
    return data["virtual_services"][index], issues


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConvertError) as info:
        convert_text(textwrap.dedent(text), "test.cf")
    return [str(i) for i in info.value.errors]


def messages(issues, severity=None) -> str:
    return "\n".join(f"{i.severity}: {i}" for i in issues if severity is None or i.severity == severity)


WEB = """\
virtual=192.168.6.240:80
\treal=192.168.6.2:80 gate
"""


# --- defaults as ldirectord's code applies them -----------------------------------------


def test_defaults_follow_the_code():
    s, issues = service(WEB)
    assert s["scheduler"] == "wrr"
    assert s["on_failure"] == "remove"  # $QUIESCENT = "no" in set_defaults
    assert s["protocol"] == "tcp" and s["forwarding"] == "dr"
    check = s["check"]
    assert check["type"] == "http"  # negotiate, service from port 80
    assert check["interval"] == 10 and check["timeout"] == 30  # checkinterval 10, negotiatetimeout 30
    assert check["rise"] == 1 and check["fall"] == 1
    assert check["path"] == "/" and check["method"] == "GET"
    assert 200 in check["expect_status"] and 204 in check["expect_status"] and 301 not in check["expect_status"]
    assert s["real_servers"] == [{"address": "192.168.6.2", "port": 80, "weight": 1}]
    assert not messages(issues, "warning")


def test_output_says_the_quiescent_default_follows_the_code():
    text = convert_text(WEB, "x.cf").text
    flat = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert " ".join(QUIESCENT_NOTE.split()) in " ".join(flat.split())
    assert "manual" in flat and "code" in flat


@pytest.mark.parametrize("port,kind", [(443, "https"), (8080, "none"), (80, "http")])
def test_check_from_the_virtual_port(port, kind):
    s, _ = service(f"virtual=192.168.6.240:{port}\n\treal=192.168.6.2:{port} gate\n")
    assert s["check"]["type"] == kind
    if kind == "https":
        # LWP's verify_hostname => 0 leaves IO::Socket::SSL verifying the chain, not the name.
        assert s["check"]["verify_tls"] == "chain"


def test_port_53_is_udp_and_its_dns_check_is_a_dns_query():
    s, issues = service("virtual=192.168.6.240:53\n\treal=192.168.6.2:53 gate\n")
    assert s["protocol"] == "udp"
    c = s["check"]
    # check_dns with the default request "/": Net::DNS search('') asks for the root, type A.
    assert (c["type"], c["query_name"], c["query_type"], c["transport"]) == ("dns", ".", "A", "udp")
    assert "expect" not in c
    assert "test.cf:1: request: no receive pattern" in messages(issues, "warning")


# --- virtual -----------------------------------------------------------------------------


def test_virtual_service_name_port():
    s, _ = service("virtual=192.168.6.240:http\n\treal=192.168.6.2:http gate\n")
    assert s["port"] == 80 and s["real_servers"][0]["port"] == 80


def test_virtual_host_name_needs_a_resolver():
    assert any(
        "unresolvable host name" in e or "cannot resolve" in e
        for e in errors_of("virtual=www.example.com:80\n\treal=192.168.6.2:80 gate\n")
    )

    class Fake:
        def host(self, name, family):
            return {"www.example.com": "192.168.6.240", "192.168.6.2": "192.168.6.2"}.get(name)

        def port(self, name, protocol):
            return None

    s, issues = service("virtual=www.example.com:80\n\treal=192.168.6.2:80 gate\n", resolver=Fake())
    assert s["address"] == "192.168.6.240"
    assert "resolved now to 192.168.6.240" in messages(issues, "note")


def test_virtual6_and_real6():
    s, _ = service("virtual6=[2001:DB8::100]:80\n\treal6=[2001:db8::2]:80 gate 2\n\tpersistent=60\n\tnetmask=64\n")
    assert s["address"] == "2001:db8::100"
    assert s["real_servers"] == [{"address": "2001:db8::2", "port": 80, "weight": 2}]
    assert s["persistence"] == {"timeout": 60, "netmask": 64}


@pytest.mark.parametrize(
    "text,needle",
    [
        ("virtual=[2001:db8::1]:80\n\treal=192.168.6.2:80 gate\n", "virtual6"),
        ("virtual=192.168.6.240:80\n\treal6=[2001:db8::2]:80 gate\n", 'use "real"'),
        ("virtual6=[2001:db8::1]:80\n\treal=[2001:db8::2]:80 gate\n", 'use "real6"'),
        ("virtual6=[2001:db8::1]:80\n\treal6=[2001:db8::2]->[2001:db8::4]:80 gate\n", "IPv6"),
        ("virtual=!!\n", "invalid address for virtual server"),
    ],
)
def test_virtual_and_real_family_errors(text, needle):
    errs = errors_of(text)
    assert any(needle in e for e in errs), errs
    assert all(e.startswith("test.cf:") for e in errs)


def test_fwmark_virtual():
    s, issues = service("virtual=7\n\treal=192.168.6.2 gate\n\treal=192.168.6.3 gate 2\n")
    assert s["fwmark"] == 7 and s["family"] == "inet" and "address" not in s
    assert s["check"]["type"] == "none"  # service none for fwmark, check_none always up
    assert s["real_servers"] == [{"address": "192.168.6.2", "weight": 1}, {"address": "192.168.6.3", "weight": 2}]


def test_fwmark_http_check_port_from_checkport_or_service():
    s, _ = service("virtual=7\n\treal=192.168.6.2 gate\n\tservice=http\n\tcheckport=8080\n")
    assert s["check"]["type"] == "http" and s["check"]["port"] == 8080
    s, _ = service("virtual=7\n\treal=192.168.6.2 gate\n\tservice=https\n")
    assert s["check"]["port"] == 443


def test_protocol_fwm_only_for_fwmark():
    assert any("protocol must be fwm" in e for e in errors_of("virtual=7\n\treal=192.168.6.2 gate\n\tprotocol=tcp\n"))
    assert any("tcp or udp" in e for e in errors_of(WEB + "\tprotocol=fwm\n"))
    s, _ = service(WEB.replace(":80", ":9000") + "\tprotocol=udp\n\tchecktype=on\n")
    assert s["protocol"] == "udp"


def test_duplicate_virtual_is_an_error():
    assert any("duplicate virtual" in e for e in errors_of(WEB + WEB))


# --- real ---------------------------------------------------------------------------------


def test_real_range_weight_thresholds_and_request_receive():
    s, _ = service(
        "virtual=192.168.6.240:80\n"
        "\treal=192.168.6.2->192.168.6.4:80 gate 5\n"
        '\treal=192.168.6.9:80 gate 2 "ready.html", "ready" l:100 u:200\n'
    )
    rs = s["real_servers"]
    assert [r["address"] for r in rs] == ["192.168.6.2", "192.168.6.3", "192.168.6.4", "192.168.6.9"]
    assert all(r["weight"] == 5 for r in rs[:3])
    assert rs[3]["upper_threshold"] == 200 and rs[3]["lower_threshold"] == 100
    assert rs[3]["check"] == {"path": "/ready.html", "expect_body": "ready"}


@pytest.mark.parametrize(
    "line,needle",
    [
        ("real=192.168.6.4->192.168.6.2:80 gate", "first address must not be above"),
        ("real=192.168.6.2:80 route", "forward method must be gate, masq or ipip"),
        ("real=192.168.6.2:80 gate 1 junk", "invalid real server line"),
        ("real=192.168.6.2:80 gate 1 l:300 u:200", "lower threshold above the upper"),
        ("real=192.168.6.2:99999 gate", "invalid port"),
        # a range of the whole address space was expanded in memory until the host ran out of it
        ("real=0.0.0.1->255.255.255.255:80 gate", "has 4294967295 addresses; at most 4096 are converted"),
    ],
)
def test_real_errors(line, needle):
    errs = errors_of(f"virtual=192.168.6.240:80\n\t{line}\n")
    assert any(needle in e and e.startswith("test.cf:2:") for e in errs), errs


def test_real_servers_of_a_file_are_bounded():
    from director.convert.ldirectord import MAX_REALS

    lines = "".join(
        f"\treal=10.{i // 256}.{i % 256}.0->10.{i // 256}.{i % 256}.255:80 gate\n" for i in range(MAX_REALS // 256 + 1)
    )
    errs = errors_of(f"virtual=192.168.6.240:80\n{lines}")
    assert any(f"more than {MAX_REALS} real servers in the file" in e for e in errs), errs[:3]


def test_real_without_port_uses_the_virtual_port():
    s, issues = service("virtual=192.168.6.240:80\n\treal=192.168.6.2 gate\n\treal=192.168.6.3 masq\n")
    assert [r["port"] for r in s["real_servers"]] == [80, 80]
    assert "test.cf:3: real: no port with masq" in messages(issues, "warning")


def test_gate_keeps_the_virtual_port_but_checks_the_written_one():
    s, issues = service("virtual=192.168.6.240:80\n\treal=192.168.6.2:8080 gate\n")
    assert s["real_servers"][0]["port"] == 80
    assert s["real_servers"][0]["check"] == {"port": 8080}
    assert "kernel keeps the virtual port 80" in messages(issues, "note")


def test_masq_port_change_and_per_real_forwarding():
    s, _ = service(
        "virtual=192.168.6.240:80\n\treal=192.168.6.2:8080 masq\n\treal=192.168.6.3:8080 masq\n"
        "\treal=192.168.6.4:80 ipip\n"
    )
    assert s["forwarding"] == "nat"
    assert s["real_servers"][0] == {"address": "192.168.6.2", "port": 8080, "weight": 1}
    assert s["real_servers"][2]["forwarding"] == "tun"


def test_duplicate_real_is_left_out_with_a_warning():
    s, issues = service(WEB + "\treal=192.168.6.1->192.168.6.3:80 gate\n")
    assert [r["address"] for r in s["real_servers"]] == ["192.168.6.2", "192.168.6.1", "192.168.6.3"]
    assert "test.cf:3: real: real server 192.168.6.2:80 is already defined on line 2" in messages(issues)


# --- checks ---------------------------------------------------------------------------------


def test_checktype_connect_uses_checktimeout():
    s, _ = service(WEB + "\tchecktype=connect\n\tchecktimeout=4\n")
    assert s["check"]["type"] == "tcp" and s["check"]["timeout"] == 4


def test_timeouts_default_to_each_other():
    s, _ = service("checktimeout=4\n" + WEB)
    assert s["check"]["timeout"] == 4  # negotiatetimeout unset: checktimeout
    s, _ = service("negotiatetimeout=7\n" + WEB + "\tchecktype=connect\n")
    assert s["check"]["timeout"] == 7  # checktimeout unset: negotiatetimeout
    s, _ = service(WEB + "\tchecktype=connect\n")
    assert s["check"]["timeout"] == 5  # both unset: 5 s for checktimeout


@pytest.mark.parametrize(
    "checktype,kind,warns",
    [
        ("negotiate", "http", False),
        ("on", "none", False),
        ("off", "external", False),
        ("external", "external", False),
        ("external-perl", "external", True),
        ("ping", "ping", False),
        ("3", "http", True),
    ],
)
def test_checktypes(checktype, kind, warns):
    s, issues = service(WEB + f"\tchecktype={checktype}\n")
    assert s["check"]["type"] == kind
    assert bool(messages(issues, "warning")) == warns
    if checktype == "off":
        assert s["check"]["command"] == ["/bin/false"]
    if checktype == "external":
        assert s["check"]["command"] == ["/bin/true"]  # ldirectord's default checkcommand


def test_external_checkcommand():
    s, _ = service(WEB + '\tchecktype=external\n\tcheckcommand="/usr/local/bin/check"\n\tchecktimeout=3\n')
    assert s["check"]["command"] == ["/usr/local/bin/check"] and s["check"]["timeout"] == 3


def test_connect_on_udp_is_a_ping_as_in_ldirectord():
    # _check_real: checktype connect on a UDP virtual runs check_ping.
    s, issues = service("virtual=192.168.6.240:53\n\treal=192.168.6.2:53 gate\n\tchecktype=connect\n")
    assert s["check"]["type"] == "ping" and s["check"]["timeout"] == 5
    assert "port" not in s["check"] and "check" not in s["real_servers"][0]
    assert not messages(issues, "warning")
    assert "test.cf:3: checktype: checktype=connect on a UDP service" in messages(issues, "note")


def test_http_proxy_becomes_a_tcp_connect_listed_as_weaker():
    s, issues = service(WEB + "\tservice=http_proxy\n")
    assert s["check"]["type"] == "tcp" and "dialogue" not in s["check"]
    weaker = [i for i in issues if i.weaker]
    assert len(weaker) == 1 and str(weaker[0]).startswith("test.cf:1: check: 192.168.6.240:80/tcp, service http_proxy:")


def test_oracle_becomes_an_oracle_check():
    s, issues = service(WEB + '\tservice=oracle\n\tlogin="r"\n\tdatabase="ORCL"\n\trequest="/SELECT 1 FROM DUAL"\n')
    assert {k: s["check"][k] for k in ("type", "login", "database", "query")} == {
        "type": "oracle",
        "login": "r",
        "database": "ORCL",
        "query": "SELECT 1 FROM DUAL",  # check_sql strips one leading "/"
    }
    assert not [i for i in issues if i.weaker]


def test_http_directives():
    s, issues = service(
        WEB + '\trequest="status/ok"\n\treceive="alive|ok"\n\thttpmethod=head\n'
        '\tvirtualhost="www.example.com"\n\tcheckport=8080\n'
    )
    c = s["check"]
    assert (c["path"], c["expect_body"], c["method"], c["host"], c["port"]) == (
        "/status/ok",
        "alive|ok",
        "HEAD",
        "www.example.com",
        8080,
    )
    assert not messages(issues, "warning")


@pytest.mark.parametrize(
    "line,needle",
    [
        ("request=index.html", "double quotes"),
        ('receive=""', "invalid receive string"),
        ("httpmethod=POST", "GET or HEAD"),
        ("checkport=70000", "1..65535"),
        ("checktype=sometimes", "checktype must be"),
        ("checktimeout=0", "invalid check timeout"),
        ("failurecount=x", "invalid failure count"),
        ("service=gopher", "service must be"),
        ("scheduler=WRR", "lowercase"),
        ("quiescent=maybe", "'yes' or 'no'"),
        ("connecttimeout=3", "deprecated"),
        ("frobnicate=1", "unknown command"),
    ],
)
def test_virtual_directive_errors_name_file_and_line(line, needle):
    errs = errors_of(WEB + f"\t{line}\n")
    assert any(e.startswith("test.cf:3:") and needle in e for e in errs), errs


def test_per_real_request_receive_unused_by_the_service_is_a_note():
    # check_smtp reads neither request nor receive: nothing is lost.
    s, issues = service('virtual=192.168.6.240:25\n\treal=192.168.6.2:25 gate 1 "/x", "y"\n')
    assert "check" not in s["real_servers"][0]
    assert "test.cf:2: real: the per-real request/receive pair is not used" in messages(issues, "note")
    assert not messages(issues, "warning")


def test_login_and_password_are_reported_without_their_values():
    _, issues = service(WEB + '\tservice=http_proxy\n\tlogin="anon"\n\tpasswd="s3cret-value"\n')
    text = messages(issues)
    assert "test.cf:4: login" in text and "test.cf:5: passwd" in text
    assert "s3cret-value" not in text


def test_failurecount_and_checkinterval():
    s, _ = service("checkinterval=3\nfailurecount=4\n" + WEB)
    assert s["check"]["interval"] == 3 and s["check"]["fall"] == 4
    assert s["check"]["retry_interval"] == 3  # ldirectord re-checks a failing server at checkinterval
    s, issues = service("checkinterval=3\n" + WEB + "\tcheckinterval=7\n\tfailurecount=2\n")
    assert s["check"]["interval"] == 3 and s["check"]["fall"] == 2  # fork=no: ldirectord ignores it
    assert "ignores a virtual's checkinterval" in messages(issues, "note")
    s, _ = service("checkinterval=3\nfork=yes\n" + WEB + "\tcheckinterval=7\n")
    assert s["check"]["interval"] == 7
    assert "retry_interval" not in s["check"]  # failurecount 1: no second failure to wait for


# --- service attributes -------------------------------------------------------------------


def test_scheduler_persistence_and_flags():
    s, _ = service(WEB + "\tscheduler=sh\n\tschedflags=flag-1,sh-port\n\tpersistent=600\n\tnetmask=255.255.255.0\n")
    assert s["scheduler"] == "sh"
    assert s["scheduler_flags"] == ["sh-fallback", "sh-port"]
    assert s["persistence"] == {"timeout": 600, "netmask": "255.255.255.0"}


def test_unknown_scheduler_and_flag():
    assert any("unknown scheduler 'foo'" in e for e in errors_of(WEB + "\tscheduler=foo\n"))
    s, issues = service(WEB + "\tscheduler=rr\n\tschedflags=sh-port\n")
    assert "scheduler_flags" not in s
    assert "test.cf:4: schedflags" in messages(issues, "warning")


def test_netmask_without_persistent_and_persistent_zero():
    s, issues = service(WEB + "\tnetmask=255.255.255.0\n")
    assert "persistence" not in s and "no effect" in messages(issues, "note")
    assert any("persistent=0" in e for e in errors_of(WEB + "\tpersistent=0\n"))


def test_quiescent_global_and_per_virtual():
    assert service("quiescent=yes\n" + WEB)[0]["on_failure"] == "quiescent"
    assert service("quiescent=yes\n" + WEB + "\tquiescent=no\n")[0]["on_failure"] == "remove"
    assert service(WEB + "\tquiescent=yes\n")[0]["on_failure"] == "quiescent"


def test_servicename_comment_and_ops():
    data, issues = conv(
        WEB
        + "\tservicename=Web Site\n\tcomment=the shop\n"
        + WEB.replace(":80", ":81")
        + "\tservicename=Web Site\n"
        + "virtual=192.168.6.240:53\n\treal=192.168.6.2:53 gate\n\tops=yes\n"
    )
    names = [s.get("name") for s in data["virtual_services"]]
    assert names == ["Web Site", "Web Site (2)", None]
    assert "# the shop" in convert_text(WEB + "\tcomment=the shop\n", "t.cf").text
    assert "test.cf:10: ops" in messages(issues, "warning")


# --- fallback -------------------------------------------------------------------------------


def test_fallback_per_virtual_and_global():
    s, _ = service(WEB + "\tfallback=127.0.0.1:80 gate\n")
    assert s["fallback"] == {"address": "127.0.0.1", "port": 80, "weight": 1}
    s, _ = service("fallback=192.168.6.50\n" + WEB.replace(":80", ":8080"))
    assert s["fallback"] == {"address": "192.168.6.50", "port": 8080, "weight": 1}  # the virtual's port
    s, _ = service(WEB + "\tfallback=192.168.6.50:8080 masq\n")
    assert s["fallback"] == {"address": "192.168.6.50", "port": 8080, "weight": 1, "forwarding": "nat"}


def test_global_fallback_does_not_apply_to_fwmark():
    s, issues = service("fallback=192.168.6.50:80\nvirtual=7\n\treal=192.168.6.2 gate\n")
    assert "fallback" not in s
    assert "test.cf:1: fallback: ldirectord does not apply the global fallback" in messages(issues, "warning")


def test_fallback6_and_wrong_family():
    s, _ = service("fallback6=[::1]:80\n" + "virtual6=[2001:db8::1]:80\n\treal6=[2001:db8::2]:80 gate\n")
    assert s["fallback"]["address"] == "::1"
    assert any(
        'use "fallback6"' in e
        for e in errors_of("virtual6=[2001:db8::1]:80\n\treal6=[2001:db8::2]:80 gate\n\tfallback=127.0.0.1:80\n")
    )


# --- global directives --------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,severity",
    [
        ("autoreload=yes", "warning"),
        ("autoreload=no", "note"),
        ('callback="/bin/true"', "warning"),
        ('logfile="local0"', "note"),
        ("execute=other.cf", "warning"),
        ("fork=yes", "note"),
        ("supervised=yes", "note"),
        ("readdquiescent=yes", "note"),
        ('emailalert="root@example.com"', "warning"),
        ("emailalertfreq=60", "warning"),
        ("emailalertstatus=starting,running", "warning"),
        ("emailalertfrom=ld@example.com", "warning"),
        ("smtp=mail.example.com", "warning"),
        ("cleanstop=yes", "warning"),
        ("cleanstop=no", "note"),
        ("maintenancedir=/var/lib/maint", "warning"),
        ("fallbackcommand=/usr/local/bin/x", "note"),  # converted to hooks, with a note
        ("checkcount=3", "note"),
    ],
)
def test_global_directives_are_never_dropped_silently(line, severity):
    _, issues = conv(line + "\n" + WEB)
    name = line.split("=")[0]
    found = [i for i in issues if i.directive == name and i.line == 1]
    assert found and found[0].severity == severity, messages(issues)


@pytest.mark.parametrize(
    "line,needle",
    [
        ("timeout=5", "deprecated"),
        ("connecttimeout=5", "deprecated"),
        ("checkinterval=0", "invalid check interval"),
        ("quiescent=on", "'yes' or 'no'"),
        ("emailalertstatus=sometimes", "invalid email alert status"),
        ("bogus=1", "unknown command"),
        ("  checkinterval=3", "unknown command"),
    ],
)
def test_global_errors(line, needle):
    errs = errors_of(WEB + "\n" + line + "\n")
    assert any(e.startswith("test.cf:4:") and needle in e for e in errs), errs


def test_block_rules_comments_tabs_and_blank_lines():
    s, _ = service(
        "virtual=192.168.6.240:80\n"
        "    # a comment line\n"
        "\treal=192.168.6.2:80 gate   # a trailing comment\n"
        "        scheduler=rr\n"
    )
    assert s["scheduler"] == "rr" and len(s["real_servers"]) == 1
    # a blank line ends the block; an indented line after it is a global line, unknown to ldirectord
    errs = errors_of("virtual=192.168.6.240:80\n\treal=192.168.6.2:80 gate\n\n\tscheduler=rr\n")
    assert any(e.startswith("test.cf:4:") for e in errs), errs


def test_all_errors_are_reported_at_once():
    errs = errors_of("bogus=1\n" + WEB + "\tscheduler=rr\n\thttpmethod=PUT\n\treal=1.2.3.4:80 bounce\n")
    assert [e.split(":")[1] for e in errs] == ["1", "5", "6"]


# --- samples ------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["every-directive.cf", "debian-example.cf", "lab-sites.cf"])
def test_samples_convert_and_load(sample, tmp_path):
    out = tmp_path / "directord.yaml"
    result = convert_files(str(DATA / sample), output=str(out))
    write_atomic(str(out), result.text)
    config = load_config(str(out))
    assert config.services
    assert all(s.real_servers for s in config.services)


def test_every_directive_sample_reports_each_unconverted_directive():
    result = convert_files(str(DATA / "every-directive.cf"))
    warned = {(i.line, i.directive) for i in result.issues}
    lines = (DATA / "every-directive.cf").read_text().splitlines()
    for name in (
        "fallbackcommand",
        "callback",
        "emailalert",
        "emailalertfreq",
        "emailalertstatus",
        "emailalertfrom",
        "smtp",
        "maintenancedir",
        "autoreload",
        "execute",
        "monitorfile",
        "ops",
        "load",
        "logfile",
        "fork",
        "supervised",
        "readdquiescent",
        "checkcount",
    ):
        where = [n for n, line in enumerate(lines, 1) if line.strip().startswith(name + "=")]
        assert where, name
        assert any((n, name) in warned for n in where), name
    # The credentials are carried by the checks that use them (pop, mysql, radius).
    checks = {s["port"]: s["check"] for s in yaml.safe_load(result.text)["virtual_services"] if "port" in s}
    assert "PASS secret-password\r\n" in [step.get("send") for step in checks[110]["dialogue"]]
    assert (checks[3306]["login"], checks[3306]["password"], checks[3306]["database"]) == ("readuser", "pw", "portal")
    assert checks[1812]["secret"] == "shared" and checks[1812]["type"] == "radius"
    assert result.private


def test_debian_sample_converts_as_shipped():
    config = parse_config(convert_files(str(DATA / "debian-example.cf")).text)
    (web,) = config.services
    assert web.name == "Web Site" and web.scheduler == "rr" and web.on_failure == "remove"
    assert web.check.type == "http" and web.check.path == "/index.html" and web.check.expect_body == "Test Page"
    assert web.check.host == "www.x.y.z" and web.check.interval == 1 and web.check.timeout == 3
    assert web.fallback is not None and web.fallback.address == "127.0.0.1"
    assert [r.address for r in web.real_servers] == ["192.168.6.2", "192.168.6.3", "192.168.6.6"]


# --- heartbeat ----------------------------------------------------------------------------


@pytest.fixture
def authkeys(tmp_path):
    path = tmp_path / "authkeys"
    shutil.copy(DATA / "authkeys", path)
    os.chmod(path, 0o600)
    return str(path)


def test_ha_section_from_ha_cf_and_haresources(authkeys, tmp_path):
    result = convert_files(
        str(DATA / "debian-example.cf"),
        ha_cf=str(DATA / "ha.cf"),
        haresources=str(DATA / "haresources"),
        authkeys=authkeys,
    )
    ha = yaml.safe_load(result.text)["ha"]
    assert ha["nodes"] == ["dir1", "dir2"] and "node" not in ha
    assert ha["media"] == ["bcast eth1", "ucast eth0 192.168.6.12"]
    assert (ha["keepalive"], ha["warntime"], ha["deadtime"], ha["initdead"]) == (0.5, 2, 5, 15)
    assert ha["udpport"] == 694 and ha["auto_failback"] is True and ha["compat"] == "heartbeat"
    assert ha["ping_nodes"] == ["192.168.6.1"]
    assert ha["resources"] == [{"owner": "dir1", "addresses": ["192.168.6.240/24/eth0"]}]
    assert ha["authkeys"] == authkeys  # referenced, not copied
    assert "sha1" not in result.text
    text = messages(result.issues)
    assert "haresources:2: haresources: ldirectord::ldirectord.cf: directord itself replaces ldirectord" in text
    assert "ha.cf:15: respawn: ipfail" in text
    out = tmp_path / "d.yaml"
    write_atomic(
        str(out),
        convert_files(
            str(DATA / "debian-example.cf"),
            ha_cf=str(DATA / "ha.cf"),
            haresources=str(DATA / "haresources"),
            authkeys=authkeys,
            node="dir2",
        ).text,
    )
    config = load_config(str(out))
    assert config.ha is not None and config.ha.node == "dir2" and config.ha.compat == "heartbeat"
    assert config.ha.timers.deadtime == 5 and config.ha.auto_failback is True


HA = "keepalive 1\ndeadtime 10\nbcast eth1\nnode a\nnode b\n"


def ha_of(ha_cf: str, haresources: str | None = None):
    result = convert_text(WEB, "x.cf", ha_cf=ha_cf, haresources=haresources, authkeys="/etc/ha.d/authkeys")
    return yaml.safe_load(result.text)["ha"], result.issues


def test_ha_defaults_left_to_the_heartbeat_profile():
    ha, _ = ha_of("bcast eth1\nnode a b\n")
    assert ha == {"nodes": ["a", "b"], "media": ["bcast eth1"], "authkeys": "/etc/ha.d/authkeys", "compat": "heartbeat"}


@pytest.mark.parametrize(
    "line,key,value",
    [
        ("auto_failback off", "auto_failback", False),
        ("auto_failback legacy", "auto_failback", "legacy"),
        ("nice_failback on", "auto_failback", False),
        ("warntime 2500ms", "warntime", 2.5),
        ("initdead 30", "initdead", 30),
        ("udpport 695", "udpport", 695),
        ("mcast eth1 239.0.0.1 694 1 0", "media", ["bcast eth1", "mcast eth1 239.0.0.1 694 1 0"]),
        ("ping 192.168.6.1 192.168.6.2", "ping_nodes", ["192.168.6.1", "192.168.6.2"]),
    ],
)
def test_ha_cf_directives(line, key, value):
    ha, _ = ha_of(HA + line + "\n")
    assert ha[key] == value


@pytest.mark.parametrize("text", ["2500us", "500us", "500.5ms", "1.0005", "499us", "501us", "0.25", "1500 ms"])
def test_ha_cf_times_read_as_the_loader_reads_them(text):
    """convert and the loader count heartbeat times the same way (`ha.config.heartbeat_msec`);
    they disagreed on halves: ``2500us`` was 0.002 s here and 0.003 s in the loader."""
    ha, _ = ha_of(HA.replace("deadtime 10", "deadtime 10\nwarntime " + text))
    assert ha["warntime"] == parse_duration(text)


@pytest.mark.parametrize(
    "line,severity",
    [
        ("serial /dev/ttyS0", "warning"),
        ("baud 19200", "warning"),
        ("deadping 20", "warning"),
        ("stonith_host * null dir1", "warning"),
        ("respawn hacluster /usr/lib/heartbeat/dopd", "warning"),
        ("crm yes", "warning"),
        ("debugfile /var/log/ha-debug", "note"),
        ("use_logd yes", "note"),
    ],
)
def test_ha_cf_unsupported_directives_are_reported(line, severity):
    _, issues = ha_of(HA + line + "\n")
    found = [i for i in issues if i.file == "ha.cf" and i.line == 6]
    assert found and found[0].severity == severity


@pytest.mark.parametrize(
    "ha_cf,needle",
    [
        (HA + "deadtime soon\n", "ha.cf:6: deadtime: not a time"),
        # 400 digits: heartbeat's arithmetic overflows; the converter raised OverflowError
        (HA + "deadtime " + "9" * 400 + "\n", "ha.cf:6: deadtime: not a time"),
        (HA + "frobnicate yes\n", "ha.cf:6: frobnicate: unknown directive"),
        (HA + "ping router.example.com\n", "ha.cf:6: ping: ping node"),
        ("bcast eth1\n", "ha.cf: node: no node directive"),
    ],
)
def test_ha_cf_errors(ha_cf, needle):
    with pytest.raises(ConvertError) as info:
        ha_of(ha_cf)
    assert any(needle in str(e) for e in info.value.errors), info.value


def test_haresources_forms():
    ha, issues = ha_of(
        HA,
        "a 192.168.6.240/24/eth0 IPaddr2::192.168.6.241/24/eth0/192.168.6.255 \\\n"
        "  httpd\nb IPv6addr::2001:db8::10/64/eth0\n",
    )
    assert ha["resources"] == [
        {"owner": "a", "addresses": ["192.168.6.240/24/eth0", "192.168.6.241/24/eth0"]},
        {"owner": "b", "addresses": ["2001:db8::10/64/eth0"]},
    ]
    assert (
        "haresources:1: haresources: IPaddr2::192.168.6.241/24/eth0/192.168.6.255: the address "
        "192.168.6.241/24/eth0 is converted" in messages(issues, "warning")
    )
    assert "the broadcast address '192.168.6.255' (the kernel's default broadcast is used)" in messages(issues)


def test_haresources_address_without_prefix_and_interface_is_an_error():
    with pytest.raises(ConvertError) as info:
        ha_of(HA, "a 192.168.6.240\n")
    assert "haresources:1: haresources: 192.168.6.240: no prefix length and interface" in str(info.value)


def test_converted_ha_is_checked_by_the_loader(tmp_path):
    ha_cf = tmp_path / "ha.cf"
    ha_cf.write_text("keepalive 2\ndeadtime 3\nbcast eth1\nnode a b\n")  # deadtime must exceed 2 x keepalive
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 crc\n")
    keys.chmod(0o600)
    with pytest.raises(ConvertError) as info:
        convert_files(str(DATA / "lab-sites.cf"), ha_cf=str(ha_cf))  # authkeys next to ha.cf
    assert "refused by directord" in str(info.value) and "2 x keepalive" in str(info.value)


# --- the command ----------------------------------------------------------------------------


def test_cli_writes_atomically_and_refuses_on_errors(tmp_path, capsys):
    out = tmp_path / "directord.yaml"
    assert cli_main(["convert", "--ldirectord", str(DATA / "lab-sites.cf"), "-o", str(out)]) == 0
    first = out.read_text()
    assert load_config(str(out)).services
    assert "cleanstop" in capsys.readouterr().err  # the warning, on stderr
    bad = tmp_path / "bad.cf"
    bad.write_text(WEB + "\tscheduler=rr\n\thttpmethod=PUT\n")
    assert cli_main(["convert", "--ldirectord", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4: httpmethod: httpmethod must be GET or HEAD" in err and "nothing written" in err
    assert out.read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.cf", "directord.yaml"]  # no temporary file left


def test_cli_to_stdout_and_missing_file(tmp_path, capsys):
    assert cli_main(["convert", "--ldirectord", str(DATA / "debian-example.cf")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["virtual_services"][0]["name"] == "Web Site"
    assert cli_main(["convert", "--ldirectord", str(tmp_path / "none.cf")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "out.yaml"
    path.write_text("old\n")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_atomic(str(path), "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.yaml"]


def test_static_resolver_does_no_lookups():
    from director.convert.ldirectord import StaticResolver

    r = StaticResolver()
    assert r.host("192.168.6.2", socket.AF_INET) == "192.168.6.2"
    assert r.host("192.168.6.2", socket.AF_INET6) is None
    assert r.host("localhost", socket.AF_INET) is None
    assert r.port("domain", "udp") == 53


def test_fwmark_virtual6():
    s, _ = service("virtual6=5\n\treal6=[2001:db8::2] gate\n\tservice=http\n")
    assert (s["fwmark"], s["family"]) == (5, "inet6")
    assert s["real_servers"] == [{"address": "2001:db8::2", "weight": 1}]
    assert s["check"]["type"] == "http" and s["check"]["port"] == 80


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"(ok)\1", r"invalid escape sequence: \1"),
        ("alive(?!-not)", "invalid perl operator: (?!"),
    ],
)
def test_receive_re2_cannot_match_is_left_out_with_a_warning(pattern, reason):
    s, issues = service(WEB + "\tservice=http\n" + f'\treceive="{pattern}"\n')
    assert "expect_body" not in s["check"]
    (weaker,) = [i for i in issues if i.weaker]
    assert str(weaker) == (
        "test.cf:1: check: 192.168.6.240:80/tcp, service http: weaker check than ldirectord's: ldirectord "
        f"matches the receive pattern {pattern!r} (line 4) on the body; directord checks the status only: "
        f"the pattern is not a regular expression the checker can use: {reason} (it is matched with RE2 "
        "syntax: no backreferences, no lookahead or lookbehind)"
    )
    assert messages(issues, "warning") == f"warning: {weaker}"


def test_per_real_receive_re2_cannot_match_is_left_out_with_a_warning():
    s, issues = service('virtual=192.168.6.240:80\n\treal=192.168.6.9:80 gate 2 "ready.html", "(?<=x)ready"\n')
    # The virtual has no receive pattern either: the real only overrides the path.
    assert s["real_servers"][0]["check"] == {"path": "/ready.html"}
    assert (
        "test.cf:1: check: 192.168.6.240:80/tcp, service http: weaker check than ldirectord's: ldirectord "
        "matches the receive pattern '(?<=x)ready' (line 2)" in messages(issues, "warning")
    )
    s, _ = service(
        'virtual=192.168.6.240:80\n\treal=192.168.6.9:80 gate 2 "ready.html", "(?<=x)ready"\n\treceive="up"\n'
    )
    assert s["check"]["expect_body"] == "up"
    assert s["real_servers"][0]["check"] == {"path": "/ready.html", "expect_body": None}


def test_receive_in_re2_syntax_is_kept():
    s, issues = service(WEB + '\treceive="^OK [0-9]+\\s*$"\n')
    assert s["check"]["expect_body"] == "^OK [0-9]+\\s*$" and not messages(issues, "warning")


def test_converted_file_with_a_perl_only_receive_loads(tmp_path):
    cf = tmp_path / "l.cf"
    cf.write_text(WEB + '\tservice=http\n\treceive="(a)\\1"\n')
    assert "expect_body" not in convert_files(str(cf)).text


def _fifo(tmp_path):
    path = tmp_path / "ldirectord.cf"
    os.mkfifo(path)
    return str(path), "not a regular file but a FIFO (named pipe)"


def _zero(tmp_path):
    return "/dev/zero", "not a regular file but a character device"


def _oversize(tmp_path):
    path = tmp_path / "big.cf"
    with open(path, "wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    return str(path), f"too large: {MAX_INPUT_BYTES + 1} bytes, the limit is 1 MiB"


@pytest.mark.parametrize("make", [_fifo, _zero, _oversize], ids=["fifo", "dev-zero", "oversize"])
def test_input_that_is_not_a_small_regular_file_is_one_error(tmp_path, make):
    path, reason = make(tmp_path)
    with pytest.raises(ConvertError) as info:
        convert_files(path)
    assert str(info.value) == f"error: {path}: cannot use the ldirectord configuration: {reason}"
    with pytest.raises(ConvertError) as info:
        convert_files(str(DATA / "lab-sites.cf"), ha_cf=path)
    assert str(info.value) == f"error: {path}: cannot use the heartbeat ha.cf: {reason}"


@pytest.mark.parametrize("make", [_fifo, _zero, _oversize], ids=["fifo", "dev-zero", "oversize"])
def test_cli_prints_one_line_for_unusable_input(tmp_path, make):
    path, reason = make(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from director.cli import main; sys.exit(main(sys.argv[1:]))",
            "convert",
            "--ldirectord",
            path,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: cannot use the ldirectord configuration: {reason}",
        "1 error; nothing written",
    ]


@pytest.mark.parametrize("mode", [0o622, 0o602, 0o611])
def test_authkeys_writable_by_others_is_refused(tmp_path, mode):
    keys = tmp_path / "authkeys"
    shutil.copy(DATA / "authkeys", keys)
    os.chmod(keys, mode)
    with pytest.raises(ConvertError) as info:
        convert_files(str(DATA / "debian-example.cf"), ha_cf=str(DATA / "ha.cf"), authkeys=str(keys))
    assert f"unusable authkeys file: {keys}: bad permissions {mode:03o}" in str(info.value)


def test_messages_quote_at_most_60_characters_and_escape_control_characters():
    (error,) = errors_of("virtual=192.168.6.240:80\n\tfrobnicate=" + "x" * 100_000 + "\n")
    assert error == "test.cf:2: frobnicate: unknown command '" + "frobnicate=" + "x" * 49 + "'..."
    (error,) = errors_of("virtual=192.168.6.240:80\n\tfrob=\x1b[2J\x00\n")
    assert error == r"test.cf:2: frob: unknown command 'frob=\x1b[2J\x00'"


def test_write_atomic_syncs_the_directory_and_refuses_a_symlink(tmp_path, monkeypatch):
    """The converted file is durable (its directory is synced after the rename) and never
    written through a symlink planted at the output path."""
    from test_durable import record_syncs

    events = record_syncs(monkeypatch)
    out = tmp_path / "out.yaml"
    write_atomic(str(out), "x: 1\n")
    assert out.read_text() == "x: 1\n" and ("fsync", str(tmp_path)) in events
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        write_atomic(str(link), "x: 2\n")
    assert victim.read_text() == "keep\n"


# --- notify hooks: haresources' scripts, fallbackcommand ------------------------------------------
#
# heartbeat 3.0.6 (heartbeat/lib/ResourceManager.in): scriptpath looks for NAME in
# $HA_RESOURCEDIR then $INITDIR, taking the first regular executable file; doscript runs
# "SCRIPT arg1 arg2 start|stop"; acquireresourcegroup starts in line order,
# giveupresourcegroup stops in reverse order. ldirectord 4.x (do_fallback_command): system()
# of "TEXT start|stop VIP:PORT PROTOCOL".


@pytest.fixture
def lookup_dirs():
    """Short-named lookup directories (so that YAML lines do not wrap differently from run to
    run): resource.d, init.d, a unit directory and a systemctl; yields (root, ResourceLookup)."""
    from director.convert.notify import ResourceLookup

    root = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
    try:
        for name in ("resource.d", "init.d", "units", "bin"):
            (root / name).mkdir()
        lookup = ResourceLookup(
            resource_d=str(root / "resource.d"),
            init_d=str(root / "init.d"),
            unit_dirs=(str(root / "units"),),
            systemctl=(str(root / "nothere" / "systemctl"), str(root / "bin" / "systemctl")),
        )
        yield root, lookup
    finally:
        shutil.rmtree(root)


def executable(path: Path, mode: int = 0o755) -> None:
    path.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(path, mode)


def notify_section(text: str) -> str:
    return text[text.index("\nnotify:\n") + 1 :]


HTTPD_RESOURCES = "a 192.168.6.240/24/eth0 httpd Filesystem::/dev/sda1::/data::ext4 \\\n  nginx mailer::x\n"


def test_haresources_scripts_become_hooks_in_heartbeats_order(lookup_dirs, authkeys):
    root, lookup = lookup_dirs
    executable(root / "init.d" / "httpd")
    executable(root / "resource.d" / "httpd", 0o644)  # not executable: heartbeat's -x skips it
    executable(root / "resource.d" / "Filesystem")  # resource.d comes before init.d
    executable(root / "init.d" / "Filesystem")
    (root / "units" / "nginx.service").write_text("[Service]\nExecStart=/bin/true\n")
    executable(root / "bin" / "systemctl")
    result = convert_text(
        WEB, "x.cf", ha_cf=HA, haresources=HTTPD_RESOURCES, authkeys=authkeys, node="a", lookup=lookup
    )
    expected = """\
notify:
  hooks:

    # haresources:1: httpd in group 1 (a: 192.168.6.240/24/eth0): start when a group is acquired
    - name: g1-httpd
      events: [ha.acquired]
      command: [R/init.d/httpd, start]

    # haresources:1: Filesystem::/dev/sda1::/data::ext4 in group 1 (a: 192.168.6.240/24/eth0): start
    # when a group is acquired
    - name: g1-Filesystem
      events: [ha.acquired]
      command: [R/resource.d/Filesystem, /dev/sda1, /data, ext4, start]

    # haresources:1: nginx in group 1 (a: 192.168.6.240/24/eth0): start when a group is acquired
    # no resource script; the systemd unit nginx.service
    - name: g1-nginx
      events: [ha.acquired]
      command: [R/bin/systemctl, start, nginx.service]

    # haresources:1: mailer::x in group 1 (a: 192.168.6.240/24/eth0): start when a group is acquired
    # warning: the script was not found when converting
    - name: g1-mailer
      events: [ha.acquired]
      command: [R/init.d/mailer, x, start]

    # haresources:1: mailer::x in group 1 (a: 192.168.6.240/24/eth0): stop when a group is released
    # (reverse order)
    # warning: the script was not found when converting
    - name: g1-mailer
      events: [ha.released]
      command: [R/init.d/mailer, x, stop]

    # haresources:1: nginx in group 1 (a: 192.168.6.240/24/eth0): stop when a group is released
    # (reverse order)
    # no resource script; the systemd unit nginx.service
    - name: g1-nginx
      events: [ha.released]
      command: [R/bin/systemctl, stop, nginx.service]

    # haresources:1: Filesystem::/dev/sda1::/data::ext4 in group 1 (a: 192.168.6.240/24/eth0): stop
    # when a group is released (reverse order)
    - name: g1-Filesystem
      events: [ha.released]
      command: [R/resource.d/Filesystem, /dev/sda1, /data, ext4, stop]

    # haresources:1: httpd in group 1 (a: 192.168.6.240/24/eth0): stop when a group is released
    # (reverse order)
    - name: g1-httpd
      events: [ha.released]
      command: [R/init.d/httpd, stop]
""".replace("R/", f"{root}/")
    assert notify_section(result.text) == expected
    warnings = messages(result.issues, "warning")
    assert f"haresources:1: haresources: mailer::x: no executable script mailer in {root}/resource.d or " in warnings
    assert "httpd" not in warnings and "nginx" not in warnings and "several resource groups" not in warnings
    # the output passes directord's configuration check (a missing program is accepted)
    config = parse_config(result.text)
    assert config.notify is not None
    hooks = config.notify.hooks
    assert [(h.name, sorted(h.events), h.command[-1]) for h in hooks][:2] == [
        ("g1-httpd", ["ha.acquired"], "start"),
        ("g1-Filesystem", ["ha.acquired"], "start"),
    ]
    assert hooks[0].service is None and len(hooks) == 8


def test_systemctl_is_the_first_that_exists(lookup_dirs):
    root, lookup = lookup_dirs
    (root / "units" / "nginx.service").write_text("[Service]\n")
    executable(root / "bin" / "systemctl")
    result = convert_text(WEB, "x.cf", ha_cf=HA, haresources="a 10.0.0.1/24/eth0 nginx::arg\n", lookup=lookup)
    data = yaml.safe_load(result.text)["notify"]["hooks"]
    assert [h["command"] for h in data] == [
        [f"{root}/bin/systemctl", "start", "nginx.service"],
        [f"{root}/bin/systemctl", "stop", "nginx.service"],
    ]
    assert "the systemd unit nginx.service is started and stopped instead, without the arguments arg" in messages(
        result.issues, "warning"
    )


def test_several_groups_with_scripts_are_named_by_group_and_warned(lookup_dirs):
    root, lookup = lookup_dirs
    for name in ("httpd", "postfix"):
        executable(root / "init.d" / name)
    result = convert_text(
        WEB,
        "x.cf",
        ha_cf=HA,
        haresources="a 10.0.0.1/24/eth0 httpd\nb 10.0.0.2/24/eth1 postfix\nb drbddisk\n",
        lookup=lookup,
    )
    hooks = yaml.safe_load(result.text)["notify"]["hooks"]
    assert [(h["name"], h["events"], h["command"][-1]) for h in hooks] == [
        ("g1-httpd", ["ha.acquired"], "start"),
        ("g1-httpd", ["ha.released"], "stop"),
        ("g2-postfix", ["ha.acquired"], "start"),
        ("g2-postfix", ["ha.released"], "stop"),
    ]
    warnings = messages(result.issues, "warning")
    assert "haresources:2: haresources: several resource groups have scripts: directord's hooks have no group" in (
        warnings
    )
    # a group without an address is no group for directord: its scripts are not converted
    assert "haresources:3: haresources: no address in the group of b: directord has no group to acquire, so " in (
        warnings
    )
    assert "drbddisk" not in notify_section(result.text)


def test_one_group_with_scripts_is_not_warned_about_groups(lookup_dirs):
    root, lookup = lookup_dirs
    executable(root / "init.d" / "httpd")
    result = convert_text(
        WEB, "x.cf", ha_cf=HA, haresources="a 10.0.0.1/24/eth0 httpd\nb 10.0.0.2/24/eth1\n", lookup=lookup
    )
    assert "several resource groups" not in messages(result.issues)
    assert len(yaml.safe_load(result.text)["notify"]["hooks"]) == 2


@pytest.mark.parametrize("resource", ["../bin/sh", "a:b", "x/y::z"])
def test_resource_names_that_are_no_file_name_are_not_converted(resource, lookup_dirs):
    _, lookup = lookup_dirs
    result = convert_text(WEB, "x.cf", ha_cf=HA, haresources=f"a 10.0.0.1/24/eth0 {resource}\n", lookup=lookup)
    assert "notify" not in yaml.safe_load(result.text)
    assert f"haresources:1: haresources: {resource}: not a script file name" in messages(result.issues, "warning")


def test_ipaddr2_options_directord_cannot_express_are_reported():
    ha, issues = ha_of(HA, "a IPaddr2::192.168.6.241/24/eth0:web/192.168.6.255::extra\n")
    assert ha["resources"] == [{"owner": "a", "addresses": ["192.168.6.241/24/eth0"]}]
    text = messages(issues, "warning")
    assert "heartbeat's IPaddr2 script does not run" in text
    assert "the interface label 'web' (the address is added to eth0 unlabelled)" in text
    assert "the broadcast address '192.168.6.255'" in text and "the further arguments 'extra'" in text


def test_old_fixtures_keep_their_ha_section_and_get_no_hooks(authkeys):
    result = convert_files(
        str(DATA / "debian-example.cf"),
        ha_cf=str(DATA / "ha.cf"),
        haresources=str(DATA / "haresources"),
        authkeys=authkeys,
    )
    assert yaml.safe_load(result.text)["ha"] == {
        "nodes": ["dir1", "dir2"],
        "media": ["bcast eth1", "ucast eth0 192.168.6.12"],
        "udpport": 694,
        "authkeys": authkeys,
        "keepalive": 0.5,
        "warntime": 2,
        "deadtime": 5,
        "initdead": 15,
        "auto_failback": True,
        "ping_nodes": ["192.168.6.1"],
        "resources": [{"owner": "dir1", "addresses": ["192.168.6.240/24/eth0"]}],
        "compat": "heartbeat",
    }
    assert "\nnotify:" not in result.text  # ldirectord is replaced, not run
    heartbeat = (DATA.parent / "heartbeat" / "haresources").read_text()
    ha, _ = ha_of(HA, heartbeat)
    assert ha["resources"] == [{"owner": "nodea", "addresses": ["10.250.0.100/24/eth0"]}]


FALLBACK_CF = """\
fallbackcommand=/usr/local/sbin/sorry --quiet
virtual=192.168.6.240:80
\tservicename=web
\treal=192.168.6.2:80 gate
virtual=192.168.6.240:443
\treal=192.168.6.2:443 gate
\tfallbackcommand="logger 'all down'; /usr/local/sbin/page"
virtual6=[2001:db8::1]:53
\tprotocol=udp
\treal6=[2001:db8::2]:53 gate
\tfallbackcommand=pager
"""


def test_fallbackcommand_global_and_per_service_with_and_without_shell():
    result = convert_text(FALLBACK_CF, "ld.cf")
    expected = """\
notify:
  hooks:

    # ld.cf:1: fallbackcommand (global, for the virtual of line 2): start when web has no real
    # server in service
    - name: fallback-start-web
      events: [service.down]
      command: [/usr/local/sbin/sorry, --quiet, start, '192.168.6.240:80', tcp]
      service: web

    # ld.cf:1: fallbackcommand (global, for the virtual of line 2): stop when web has one again
    - name: fallback-stop-web
      events: [service.up]
      command: [/usr/local/sbin/sorry, --quiet, stop, '192.168.6.240:80', tcp]
      service: web

    # ld.cf:7: fallbackcommand (the virtual of line 5): start when tcp 192.168.6.240:443 has no real
    # server in service
    # ldirectord runs this text through the shell: so does the hook, its arguments in "$@"
    - name: fallback-start-tcp_192.168.6.240_443
      events: [service.down]
      command: [/bin/sh, -c, logger 'all down'; /usr/local/sbin/page "$@", sh, start, '192.168.6.240:443', tcp]
      service: tcp 192.168.6.240:443

    # ld.cf:7: fallbackcommand (the virtual of line 5): stop when tcp 192.168.6.240:443 has one
    # again
    # ldirectord runs this text through the shell: so does the hook, its arguments in "$@"
    - name: fallback-stop-tcp_192.168.6.240_443
      events: [service.up]
      command: [/bin/sh, -c, logger 'all down'; /usr/local/sbin/page "$@", sh, stop, '192.168.6.240:443', tcp]
      service: tcp 192.168.6.240:443

    # ld.cf:11: fallbackcommand (the virtual of line 8): start when udp [2001:db8::1]:53 has no real
    # server in service
    # ldirectord runs this text through the shell: so does the hook, its arguments in "$@"
    - name: fallback-start-udp__2001_db8__1__53
      events: [service.down]
      command: [/bin/sh, -c, pager "$@", sh, start, '[2001:db8::1]:53', udp]
      service: udp [2001:db8::1]:53

    # ld.cf:11: fallbackcommand (the virtual of line 8): stop when udp [2001:db8::1]:53 has one
    # again
    # ldirectord runs this text through the shell: so does the hook, its arguments in "$@"
    - name: fallback-stop-udp__2001_db8__1__53
      events: [service.up]
      command: [/bin/sh, -c, pager "$@", sh, stop, '[2001:db8::1]:53', udp]
      service: udp [2001:db8::1]:53
"""
    assert notify_section(result.text) == expected
    notes = messages(result.issues, "note")
    assert "ld.cf:1: fallbackcommand: converted to notify hooks" in notes and "run as its words" in notes
    assert "ld.cf:7: fallbackcommand: converted to notify hooks" in notes and "through /bin/sh -c" in notes
    assert not [i for i in result.issues if i.directive == "fallbackcommand" and i.severity == "warning"]
    config = parse_config(result.text)
    assert config.notify is not None
    assert [(h.service, sorted(h.events)) for h in config.notify.hooks][::2] == [
        ("web", ["service.down"]),
        ("tcp 192.168.6.240:443", ["service.down"]),
        ("udp [2001:db8::1]:53", ["service.down"]),
    ]


def test_fallbackcommand_shell_form_passes_ldirectords_arguments(tmp_path):
    """The /bin/sh -c form runs the text with ldirectord's three arguments appended, as
    ldirectord's system("TEXT start VIP:PORT PROTOCOL") does."""
    out = tmp_path / "args"
    script = tmp_path / "record"
    script.write_text(f'#!/bin/sh\nprintf "%s|" "$@" > {out}\n')
    script.chmod(0o755)
    cf = f'virtual=192.168.6.240:80\n\treal=192.168.6.2:80 gate\n\tfallbackcommand="true && {script} one"\n'
    hooks = yaml.safe_load(convert_text(cf, "ld.cf").text)["notify"]["hooks"]
    subprocess.run(hooks[0]["command"], check=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert out.read_text() == "one|start|192.168.6.240:80|tcp|"
    subprocess.run(hooks[1]["command"], check=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert out.read_text() == "one|stop|192.168.6.240:80|tcp|"


def test_fallbackcommand_of_a_fwmark_virtual_gets_ldirectords_arguments():
    cf = "fallbackcommand=/usr/local/sbin/sorry\nvirtual=7\n\treal=192.168.6.2 gate\n\tcheckport=80\n"
    hooks = yaml.safe_load(convert_text(cf, "ld.cf").text)["notify"]["hooks"]
    # ldirectord: $v->{server} is undefined and $v->{port} "0" for a fwmark virtual
    assert hooks[0]["command"] == ["/usr/local/sbin/sorry", "start", ":0", "fwm"]
    assert hooks[0]["service"] == "fwmark 7 (inet)"


def test_global_fallbackcommand_shadowed_everywhere_is_a_note():
    cf = "fallbackcommand=/usr/local/sbin/sorry\n" + WEB + "\tfallbackcommand=/usr/local/sbin/own\n"
    result = convert_text(cf, "ld.cf")
    hooks = yaml.safe_load(result.text)["notify"]["hooks"]
    assert [h["command"][0] for h in hooks] == ["/usr/local/sbin/own", "/usr/local/sbin/own"]
    assert "ld.cf:1: fallbackcommand: every virtual has its own fallbackcommand" in messages(result.issues, "note")


def test_more_hooks_than_directord_takes_is_an_error():
    cf = "fallbackcommand=/usr/local/sbin/sorry\n" + "".join(
        f"virtual=192.168.6.240:{port}\n\treal=192.168.6.2:{port} gate\n" for port in range(1000, 1129)
    )
    with pytest.raises(ConvertError) as info:
        convert_text(cf, "ld.cf")
    assert "ld.cf: notify: 258 hooks would be needed" in str(info.value)


def test_emailalert_points_to_the_example_hook():
    _, issues = conv('emailalert="root@example.com"\n' + WEB)
    assert "etc/hooks/email-alert" in messages(issues, "warning")
    hook = Path(__file__).resolve().parents[2] / "etc" / "hooks" / "email-alert"
    assert os.access(hook, os.X_OK)
    assert subprocess.run(["sh", "-n", str(hook)], check=False).returncode == 0
