"""The check keys of the protocol checks, TLS modes, agents and slow start: what the loader
accepts, what it becomes (`checks.spec.CheckSpec`), and the located errors of what it refuses."""

from __future__ import annotations

import textwrap

import pytest

from director.config import ConfigError, parse_config


def parse(text: str):
    return parse_config(textwrap.dedent(text).lstrip("\n"), "t.yaml")


def issues(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [(i.line, i.field, i.message) for i in info.value.issues]


def service(check: str, protocol: str = "tcp", port: int = 80) -> str:
    return f"""
        virtual_services:
          - name: s
            address: 10.0.0.1
            port: {port}
            protocol: {protocol}
            check: {check}
            real_servers: [{{address: 10.0.0.2, weight: 10}}]
        """


def test_dns_check_takes_the_services_protocol_as_transport():
    udp = parse(service("{type: dns, query_name: example.com, query_type: MX}", "udp", 53)).services[0].check
    assert (udp.type, udp.transport, udp.query_name, udp.query_type) == ("dns", "udp", "example.com", "MX")
    tcp = parse(service("{type: dns, query_name: example.com}", "tcp", 53)).services[0].check
    assert tcp.transport == "tcp"


def test_dialogue_steps_become_pairs_and_verify_tls_a_mode():
    check = (
        parse(
            service(
                '{type: tcp, verify_tls: true, dialogue: [{expect: "^220 "}, {fail: "^5"}, {send: "EHLO x\\r\\n"}, '
                "{starttls: true}]}",
                port=25,
            )
        )
        .services[0]
        .check
    )
    assert check.dialogue == (("expect", "^220 "), ("fail", "^5"), ("send", "EHLO x\r\n"), ("starttls", ""))
    assert check.verify_tls == "full"
    assert parse(service("{type: https, verify_tls: chain}", port=443)).services[0].check.verify_tls == "chain"
    assert parse(service("{type: https, verify_tls: false}", port=443)).services[0].check.verify_tls == "none"


def test_agent_and_slow_start_keys():
    check = parse(service("{type: http, agent_port: 9777, agent_send: hello, slow_start: 30}")).services[0].check
    assert (check.agent_port, check.agent_send, check.slow_start) == (9777, "hello", 30.0)


@pytest.mark.parametrize(
    ("check", "protocol", "field", "message"),
    [
        ("{type: http}", "udp", "type", "a UDP virtual service takes check types udp, dns, radius, sip, ping"),
        ("{type: dns}", "udp", "query_name", "a dns check needs query_name"),
        ("{type: dns, query_name: 'bad name!'}", "udp", "query_name", "query_name must be a DNS name"),
        ("{type: dns, query_name: a.b, query_type: XX}", "udp", "query_type", "query_type must be one of A, AAAA"),
        ("{type: dns, query_name: a.b, expect_rcode: OK}", "udp", "expect_rcode", "expect_rcode must be one of"),
        ("{type: udp}", "udp", "send", "a udp check needs send"),
        ("{type: udp, send: 'π'}", "udp", "send", "send must be Latin-1 text"),
        ("{type: udp, send: x, expect: '(a'}", "udp", "expect", "expect is not a regular expression"),
        ("{type: radius}", "udp", "secret", "a radius check needs secret"),
        ("{type: mysql}", "tcp", "login", "a mysql check needs login"),
        ("{type: http, dialogue: [{send: x}]}", "tcp", "dialogue", "dialogue is for tcp checks"),
        ("{type: tcp, dialogue: [{send: x, expect: y}]}", "tcp", "dialogue[0]", "exactly one key"),
        ("{type: tcp, dialogue: [{starttls: false}]}", "tcp", "dialogue[0]", "starttls: false is not a step"),
        ("{type: tcp, dialogue: [{send: x}, {fail: y}]}", "tcp", "dialogue", "step 2's fail must follow an expect"),
        ("{type: tcp, dialogue: [{fail: y}]}", "tcp", "dialogue", "step 1's fail must follow an expect step"),
        ("{type: tcp, dialogue: [{expect: x}, {fail: '(a'}]}", "tcp", "dialogue", "step 2's fail is not a regular"),
        ("{type: tcp, tls: true, dialogue: [{starttls: true}]}", "tcp", "dialogue", "has TLS already"),
        ("{type: https, verify_tls: 1}", "tcp", "verify_tls", "expected true, false, none, chain or full"),
        ("{type: https, verify_tls: maybe}", "tcp", "verify_tls", "expected one of"),
        ("{type: https, ca_file: ca.pem}", "tcp", "ca_file", "ca_file must be an absolute path"),
        ("{type: http, agent_port: 70000}", "tcp", "agent_port", "agent_port 70000 is out of range"),
        ("{type: http, dynamic_weight: true}", "tcp", "dynamic_weight", "dynamic_weight is for external checks"),
        ("{type: http, slow_start: -1}", "tcp", "slow_start", "slow_start must be 0..3600 seconds"),
        ("{type: ping}", "sctp", None, None),
        # what checks.protocols.radius and checks.protocols.sip would refuse at run time
        (
            "{type: radius, secret: s, login: " + "u" * 254 + "}",
            "udp",
            "login",
            "at most 253 bytes (RFC 2865 section 5.1",
        ),
        ("{type: radius, secret: s, login: " + "é" * 127 + "}", "udp", "login", "got 254"),  # bytes, not characters
        ("{type: radius, secret: s, login: u, password: " + "p" * 129 + "}", "udp", "password", "at most 128 bytes"),
        ('{type: radius, secret: s, login: "\\ud800"}', "udp", "login", "a radius login must be text UTF-8 can"),
        ("{type: sip, login: alice smith@example.com}", "udp", "login", "sip login must be user@host without spaces"),
        ("{type: sip, login: 'alice@example.com>;x'}", "udp", "login", "sip login must be user@host"),
        ('{type: sip, login: "alice\\x1b@example.com"}', "udp", "login", "control characters"),
        (
            '{type: sip, login: "a@b\\r\\nX-Evil: 1"}',
            "udp",
            "login",
            "login must not hold a line break (CR, LF) or NUL",
        ),
        ('{type: sip, login: "a@b\\0"}', "udp", "login", "login must not hold a line break"),
        ('{type: sip, login: "\\ud800@b"}', "udp", "login", "sip login must be text UTF-8 can encode"),
        ("{type: radius, secret: s, login: " + "u" * 253 + ", password: " + "p" * 128 + "}", "udp", None, None),
        ('{type: radius, secret: s, login: "a b\\tc", password: "p\\r\\nq"}', "udp", None, None),  # binary attributes
        ("{type: sip, login: alice@example.com}", "udp", None, None),
    ],
)
def test_bad_check_keys_are_located(check, protocol, field, message):
    text = service(check, protocol)
    if field is None:
        parse(text)  # accepted
        return
    found = issues(text)
    assert len(found) == 1, found
    line, where, said = found[0]
    assert line == 6 and where == f"virtual_services[0].check.{field}", found
    assert message in said, said


def test_a_credential_problem_is_located_at_its_own_line():
    text = """
        virtual_services:
          - name: s
            address: 10.0.0.1
            port: 5060
            protocol: udp
            check:
              type: sip
              login: "alice@example.com\\r\\nVia: x"
            real_servers: [{address: 10.0.0.2, weight: 10}]
        """
    assert issues(text) == [
        (
            8,
            "virtual_services[0].check.login",
            "login must not hold a line break (CR, LF) or NUL: it is sent inside one command line",
        )
    ]
