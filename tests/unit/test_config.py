"""Tests of director.config: loading, located errors, semantic rules, conversion."""

from __future__ import annotations

import dataclasses
import socket
import textwrap
from pathlib import Path

import pytest

from checks.spec import CheckSpec
from director.config import ConfigError, ConfigIssue, format_issues, load_config, parse_config
from director.model import FallbackServer, Persistence, ServiceKey, Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "directord.yaml"
CONFIGS = Path(__file__).resolve().parent / "configs"


def yaml_text(text: str) -> str:
    """Dedent a test document; its first line is line 1."""
    return textwrap.dedent(text).lstrip("\n")


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text(text), "t.yaml")
    return info.value.issues


def only_issue(text: str) -> ConfigIssue:
    issues = issues_of(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def parse(text: str):
    return parse_config(yaml_text(text), "t.yaml")


# --- the sample configuration -------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    return load_config(str(SAMPLE))


def test_sample_settings(sample):
    assert sample.path == str(SAMPLE)
    assert sample.settings == Settings(10.0, 300.0, "/run/directord/directord.sock")


def test_sample_service_keys_and_names(sample):
    assert [s.name for s in sample.services] == ["web", "dns", "web-https-fwmark"]
    web, dns, fw = sample.services
    assert web.key == ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "192.168.10.100", 80)
    assert dns.key == ServiceKey(socket.AF_INET, socket.IPPROTO_UDP, "192.168.10.100", 53)
    assert fw.key == ServiceKey(socket.AF_INET, 0, "", 0, fwmark=10)
    assert [s.line for s in sample.services] == [14, 50, 64]


def test_sample_web_service(sample):
    web = sample.services[0]
    assert web.scheduler == "wrr"
    assert web.scheduler_flags == frozenset()
    assert web.persistence == Persistence(timeout=300, netmask="255.255.255.255")
    assert web.on_failure == "quiescent"
    assert web.fallback == FallbackServer("127.0.0.1", 80, weight=1, forwarding="dr")
    first, second = web.real_servers
    assert (first.address, first.port, first.weight, first.line) == ("192.168.10.11", 80, 3, 39)
    assert (second.upper_threshold, second.lower_threshold, second.line) == (500, 400, 42)
    # forwarding inherited from the service
    assert first.forwarding == second.forwarding == "dr"


def test_sample_merged_checks(sample):
    web = sample.services[0]
    service_check = CheckSpec(
        type="http",
        path="/healthz",
        host="www.example.com",
        expect_status=frozenset({200, 204}),
        expect_body="ok",
        interval=1.0,
        timeout=1.0,
        rise=2,
        fall=2,
    )
    assert web.check == service_check
    first, second = web.real_servers
    assert first.check == service_check
    # the real server overrides only the path; everything else comes from the service
    assert second.check == CheckSpec(
        type="http",
        path="/ready",
        host="www.example.com",
        expect_status=frozenset({200, 204}),
        expect_body="ok",
        interval=1.0,
        timeout=1.0,
        rise=2,
        fall=2,
    )


def test_sample_udp_and_fwmark_services(sample):
    _, dns, fw = sample.services
    assert dns.scheduler == "sh" and dns.scheduler_flags == frozenset({"sh-port"})
    assert dns.check.type == "external"
    assert dns.check.command == ("/usr/local/lib/directord/check-dns",)
    assert dns.check.timeout == 2.0 and dns.check.interval == 1.0  # default interval
    assert [(r.address, r.port) for r in dns.real_servers] == [("192.168.10.11", 53), ("192.168.10.12", 53)]
    assert fw.check.type == "https" and fw.check.port == 443 and fw.check.verify_tls == "none"
    # real servers of a fwmark service keep the packet's port
    assert [(r.address, r.port) for r in fw.real_servers] == [("192.168.10.11", 0), ("192.168.10.12", 0)]
    assert all(r.check.port == 443 for r in fw.real_servers)


def test_sample_is_hashable_and_deterministic(sample):
    again = load_config(str(SAMPLE))
    assert again == sample
    assert hash(again) == hash(sample)
    assert isinstance(sample.services, tuple)
    assert isinstance(sample.services[0].real_servers, tuple)


# --- other valid files ------------------------------------------------------------------


def test_ipv6_service_with_tun_ipv4_real_server():
    config = load_config(str(CONFIGS / "ipv6_tun.yaml"))
    assert config.settings.reconcile_interval == 2.5 and config.settings.drain_timeout == 0.0
    (svc,) = config.services
    assert svc.key == ServiceKey(socket.AF_INET6, socket.IPPROTO_TCP, "2001:db8::10", 443)
    assert svc.name == "tcp [2001:db8::10]:443"  # default name: the key's text form
    assert svc.persistence == Persistence(timeout=600, netmask=128)
    assert svc.scheduler_flags == frozenset({"mh-port", "mh-fallback"})
    assert svc.on_failure == "remove"
    v6, v4 = svc.real_servers
    assert (v6.address, v6.port, v6.forwarding) == ("2001:db8::21", 8443, "nat")
    assert (v4.address, v4.port, v4.forwarding, v4.weight) == ("10.1.0.22", 443, "tun", 0)
    assert svc.fallback == FallbackServer("::1", 8080, weight=5, forwarding="nat")


def test_minimal_file_has_no_services():
    config = load_config(str(CONFIGS / "minimal.yaml"))
    assert config.services == ()
    assert config.settings == Settings()


def test_defaults():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - address: 10.0.0.2
            fallback:
              address: 10.0.0.9
        """
    )
    (svc,) = config.services
    assert svc.scheduler == "wlc" and svc.forwarding == "dr" and svc.on_failure == "quiescent"
    assert svc.persistence is None
    assert svc.check == CheckSpec()
    (rs,) = svc.real_servers
    assert (rs.port, rs.weight, rs.forwarding, rs.check) == (80, 1, "dr", CheckSpec())
    assert svc.fallback == FallbackServer("10.0.0.9", 80, weight=1, forwarding="dr")


def test_the_check_schema_defaults_are_the_check_spec_defaults():
    # the loader passes on only the check keys a file gives and CheckSpec fills in the rest,
    # so CheckSchema's defaults only document the result: they must say what CheckSpec does
    from director.config import CheckSchema

    documented = CheckSchema().model_dump()
    spec = CheckSpec()
    assert documented.keys() == {f.name for f in dataclasses.fields(CheckSpec)}
    for name, value in documented.items():
        want = getattr(spec, name)
        want = sorted(want) if isinstance(want, frozenset) else list(want) if isinstance(want, tuple) else want
        assert value == want, name


def test_times_accept_ints_and_floats():
    config = parse(
        """
        global: {reconcile_interval: 3, drain_timeout: 0.5}
        virtual_services:
          - {address: 10.0.0.1, port: 80, check: {interval: 2, timeout: 0.25}}
        """
    )
    assert config.settings.reconcile_interval == 3.0
    assert isinstance(config.settings.reconcile_interval, float)
    check = config.services[0].check
    assert (check.interval, check.timeout) == (2.0, 0.25)
    assert isinstance(check.interval, float)


def test_retry_interval_defaults_and_merges():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {retry_interval: 0.2}
            real_servers:
              - {address: 10.0.0.2}
              - {address: 10.0.0.3, check: {retry_interval: 1}}
        """
    )
    svc = config.services[0]
    assert svc.check.retry_interval == 0.2
    assert [rs.check.retry_interval for rs in svc.real_servers] == [0.2, 1.0]
    assert isinstance(svc.real_servers[1].check.retry_interval, float)
    assert parse("virtual_services: [{address: 10.0.0.1, port: 80}]").services[0].check.retry_interval == 0.5


def test_retry_interval_must_be_positive():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check:
              retry_interval: 0
        """
    )
    assert (issue.line, issue.field) == (5, "virtual_services[0].check.retry_interval")
    assert "retry_interval must be 0.05..3600 seconds, got 0" in issue.message


def test_real_server_forwarding_overrides_service():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            forwarding: nat
            real_servers:
              - {address: 10.0.0.2, port: 8080}
              - {address: 10.0.0.3, forwarding: dr}
            fallback: {address: 10.0.0.9, port: 8081}
        """
    )
    a, b = config.services[0].real_servers
    assert (a.forwarding, a.port) == ("nat", 8080)
    assert (b.forwarding, b.port) == ("dr", 80)
    assert config.services[0].fallback == FallbackServer("10.0.0.9", 8081, forwarding="nat")


def test_addresses_are_canonicalised():
    config = parse(
        """
        virtual_services:
          - address: "2001:DB8:0000::1"
            port: 80
            real_servers: [{address: "2001:db8:0:0:0:0:0:0002"}]
        """
    )
    svc = config.services[0]
    assert svc.key.address == "2001:db8::1"
    assert svc.real_servers[0].address == "2001:db8::2"


def test_ipv4_persistence_netmask_default_and_canonical():
    config = parse(
        """
        virtual_services:
          - {address: 10.0.0.1, port: 80, persistence: {}}
          - {address: 10.0.0.1, port: 81, persistence: {timeout: 60, netmask: 255.255.255.0}}
        """
    )
    assert config.services[0].persistence == Persistence(300, "255.255.255.255")
    assert config.services[1].persistence == Persistence(60, "255.255.255.0")


def test_check_merge_real_server_wins_field_by_field():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {type: http, path: /a, rise: 3}
            real_servers:
              - address: 10.0.0.2
                check: {path: /b, fall: 5, type: tcp}
        """
    )
    rs = config.services[0].real_servers[0]
    assert rs.check == CheckSpec(type="tcp", path="/b", rise=3, fall=5)
    assert config.services[0].check == CheckSpec(type="http", path="/a", rise=3)


def test_yaml_merge_keys_are_not_duplicates():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: &chk {type: http, path: /h}
            real_servers:
              - address: 10.0.0.2
                check:
                  <<: *chk
                  path: /override
        """
    )
    check = config.services[0].real_servers[0].check
    assert (check.type, check.path) == ("http", "/override")


def test_ha_section_issues_join_the_others():
    issues = issues_of(
        """
        global:
          drain_timeout: -1
        ha:
          node: a
          nodes: [a, b]
          whatever: {deep: true}
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (2, "global.drain_timeout"),
        (4, "ha.media"),
        (4, "ha.authkeys"),
        (6, "ha.whatever"),
    ]


# --- error reporting: format --------------------------------------------------------------


def test_issue_and_error_formatting():
    issue = ConfigIssue("f.yaml", 3, 7, "virtual_services[0].port", "bad")
    assert str(issue) == "f.yaml:3:7: virtual_services[0].port: bad"
    assert str(ConfigIssue("f.yaml", 1, 1, "", "invalid YAML: x")) == "f.yaml:1:1: invalid YAML: x"
    other = ConfigIssue("f.yaml", 4, 1, "global", "worse")
    err = ConfigError([issue, other])
    assert str(err) == "f.yaml:3:7: virtual_services[0].port: bad\nf.yaml:4:1: global: worse"
    assert format_issues(err).splitlines() == [str(issue), str(other), "f.yaml: 2 errors"]


# --- error classes ---------------------------------------------------------------------------


def test_invalid_yaml():
    with pytest.raises(ConfigError) as info:
        load_config(str(CONFIGS / "invalid_syntax.yaml"))
    (issue,) = info.value.issues
    assert (issue.line, issue.column, issue.field) == (4, 10, "")
    assert "invalid YAML" in issue.message
    assert str(issue).startswith(f"{CONFIGS / 'invalid_syntax.yaml'}:4:10: invalid YAML")


def test_invalid_yaml_flow_sequence():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            scheduler_flags: [sh-port
        global: {}
        """
    )
    assert issue.line == 5 and issue.field == ""


def test_empty_file():
    issue = only_issue("# only a comment\n")
    assert (issue.line, issue.field) == (1, "")
    assert "empty" in issue.message


def test_top_level_not_a_mapping():
    issue = only_issue("- 1\n- 2\n")
    assert issue.line == 1 and "mapping" in issue.message


def test_duplicate_key():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            scheduler: rr
            port: 81
        """
    )
    assert (issue.line, issue.column, issue.field) == (5, 5, "virtual_services[0].port")
    assert issue.message == "duplicate key 'port' (first defined on line 3)"


def test_duplicate_top_level_key():
    issue = only_issue(
        """
        global: {}
        virtual_services: []
        global: {drain_timeout: 1}
        """
    )
    assert (issue.line, issue.field) == (3, "global")
    assert "line 1" in issue.message


def test_unknown_key_located_at_the_key():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - address: 10.0.0.2
                port: 80
                wieght: 3
        """
    )
    assert (issue.line, issue.column) == (7, 9)
    assert issue.field == "virtual_services[0].real_servers[0].wieght"
    assert issue.message == "unknown key 'wieght'; did you mean 'weight'?"


def test_unknown_top_level_key():
    issue = only_issue(
        """
        global: {}
        frobnicate: 1
        """
    )
    assert (issue.line, issue.field) == (2, "frobnicate")
    assert "global, ha, notify, virtual_services" in issue.message


def test_wrong_type_string_for_int():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: "80"
        """
    )
    assert (issue.line, issue.column, issue.field) == (3, 11, "virtual_services[0].port")
    assert issue.message == "expected an integer, got string '80'"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "expected an integer, got boolean True"),
        ("1.5", "expected an integer, got number 1.5"),
        ("[1]", "expected an integer, got list"),
    ],
)
def test_wrong_type_for_weight(value, message):
    issue = only_issue(
        f"""
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - address: 10.0.0.2
                weight: {value}
        """
    )
    assert (issue.line, issue.field) == (6, "virtual_services[0].real_servers[0].weight")
    assert issue.message == message


def test_wrong_type_bool_for_time_and_string_for_bool():
    issues = issues_of(
        """
        global:
          drain_timeout: yes
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {type: https, verify_tls: "no"}
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (2, "global.drain_timeout"),
        (6, "virtual_services[0].check.verify_tls"),
    ]


def test_wrong_literal_value():
    issue = only_issue(
        """
        virtual_services:
          - {address: 10.0.0.1, port: 80, forwarding: masq}
        """
    )
    assert issue.field == "virtual_services[0].forwarding"
    assert issue.message == "expected one of 'dr', 'nat' or 'tun', got string 'masq'"


def test_missing_required_key_located_at_mapping():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - port: 80
                weight: 2
        """
    )
    assert (issue.line, issue.column) == (5, 9)
    assert issue.field == "virtual_services[0].real_servers[0].address"
    assert issue.message == "missing required key 'address'"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_service_port_out_of_range(port):
    issue = only_issue(
        f"""
        virtual_services:
          - name: web
            address: 10.0.0.1
            port: {port}
        """
    )
    assert (issue.line, issue.field) == (4, "virtual_services[0].port")
    assert issue.message == f"port {port} is out of range 1..65535"


def test_real_server_port_out_of_range():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            forwarding: nat
            real_servers:
              - {address: 10.0.0.2, port: 8080}
              - {address: 10.0.0.3, port: 70000}
        """
    )
    assert (issue.line, issue.field) == (7, "virtual_services[0].real_servers[1].port")
    assert issue.message == "port 70000 is out of range 1..65535"


def test_real_server_port_zero_only_for_fwmark():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers: [{address: 10.0.0.2, port: 0}]
          - fwmark: 3
            check: {type: none}
            real_servers: [{address: 10.0.0.2, port: 0}]
        """
    )
    assert (issue.line, issue.field) == (4, "virtual_services[0].real_servers[0].port")
    assert "fwmark" in issue.message


@pytest.mark.parametrize("weight", [-1, 65536])
def test_weight_out_of_range(weight):
    issue = only_issue(
        f"""
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - address: 10.0.0.2
              - address: 10.0.0.3
                weight: {weight}
        """
    )
    assert (issue.line, issue.field) == (7, "virtual_services[0].real_servers[1].weight")
    assert issue.message == f"weight {weight} is out of range 0..65535"


def test_weight_bounds_accepted():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - {address: 10.0.0.2, weight: 0}
              - {address: 10.0.0.3, weight: 65535}
        """
    )
    assert [r.weight for r in config.services[0].real_servers] == [0, 65535]


def test_unknown_scheduler_lists_valid_ones():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            scheduler: leastconn
        """
    )
    assert (issue.line, issue.field) == (4, "virtual_services[0].scheduler")
    assert issue.message.startswith("unknown scheduler 'leastconn'; valid schedulers: dh, fo, lblc,")
    assert "wlc, wrr" in issue.message


def test_scheduler_flag_for_wrong_scheduler():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            scheduler: mh
            scheduler_flags:
              - mh-port
              - sh-fallback
        """
    )
    assert (issue.line, issue.field) == (7, "virtual_services[0].scheduler_flags[1]")
    assert issue.message == "scheduler flag 'sh-fallback' is only valid with scheduler sh, not 'mh'"


def test_unknown_scheduler_flag():
    issue = only_issue(
        """
        virtual_services:
          - {address: 10.0.0.1, port: 80, scheduler: sh, scheduler_flags: [sh-port, sh-sticky]}
        """
    )
    assert issue.field == "virtual_services[0].scheduler_flags[1]"
    assert issue.message.startswith("unknown scheduler flag 'sh-sticky'")


def test_duplicate_virtual_service_reports_both_lines():
    issue = only_issue(
        """
        virtual_services:
          - name: a
            address: 10.0.0.1
            port: 80
          - name: b
            address: 10.0.0.1
            port: 81
          - name: c
            address: "10.0.0.1"
            port: 80
        """
    )
    assert (issue.line, issue.field) == (8, "virtual_services[2]")
    assert "lines 2 and 8" in issue.message
    assert "tcp 10.0.0.1:80" in issue.message


def test_same_address_and_port_different_protocol_is_not_duplicate():
    config = parse(
        """
        virtual_services:
          - {address: 10.0.0.1, port: 53, protocol: tcp}
          - {address: 10.0.0.1, port: 53, protocol: udp, check: {type: none}}
        """
    )
    assert len(config.services) == 2


def test_duplicate_fwmark_service():
    issue = only_issue(
        """
        virtual_services:
          - {name: a, fwmark: 7, check: {type: none}}
          - {name: b, fwmark: 7, family: inet, check: {type: none}}
          - {name: c, fwmark: 7, family: inet6, check: {type: none}}
        """
    )
    assert (issue.line, issue.field) == (3, "virtual_services[1]")
    assert "lines 2 and 3" in issue.message


def test_duplicate_service_name():
    issue = only_issue(
        """
        virtual_services:
          - {name: web, address: 10.0.0.1, port: 80}
          - {name: web, address: 10.0.0.1, port: 443}
        """
    )
    assert (issue.line, issue.field) == (3, "virtual_services[1].name")
    assert "first used on line 2" in issue.message


def test_duplicate_real_server():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - {address: 10.0.0.2, port: 80}
              - {address: 10.0.0.3, port: 80}
              - {address: 10.0.0.2}
        """
    )
    assert (issue.line, issue.field) == (7, "virtual_services[0].real_servers[2]")
    assert issue.message == "duplicate real server 10.0.0.2:80 (first defined on line 5)"


def test_family_mismatch_outside_tun():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - address: 2001:db8::2
        """
    )
    assert (issue.line, issue.field) == (5, "virtual_services[0].real_servers[0].address")
    assert "IPv6" in issue.message and "IPv4" in issue.message and "tun" in issue.message


def test_family_mismatch_accepted_with_tun():
    config = parse(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            forwarding: tun
            real_servers:
              - address: 2001:db8::2
            fallback: {address: "::1"}
          - address: 2001:db8::1
            port: 80
            real_servers:
              - {address: 10.0.0.2, forwarding: tun}
        """
    )
    assert config.services[0].real_servers[0].forwarding == "tun"
    assert config.services[0].fallback == FallbackServer("::1", 80, forwarding="tun")
    assert config.services[1].real_servers[0].address == "10.0.0.2"


def test_fallback_family_mismatch():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            fallback: {address: "::1"}
        """
    )
    assert (issue.line, issue.field) == (4, "virtual_services[0].fallback.address")


def test_udp_service_with_http_check():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 53
            protocol: udp
            check:
              type: http
        """
    )
    assert (issue.line, issue.field) == (6, "virtual_services[0].check.type")
    assert "a UDP virtual service takes check types udp, dns, radius, sip, ping, external, none" in issue.message
    assert issue.message.endswith("external, none; the check type is http")


def test_udp_service_with_default_check_is_rejected():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 53
            protocol: udp
        """
    )
    assert (issue.line, issue.field) == (2, "virtual_services[0].check.type")
    assert "the check type is tcp" in issue.message


def test_udp_real_server_override_with_tcp_check():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 53
            protocol: sctp
            check: {type: none}
            real_servers:
              - address: 10.0.0.2
                check: {type: tcp}
        """
    )
    assert (issue.line, issue.field) == (8, "virtual_services[0].real_servers[0].check.type")
    assert "SCTP" in issue.message


def test_fwmark_service_without_check_port():
    issue = only_issue(
        """
        virtual_services:
          - fwmark: 10
            check:
              type: http
              path: /ok
            real_servers: [{address: 10.0.0.2}]
        """
    )
    assert (issue.line, issue.field) == (4, "virtual_services[0].check.port")
    assert "check.port" in issue.message


def test_fwmark_service_with_check_type_none_needs_no_port():
    config = parse(
        """
        virtual_services:
          - {fwmark: 10, family: inet6, check: {type: none}, real_servers: [{address: "2001:db8::5"}]}
        """
    )
    svc = config.services[0]
    assert svc.key == ServiceKey(socket.AF_INET6, 0, "", 0, 10)
    assert svc.name == "fwmark 10 (inet6)"


def test_service_with_address_and_fwmark():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            fwmark: 4
            check: {type: none}
        """
    )
    assert (issue.line, issue.field) == (2, "virtual_services[0].address")
    assert "either address and port" in issue.message


def test_service_without_address_or_fwmark():
    issues = issues_of(
        """
        virtual_services:
          - name: nothing
            scheduler: rr
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (2, "virtual_services[0].address"),
        (2, "virtual_services[0].port"),
    ]


def test_bad_regex():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check:
              type: http
              expect_body: "ok("
        """
    )
    assert (issue.line, issue.field) == (6, "virtual_services[0].check.expect_body")
    assert "not a regular expression the checker can use" in issue.message
    assert "use: missing ): ok( (it is matched with RE2" in issue.message


def test_expect_body_of_too_many_instructions_is_refused():
    # the checker's search time grows with the compiled pattern: a bound keeps it under a second
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {type: http, expect_body: "(?s).*a.{150}c"}
        """
    )
    assert issue.field == "virtual_services[0].check.expect_body"
    assert issue.message.startswith("expect_body compiles to 1063 RE2 instructions; at most 1000")
    parse("virtual_services:\n  - {address: 10.0.0.1, port: 80, check: {type: http, expect_body: '(?s).*a.{100}c'}}\n")


@pytest.mark.parametrize(
    ("check", "field", "text"),
    [
        ("{type: http, path: health}", "path", "must start with '/'"),
        ("{type: http, expect_status: [200, 99]}", "expect_status", "status code 99"),
        ("{type: http, expect_status: []}", "expect_status", "at least one"),
        ("{type: external}", "command", "non-empty command"),
        ("{type: external, command: []}", "command", "non-empty command"),
        ("{interval: 0}", "interval", "must be 0.05..3600 seconds, got 0"),
        ("{timeout: -1}", "timeout", "must be 0.01..3600 seconds, got -1"),
        ("{rise: 0}", "rise", "must be 1..1000, got 0"),
        ("{fall: 0}", "fall", "must be 1..1000, got 0"),
        ("{port: 0}", "port", "out of range"),
        ("{type: http, method: 'GET /'}", "method", "HTTP method"),
    ],
)
def test_check_field_rules(check, field, text):
    issue = only_issue(
        f"""
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {check}
        """
    )
    assert issue.line == 4
    assert issue.field == f"virtual_services[0].check.{field}"
    assert text in issue.message


def test_external_command_must_be_absolute_and_safe(tmp_path):
    """The checker runs the program as root: a relative name (PATH search, working directory), a
    directory, a file others can replace (in a directory writable by all, or writable itself)
    is refused; a program not deployed yet is accepted (the checker refuses it while missing)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for name in ("check", "writable"):
        (shared / name).write_text("#!/bin/sh\nexit 0\n")
    (shared / "check").chmod(0o755)
    safe = tmp_path / "safe"
    safe.mkdir()
    (safe / "check").write_text("#!/bin/sh\nexit 0\n")
    (safe / "check").chmod(0o755)
    (safe / "writable").write_text("#!/bin/sh\nexit 0\n")
    (safe / "writable").chmod(0o757)
    cases = {
        "check-port": "command must be an absolute path, got 'check-port'",
        "bin/check": "command must be an absolute path, got 'bin/check'",
        str(safe): f"command not executable: {safe} is a directory",
        str(shared / "check"): f"command not trusted: {shared} is writable by group or others (mode 0777)",
        str(safe / "writable"): f"command not trusted: {safe / 'writable'} is writable by group or others (mode 0757)",
    }
    for command, text in cases.items():
        issue = only_issue(
            f"""
            virtual_services:
              - address: 10.0.0.1
                port: 80
                check: {{type: external, command: ["{command}", "-v"]}}
            """
        )
        assert (issue.line, issue.field) == (4, "virtual_services[0].check.command"), issue
        assert issue.message == text
    for command in (safe / "check", tmp_path / "not-yet-deployed"):
        check = f"{{type: external, command: [{command}]}}"
        parse(f"virtual_services:\n  - {{address: 10.0.0.1, port: 80, check: {check}}}\n")


def test_service_check_problem_reported_once_not_per_real_server():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {type: http, path: nope}
            real_servers:
              - address: 10.0.0.2
              - address: 10.0.0.3
                check: {rise: 3}
        """
    )
    assert issue.field == "virtual_services[0].check.path"


def test_real_server_check_override_problem():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            check: {type: http}
            real_servers:
              - address: 10.0.0.2
                check: {path: nope}
        """
    )
    assert (issue.line, issue.field) == (7, "virtual_services[0].real_servers[0].check.path")


def test_dr_real_port_must_equal_virtual_port():
    issue = only_issue(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - {address: 10.0.0.2, port: 8080}
              - {address: 10.0.0.3, port: 8080, forwarding: nat}
        """
    )
    assert (issue.line, issue.field) == (5, "virtual_services[0].real_servers[0].port")
    assert "nat" in issue.message


def test_thresholds():
    issues = issues_of(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            real_servers:
              - {address: 10.0.0.2, upper_threshold: 100, lower_threshold: 200}
              - {address: 10.0.0.3, upper_threshold: -1}
              - {address: 10.0.0.4, upper_threshold: 100, lower_threshold: 100}
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (5, "virtual_services[0].real_servers[0].lower_threshold"),
        (6, "virtual_services[0].real_servers[1].upper_threshold"),
    ]


@pytest.mark.parametrize(
    ("vip", "netmask", "text"),
    [
        ("10.0.0.1", "255.0.255.0", "dotted netmask"),
        ("10.0.0.1", "24", "dotted netmask"),
        ("10.0.0.1", "0.0.0.0", "dotted netmask"),
        ('"2001:db8::1"', "0", "out of range 1..128"),
        ('"2001:db8::1"', "129", "out of range 1..128"),
        ('"2001:db8::1"', '"ffff::"', "prefix length"),
    ],
)
def test_persistence_netmask(vip, netmask, text):
    issue = only_issue(
        f"""
        virtual_services:
          - address: {vip}
            port: 80
            persistence:
              netmask: {netmask}
        """
    )
    assert (issue.line, issue.field) == (5, "virtual_services[0].persistence.netmask")
    assert text in issue.message


def test_persistence_timeout_and_on_failure():
    issues = issues_of(
        """
        virtual_services:
          - address: 10.0.0.1
            port: 80
            persistence: {timeout: 0}
          - address: 10.0.0.1
            port: 81
            on_failure: drop
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (4, "virtual_services[0].persistence.timeout"),
        (7, "virtual_services[1].on_failure"),
    ]
    assert issues[1].message == "expected one of 'quiescent' or 'remove', got string 'drop'"


def test_invalid_addresses():
    issues = issues_of(
        """
        virtual_services:
          - address: 10.0.0.300
            port: 80
            real_servers:
              - address: www.example.com
              - address: "fe80::1%eth0"
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (2, "virtual_services[0].address"),
        (5, "virtual_services[0].real_servers[0].address"),
        (6, "virtual_services[0].real_servers[1].address"),
    ]
    assert issues[0].message == "not an IP address: '10.0.0.300'"


def test_global_settings_rules():
    issues = issues_of(
        """
        global:
          reconcile_interval: 0
          drain_timeout: -1
          control_socket: run/directord.sock
        """
    )
    assert [(i.line, i.field) for i in issues] == [
        (2, "global.reconcile_interval"),
        (3, "global.drain_timeout"),
        (4, "global.control_socket"),
    ]


def test_ha_must_be_a_mapping():
    issue = only_issue("ha: [a, b]\n")
    assert (issue.line, issue.field) == (1, "ha")


def test_several_errors_in_one_file_all_reported():
    with pytest.raises(ConfigError) as info:
        load_config(str(CONFIGS / "several_errors.yaml"))
    found = [(i.line, i.field) for i in info.value.issues]
    assert found == [
        (2, "global.reconcile_interval"),
        (3, "global.drain_timeot"),
        (9, "virtual_services[0].scheduler_flags[0]"),
        (12, "virtual_services[0].check.path"),
        (13, "virtual_services[0].check.expect_body"),
        (15, "virtual_services[0].real_servers[0].weight"),
        (16, "virtual_services[0].real_servers[1].port"),
        (18, "virtual_services[1]"),
        (18, "virtual_services[1].name"),
        (22, "virtual_services[1].real_servers[0].wieght"),
        (28, "virtual_services[2].check.type"),
    ]
    text = str(info.value)
    assert len(text.splitlines()) == 11
    assert f"{CONFIGS / 'several_errors.yaml'}:16:40: virtual_services[0].real_servers[1].port: " in text


# --- load_config I/O -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    (issue,) = info.value.issues
    assert (issue.line, issue.field) == (0, "")
    assert str(issue).startswith(f"{path}: cannot read: No such file or directory")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"global:\n  control_socket: /run/d\xe9.sock\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    (issue,) = info.value.issues
    assert (issue.line, issue.column) == (2, 25)
    assert "UTF-8" in issue.message


def test_unprintable_character():
    issue = only_issue("global:\n  control_socket: /run/a\x07\n")
    assert (issue.line, issue.field) == (2, "")
    assert "U+0007" in issue.message
