"""Tests of the ``bgp:`` section of the YAML configuration (`director.config.bgp`): the model it
builds (`ha.bgp.model.BgpConfig`), every rule with the line, column, field and message of its
error, the warnings about the virtual services of the VIPs, and the bounds on hostile sizes.

The section is parsed through `director.config.parse_config` / `load_config`, so locations and
field paths are those a user sees.  A location is written in a case as the text of the document
with ``»`` just before the character the issue must point at.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from director.cli import main as cli_main
from director.config import ConfigError, ConfigIssue, load_config, parse_config
from director.config.bgp import parse_bgp
from ha.bgp.model import (
    MAX_NEIGHBORS,
    MAX_VIPS,
    BfdSettings,
    BgpConfig,
    MinHealthy,
    Neighbor,
    SpeakerSettings,
    VipAnnouncement,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "directord-bgp.yaml"
HB_DATA = ROOT / "tests" / "data" / "heartbeat"

#: Virtual services on 192.0.2.10 (two), 2001:db8::10 and a fwmark service; lines 1-25.
SERVICES = """\
virtual_services:
  - name: web
    address: 192.0.2.10
    port: 80
    scheduler: mh
    scheduler_flags: [mh-port, mh-fallback]
    real_servers: [{address: 10.0.1.21}, {address: 10.0.1.22}]
  - name: web443
    address: 192.0.2.10
    port: 443
    scheduler: mh
    scheduler_flags: [mh-fallback]
    real_servers: [{address: 10.0.1.21}, {address: 10.0.1.22}]
  - name: web6
    address: "2001:db8::10"
    port: 80
    scheduler: mh
    scheduler_flags: [mh-fallback]
    real_servers: [{address: "2001:db8:1::21"}]
  - name: marked
    fwmark: 7
    scheduler: mh
    check: {type: none}
    real_servers: [{address: 10.0.1.21}]
  - {name: other, address: 192.0.2.99, port: 80, scheduler: mh, real_servers: [{address: 10.0.1.21}]}
"""

MINIMAL = """
local_as: 65001
neighbors: [{address: 10.0.0.1, as: 65000}]
vips: [192.0.2.10]
"""


def doc(body: str, services: str = SERVICES) -> str:
    """The virtual services, then ``bgp:`` with ``body`` (dedented) under it."""
    return services + "bgp:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ") + "\n"


def parse_bgp_text(body: str, services: str = SERVICES) -> BgpConfig:
    config = parse_config(doc(body, services), "t.yaml")
    assert config.bgp is not None
    return config.bgp


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    return info.value.issues


def position(text: str, marked: str) -> tuple[int, int]:
    """Line and column (1-based) of the character after ``»`` in ``marked``, a piece of ``text``."""
    before, after = marked.split("»")
    start = text.index(before + after)
    assert text.count(before + after) == 1, f"{marked!r} is not unique in the document"
    offset = start + len(before)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def assert_only(text: str, marked: str, field: str, message: str) -> None:
    issues = issues_of(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    issue = issues[0]
    assert (issue.field, issue.message) == (field, message), str(issue)
    assert (issue.line, issue.column) == position(text, marked), str(issue)


def warnings_of(text: str) -> list[str]:
    return list(parse_config(text, "t.yaml").warnings)


@pytest.fixture
def keys(tmp_path: Path) -> str:
    """A valid authkeys file at mode 600 (heartbeat's sha1 test key), for an ha: section."""
    path = tmp_path / "authkeys"
    shutil.copyfile(HB_DATA / "authkeys.sha1", path)
    path.chmod(0o600)
    return str(path)


#: web443's scheduler lines in SERVICES.
WEB443_MH = "port: 443\n    scheduler: mh\n    scheduler_flags: [mh-fallback]"

# --- the sample and the model ---------------------------------------------------------------


def test_the_sample_file_loads_into_the_model():
    config = load_config(str(SAMPLE))
    assert [(s.name, s.scheduler, sorted(s.scheduler_flags), s.forwarding) for s in config.services] == [
        ("web", "mh", ["mh-fallback", "mh-port"], "dr")
    ]
    assert config.bgp == BgpConfig(
        local_as=65001,
        router_id="10.0.0.11",
        neighbors=(Neighbor("10.0.0.1", 65000, "r1"), Neighbor("10.0.0.2", 65000, "r2")),
        vips=(VipAnnouncement("192.0.2.10", communities=((65001, 100),), min_healthy=MinHealthy(count=2)),),
        bfd=BfdSettings(100, 3),
        graceful_shutdown_wait=5.0,
    )
    assert config.warnings == () and config.ha is None


def test_directord_check_passes_the_sample(capsys):
    assert cli_main(["check", "-c", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{SAMPLE}: OK (1 virtual services, 3 real servers)\n"
    assert err == ""


def test_defaults_and_the_shorthand_vip():
    assert parse_bgp_text(MINIMAL) == BgpConfig(
        local_as=65001,
        neighbors=(
            Neighbor(
                address="10.0.0.1",
                remote_as=65000,
                name="n1",
                hold_time=3,
                bfd=True,
                password=None,
                source_address=None,
                multihop=None,
                port=179,
            ),
        ),
        vips=(VipAnnouncement("192.0.2.10", (), (), None, 0, MinHealthy(count=1, percent=None)),),
        router_id=None,
        bfd=BfdSettings(interval_ms=100, multiplier=3),
        graceful_shutdown_wait=5.0,
        kernel_table=221,
        interface="lo",
        speaker=SpeakerSettings("/usr/sbin/bird", "/run/directord/bgp"),
    )


def test_every_key_set():
    bgp = parse_bgp_text(
        """
        local_as: 4294967295
        router_id: 10.0.0.11
        neighbors:
          - address: 2001:DB8:0::1
            as: 1
            name: Edge_1
            hold_time: 65535
            bfd: false
            password: 's3cret !#$%&'
            source_address: 2001:db8:0:0::11
            multihop: 255
            port: 1179
          - {address: 10.0.0.2, as: 65000}
        bfd: {interval: 250ms, multiplier: 255}
        graceful_shutdown_wait: 0
        kernel_table: 4294967295
        interface: bond0.100
        speaker: {binary: /opt/bird/sbin/bird, run_dir: /run/bgp}
        vips:
          - address: 2001:0db8::0010
            min_healthy: "12.5%"
            communities: ["0:0", "65535:65535"]
            large_communities: ["4294967295:0:4294967295"]
            med: 4294967295
            prepend: 16
          - {address: 192.0.2.10, min_healthy: 2, med: 0}
        """
    )
    assert bgp == BgpConfig(
        local_as=4294967295,
        router_id="10.0.0.11",
        neighbors=(
            Neighbor("2001:db8::1", 1, "Edge_1", 65535, False, "s3cret !#$%&", "2001:db8::11", 255, 1179),
            Neighbor("10.0.0.2", 65000, "n2"),
        ),
        vips=(
            VipAnnouncement(
                "2001:db8::10",
                communities=((0, 0), (65535, 65535)),
                large_communities=((4294967295, 0, 4294967295),),
                med=4294967295,
                prepend=16,
                min_healthy=MinHealthy(count=None, percent=12.5),
            ),
            VipAnnouncement("192.0.2.10", med=0, min_healthy=MinHealthy(count=2)),
        ),
        bfd=BfdSettings(interval_ms=250, multiplier=255),
        graceful_shutdown_wait=0.0,
        kernel_table=4294967295,
        interface="bond0.100",
        speaker=SpeakerSettings("/opt/bird/sbin/bird", "/run/bgp"),
    )


@pytest.mark.parametrize(
    ("written", "seconds", "interval", "interval_ms"),
    [("500ms", 0.5, "10ms", 10), ("2s", 2.0, 10, 10_000), (1.5, 1.5, 0.1, 100), (600, 600.0, "15000us", 15)],
)
def test_durations_are_written_as_in_ha(written, seconds, interval, interval_ms):
    bgp = parse_bgp_text(MINIMAL + f"graceful_shutdown_wait: {written}\nbfd: {{interval: {interval}}}\n")
    assert bgp.graceful_shutdown_wait == seconds
    assert bgp.bfd == BfdSettings(interval_ms=interval_ms, multiplier=3)


@pytest.mark.parametrize(
    ("written", "healthy"),
    [
        ("1", MinHealthy(count=1)),
        ("4294967295", MinHealthy(count=4294967295)),
        ('"50%"', MinHealthy(count=None, percent=50.0)),
        ('"100%"', MinHealthy(count=None, percent=100.0)),
        ('"1%"', MinHealthy(count=None, percent=1.0)),
        ('"33.333%"', MinHealthy(count=None, percent=33.333)),
        ("75%", MinHealthy(count=None, percent=75.0)),  # a plain YAML string too
    ],
)
def test_min_healthy_is_a_count_or_a_percentage(written, healthy):
    bgp = parse_bgp_text(
        MINIMAL.replace("vips: [192.0.2.10]", f"vips: [{{address: 192.0.2.10, min_healthy: {written}}}]")
    )
    assert bgp.vips[0].min_healthy == healthy
    if healthy.percent == 50.0:
        assert healthy.needed(3) == 2 and healthy.text() == "50%"


def test_neighbour_names_default_by_position_and_mix_with_given_ones():
    bgp = parse_bgp_text(
        """
        local_as: 65001
        neighbors: [{address: 10.0.0.1, as: 1, name: r1}, {address: 10.0.0.2, as: 2}, {address: 10.0.0.3, as: 3}]
        vips: [192.0.2.10]
        """
    )
    assert [n.name for n in bgp.neighbors] == ["r1", "n2", "n3"]


def test_ha_and_bgp_coexist_for_different_vips(keys):
    text = doc(MINIMAL) + textwrap.dedent(
        f"""\
        ha:
          nodes: [dir1, dir2]
          node: dir1
          media: [bcast eth1]
          authkeys: {keys}
          resources: ["dir1 192.0.2.99/32/eth0"]
        """
    )
    config = parse_config(text, "t.yaml")
    assert config.bgp is not None and config.ha is not None
    assert [v.address for v in config.bgp.vips] == ["192.0.2.10"]
    assert config.ha.groups[0].resources[0].address == "192.0.2.99"


# --- errors: every rule, located -------------------------------------------------------------

N1 = "neighbors: [{address: 10.0.0.1, as: 65000}]"
V1 = "vips: [192.0.2.10]"


def case(*lines: str) -> str:
    return doc("\n".join(lines))


ERRORS = [
    # the section's own keys
    (
        case(N1, V1),
        "bgp:\n  »neighbors",
        "bgp.local_as",
        "missing required key 'local_as' (this director's AS number)",
    ),
    (case("local_as: 0", N1, V1), "local_as: »0", "bgp.local_as", "AS number 0 is out of range 1..4294967295"),
    (
        case("local_as: 4294967296", N1, V1),
        "local_as: »4294967296",
        "bgp.local_as",
        "AS number 4294967296 is out of range 1..4294967295",
    ),
    (
        case('local_as: "65001"', N1, V1),
        'local_as: »"65001"',
        "bgp.local_as",
        "expected an integer, got string '65001'",
    ),
    (case("local_as: true", N1, V1), "local_as: »true", "bgp.local_as", "expected an integer, got boolean True"),
    (
        case("local_as: 1", "localas: 2", N1, V1),
        "»localas: 2",
        "bgp.localas",
        "unknown key 'localas'; did you mean 'local_as'?",
    ),
    (
        case("local_as: 1", "router_id: 10.0.0", N1, V1),
        "router_id: »10.0.0",
        "bgp.router_id",
        "a router id is an IPv4 address, got '10.0.0'",
    ),
    (
        case("local_as: 1", "router_id: '2001:db8::1'", N1, V1),
        "router_id: »'2001",
        "bgp.router_id",
        "a router id is an IPv4 address, got '2001:db8::1'",
    ),
    (
        case("local_as: 1", "router_id: 0.0.0.0", N1, V1),
        "router_id: »0.0.0.0",
        "bgp.router_id",
        "a router id must not be 0.0.0.0",
    ),
    (
        case("local_as: 1", N1, V1, "kernel_table: 254"),
        "kernel_table: »254",
        "bgp.kernel_table",
        "table 254 is the kernel's main table; choose another (default 221)",
    ),
    (
        case("local_as: 1", N1, V1, "kernel_table: 253"),
        "kernel_table: »253",
        "bgp.kernel_table",
        "table 253 is the kernel's default table; choose another (default 221)",
    ),
    (
        case("local_as: 1", N1, V1, "kernel_table: 255"),
        "kernel_table: »255",
        "bgp.kernel_table",
        "table 255 is the kernel's local table; choose another (default 221)",
    ),
    (
        case("local_as: 1", N1, V1, "kernel_table: 0"),
        "kernel_table: »0",
        "bgp.kernel_table",
        "table 0 is out of range 1..4294967295",
    ),
    (
        case("local_as: 1", N1, V1, "interface: eth0/1"),
        "interface: »eth0/1",
        "bgp.interface",
        "invalid interface name 'eth0/1' (no '/', ':', blanks or NUL; not '.' or '..')",
    ),
    (
        case("local_as: 1", N1, V1, "interface: abcdefghijklmnopq"),
        "interface: »abcdefghijklmnopq",
        "bgp.interface",
        "interface name 'abcdefghijklmnopq' is longer than 15 bytes",
    ),
    (
        case("local_as: 1", N1, V1, "graceful_shutdown_wait: 601"),
        "graceful_shutdown_wait: »601",
        "bgp.graceful_shutdown_wait",
        "must be 0..600 seconds, got 601 s",
    ),
    (
        case("local_as: 1", N1, V1, "graceful_shutdown_wait: -1"),
        "graceful_shutdown_wait: »-1",
        "bgp.graceful_shutdown_wait",
        "must be 0..600 seconds, got -1 s",
    ),
    (
        case("local_as: 1", N1, V1, "graceful_shutdown_wait: soon"),
        "graceful_shutdown_wait: »soon",
        "bgp.graceful_shutdown_wait",
        "not a time: 'soon'; write seconds (0.5) or a string with a unit: '500ms', '500000us', '0.5s'",
    ),
    # bfd and speaker
    (
        case("local_as: 1", N1, V1, "bfd: {interval: 9ms}"),
        "interval: »9ms",
        "bgp.bfd.interval",
        "must be 0.01..10 seconds, got 0.009 s",
    ),
    (
        case("local_as: 1", N1, V1, "bfd: {interval: 10001ms}"),
        "interval: »10001ms",
        "bgp.bfd.interval",
        "must be 0.01..10 seconds, got 10.001 s",
    ),
    (
        case("local_as: 1", N1, V1, "bfd: {multiplier: 0}"),
        "multiplier: »0",
        "bgp.bfd.multiplier",
        "multiplier 0 is out of range 1..255",
    ),
    (
        case("local_as: 1", N1, V1, "bfd: {multiplier: 256}"),
        "multiplier: »256",
        "bgp.bfd.multiplier",
        "multiplier 256 is out of range 1..255",
    ),
    (
        case("local_as: 1", N1, V1, "bfd: {intervall: 1}"),
        "{»intervall",
        "bgp.bfd.intervall",
        "unknown key 'intervall'; did you mean 'interval'?",
    ),
    (case("local_as: 1", N1, V1, "bfd: 100"), "bfd: »100", "bgp.bfd", "expected a mapping, got integer 100"),
    (
        case("local_as: 1", N1, V1, "speaker: {binary: bird}"),
        "binary: »bird",
        "bgp.speaker.binary",
        "must be an absolute path of at most 4095 bytes, without NUL or newline, got 'bird'",
    ),
    (
        case("local_as: 1", N1, V1, 'speaker: {run_dir: "/run/a\\nb"}'),
        'run_dir: »"/run',
        "bgp.speaker.run_dir",
        "must be an absolute path of at most 4095 bytes, without NUL or newline, got '/run/a\\nb'",
    ),
    (
        case("local_as: 1", N1, V1, "speaker: {run_dir: /" + "d" * 98 + "}"),
        "run_dir: »/ddd",
        "bgp.speaker.run_dir",
        f"BIRD's control socket '/{'d' * 59}'... would be longer than 107 bytes (the longest unix socket path): "
        "choose a shorter run_dir",
    ),
    (
        case("local_as: 1", N1, V1, "speaker: {config: /x}"),
        "{»config",
        "bgp.speaker.config",
        "unknown key 'config'; valid keys: binary, run_dir",
    ),
    # neighbours
    (
        case("local_as: 1", V1),
        "bgp:\n  »local_as",
        "bgp.neighbors",
        "missing required key 'neighbors' (the routers to open sessions with)",
    ),
    (case("local_as: 1", "neighbors: []", V1), "neighbors: »[]", "bgp.neighbors", "must list at least one neighbour"),
    (
        case("local_as: 1", "neighbors: 10.0.0.1", V1),
        "neighbors: »10.0.0.1",
        "bgp.neighbors",
        "expected a list, got string '10.0.0.1'",
    ),
    (
        case("local_as: 1", "neighbors: [10.0.0.1]", V1),
        "neighbors: [»10.0.0.1",
        "bgp.neighbors[0]",
        "expected a mapping, got string '10.0.0.1'",
    ),
    (
        case("local_as: 1", "neighbors: [{as: 2}]", V1),
        "neighbors: [»{as",
        "bgp.neighbors[0].address",
        "missing required key 'address' (the router's IP address)",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1}]", V1),
        "neighbors: [»{address",
        "bgp.neighbors[0].as",
        "missing required key 'as' (the router's AS number)",
    ),
    (
        case("local_as: 1", "neighbors: [{address: router1, as: 2}]", V1),
        "address: »router1",
        "bgp.neighbors[0].address",
        "address is not an IP address: 'router1'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 'fe80::1%eth0', as: 2}]", V1),
        "address: »'fe80",
        "bgp.neighbors[0].address",
        "address is not an IP address: 'fe80::1%eth0'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 224.0.0.5, as: 2}]", V1),
        "address: »224",
        "bgp.neighbors[0].address",
        "224.0.0.5 cannot be a neighbour (unspecified or multicast)",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2}, {address: 'fe80::1', as: 2}]", V1),
        "address: »'fe80",
        "bgp.neighbors[1].address",
        "fe80::1 is link-local: a session to it needs an interface, which is not supported; use the router's "
        "global address",
    ),
    (
        case(
            "local_as: 1",
            "neighbors: [{address: '2001:db8::1', as: 2}, {address: '2001:DB8:0::1', as: 3}]",
            "vips: ['2001:db8::10']",
        ),
        "address: »'2001:DB8",
        "bgp.neighbors[1].address",
        "duplicate neighbour 2001:db8::1 (same as neighbors[0])",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2}, {address: 10.0.0.2, as: 2, name: n1}]", V1),
        "name: »n1",
        "bgp.neighbors[1].name",
        "duplicate neighbour name 'n1' (same as neighbors[0])",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, name: n2}, {address: 10.0.0.2, as: 2}]", V1),
        "n2}, »{address: 10.0.0.2",
        "bgp.neighbors[1]",
        "duplicate neighbour name 'n2' (same as neighbors[0])",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, name: 1r}]", V1),
        "name: »1r",
        "bgp.neighbors[0].name",
        "a neighbour name is a letter, then letters, digits or '_', at most 32 characters; got '1r'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, name: r-1}]", V1),
        "name: »r-1",
        "bgp.neighbors[0].name",
        "a neighbour name is a letter, then letters, digits or '_', at most 32 characters; got 'r-1'",
    ),
    (
        case("local_as: 1", f"neighbors: [{{address: 10.0.0.1, as: 2, name: {'r' * 33}}}]", V1),
        "name: »rrr",
        "bgp.neighbors[0].name",
        f"a neighbour name is a letter, then letters, digits or '_', at most 32 characters; got '{'r' * 33}'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 4294967296}]", V1),
        "as: »4294967296",
        "bgp.neighbors[0].as",
        "AS number 4294967296 is out of range 1..4294967295",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, hold_time: 2}]", V1),
        "hold_time: »2",
        "bgp.neighbors[0].hold_time",
        "hold time 2 is out of range 3..65535",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, hold_time: 65536}]", V1),
        "hold_time: »65536",
        "bgp.neighbors[0].hold_time",
        "hold time 65536 is out of range 3..65535",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, hold_time: 3s}]", V1),
        "hold_time: »3s",
        "bgp.neighbors[0].hold_time",
        "expected an integer, got string '3s'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, bfd: yes please}]", V1),
        "bfd: »yes",
        "bgp.neighbors[0].bfd",
        "expected true or false, got string 'yes please'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, password: 'a\"b'}]", V1),
        "password: »'a",
        "bgp.neighbors[0].password",
        "a password is printable ASCII without '\"' or '\\'; it holds '\"'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, password: 'a\\b'}]", V1),
        "password: »'a",
        "bgp.neighbors[0].password",
        "a password is printable ASCII without '\"' or '\\'; it holds '\\\\'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, password: 'clé'}]", V1),
        "password: »'cl",
        "bgp.neighbors[0].password",
        "a password is printable ASCII without '\"' or '\\'; it holds 'é'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, password: '\\t'}]".replace("'\\t'", '"\\t"'), V1),
        'password: »"',
        "bgp.neighbors[0].password",
        "a password is printable ASCII without '\"' or '\\'; it holds '\\t'",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, password: ''}]", V1),
        "password: »''",
        "bgp.neighbors[0].password",
        "a TCP MD5 password is 1..80 characters, got 0",
    ),
    (
        case("local_as: 1", f"neighbors: [{{address: 10.0.0.1, as: 2, password: {'p' * 81}}}]", V1),
        "password: »ppp",
        "bgp.neighbors[0].password",
        "a TCP MD5 password is 1..80 characters, got 81",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, source_address: '2001:db8::11'}]", V1),
        "source_address: »'2001",
        "bgp.neighbors[0].source_address",
        "source_address 2001:db8::11 is not of the family of the neighbour's address 10.0.0.1",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, multihop: 0}]", V1),
        "multihop: »0",
        "bgp.neighbors[0].multihop",
        "multihop TTL 0 is out of range 1..255",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, multihop: 256}]", V1),
        "multihop: »256",
        "bgp.neighbors[0].multihop",
        "multihop TTL 256 is out of range 1..255",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, port: 0}]", V1),
        "port: »0",
        "bgp.neighbors[0].port",
        "port 0 is out of range 1..65535",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, holdtime: 9}]", V1),
        "»holdtime",
        "bgp.neighbors[0].holdtime",
        "unknown key 'holdtime'; did you mean 'hold_time'?",
    ),
    (
        case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 2, password_file: /x}]", V1),
        "»password_file",
        "bgp.neighbors[0].password_file",
        "unknown key 'password_file'; did you mean 'password'?",
    ),
    # VIPs
    (
        case("local_as: 1", N1),
        "bgp:\n  »local_as",
        "bgp.vips",
        "missing required key 'vips' (the addresses to announce)",
    ),
    (case("local_as: 1", N1, "vips: []"), "vips: »[]", "bgp.vips", "must list at least one VIP"),
    (
        case("local_as: 1", N1, "vips: [80]"),
        "vips: [»80",
        "bgp.vips[0]",
        "expected an address or a mapping (address, min_healthy...), got integer 80",
    ),
    (
        case("local_as: 1", N1, "vips: [[192.0.2.10]]"),
        "vips: [»[",
        "bgp.vips[0]",
        "expected an address or a mapping (address, min_healthy...), got list",
    ),
    (case("local_as: 1", N1, "vips: [www]"), "vips: [»www", "bgp.vips[0]", "VIP is not an IP address: 'www'"),
    (
        case("local_as: 1", N1, "vips: [192.0.2.0/24]"),
        "vips: [»192",
        "bgp.vips[0]",
        "VIP is not an IP address: '192.0.2.0/24'",
    ),
    (
        case("local_as: 1", N1, "vips: [0.0.0.0]"),
        "vips: [»0.0.0.0",
        "bgp.vips[0]",
        "0.0.0.0 cannot be announced (unspecified, multicast or loopback)",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 127.0.0.1}]"),
        "address: »127",
        "bgp.vips[0].address",
        "127.0.0.1 cannot be announced (unspecified, multicast or loopback)",
    ),
    (
        case("local_as: 1", N1, "vips: [{min_healthy: 1}]"),
        "vips: [»{min",
        "bgp.vips[0].address",
        "missing required key 'address' (the VIP)",
    ),
    (
        case("local_as: 1", N1, "vips: [192.0.2.11]"),
        "vips: [»192.0.2.11",
        "bgp.vips[0]",
        "VIP 192.0.2.11 is the address of no virtual service (fwmark services do not count)",
    ),
    (
        case("local_as: 1", N1, "vips: [192.0.2.10, {address: 192.0.2.010}]".replace("192.0.2.010", "192.0.2.10 ")),
        "address: »192.0.2.10 ",
        "bgp.vips[1].address",
        "duplicate VIP 192.0.2.10 (same as vips[0])",
    ),
    (
        case("local_as: 1", N1, "vips: [192.0.2.10, '2001:DB8::10']"),
        "»'2001:DB8::10'",
        "bgp.vips[1]",
        "VIP 2001:db8::10 is IPv6 but no neighbour is: it could not be announced",
    ),
    (
        case("local_as: 1", "neighbors: [{address: '2001:db8::1', as: 2}]", "vips: [192.0.2.10, '2001:db8::10']"),
        "vips: [»192",
        "bgp.vips[0]",
        "VIP 192.0.2.10 is IPv4 but no neighbour is: it could not be announced",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, weight: 3}]"),
        "»weight",
        "bgp.vips[0].weight",
        "unknown key 'weight'; valid keys: address, min_healthy, communities, large_communities, med, prepend",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, med: -1}]"),
        "med: »-1",
        "bgp.vips[0].med",
        "MED -1 is out of range 0..4294967295",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, prepend: 17}]"),
        "prepend: »17",
        "bgp.vips[0].prepend",
        "prepend 17 is out of range 0..16",
    ),
    # min_healthy
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: 0}]"),
        "min_healthy: »0",
        "bgp.vips[0].min_healthy",
        "min_healthy 0 is out of range 1..4294967295",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: '0.5%'}]"),
        "min_healthy: »'0.5%'",
        "bgp.vips[0].min_healthy",
        "a percentage must be 1..100%, got '0.5%'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: '100.01%'}]"),
        "min_healthy: »'100.01%'",
        "bgp.vips[0].min_healthy",
        "a percentage must be 1..100%, got '100.01%'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: '50'}]"),
        "min_healthy: »'50'",
        "bgp.vips[0].min_healthy",
        "expected a count (2) or a percentage (\"50%\"), got '50'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: '-5%'}]"),
        "min_healthy: »'-5%'",
        "bgp.vips[0].min_healthy",
        "expected a count (2) or a percentage (\"50%\"), got '-5%'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: 1.5}]"),
        "min_healthy: »1.5",
        "bgp.vips[0].min_healthy",
        'expected a count (2) or a percentage ("50%"), got number 1.5',
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, min_healthy: true}]"),
        "min_healthy: »true",
        "bgp.vips[0].min_healthy",
        'expected a count (2) or a percentage ("50%"), got boolean True',
    ),
    # communities
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, communities: [65001:10]}]"),
        "communities: [»65001:10",
        "bgp.vips[0].communities[0]",
        "expected a string 'ASN:VALUE', got the integer 3900070: quote it (YAML 1.1 reads some unquoted A:B "
        "values as base-60 numbers)",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, communities: ['65536:1']}]"),
        "communities: [»'65536",
        "bgp.vips[0].communities[0]",
        "expected 'ASN:VALUE' with each part 0..65535, got '65536:1'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, communities: ['1:2:3']}]"),
        "communities: [»'1:2:3'",
        "bgp.vips[0].communities[0]",
        "expected 'ASN:VALUE' with each part 0..65535, got '1:2:3'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, communities: ['1:2', 'no-export']}]"),
        "»'no-export'",
        "bgp.vips[0].communities[1]",
        "expected 'ASN:VALUE' with each part 0..65535, got 'no-export'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, communities: '1:2'}]"),
        "communities: »'1:2'",
        "bgp.vips[0].communities",
        "expected a list, got string '1:2'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, large_communities: ['4294967296:1:1']}]"),
        "large_communities: [»'4294967296",
        "bgp.vips[0].large_communities[0]",
        "expected 'ASN:DATA1:DATA2' with each part 0..4294967295, got '4294967296:1:1'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, large_communities: ['1:2']}]"),
        "large_communities: [»'1:2'",
        "bgp.vips[0].large_communities[0]",
        "expected 'ASN:DATA1:DATA2' with each part 0..4294967295, got '1:2'",
    ),
    (
        case("local_as: 1", N1, "vips: [{address: 192.0.2.10, large_communities: [65001:1:2]}]"),
        "large_communities: [»65001",
        "bgp.vips[0].large_communities[0]",
        "expected a string 'ASN:DATA1:DATA2', got the integer 234003662: quote it (YAML 1.1 reads some "
        "unquoted A:B values as base-60 numbers)",
    ),
    # fwmark services do not make a VIP
    (
        case("local_as: 1", N1, "vips: [10.0.1.21]"),
        "vips: [»10.0.1.21",
        "bgp.vips[0]",
        "VIP 10.0.1.21 is the address of no virtual service (fwmark services do not count)",
    ),
]


@pytest.mark.parametrize(("text", "marked", "field", "message"), ERRORS, ids=[e[2] + ":" + e[3][:30] for e in ERRORS])
def test_each_error_is_located(text, marked, field, message):
    assert_only(text, marked, field, message)


def test_the_section_must_be_a_mapping():
    text = SERVICES + "bgp: [65001]\n"
    assert_only(text, "bgp: »[", "bgp", "expected a mapping, got list")


def test_a_vip_of_the_ha_section_is_refused(keys):
    text = doc(MINIMAL) + textwrap.dedent(
        f"""\
        ha:
          nodes: [dir1, dir2]
          node: dir1
          media: [bcast eth1]
          authkeys: {keys}
          resources: ["dir2 192.0.2.10/32/eth0"]
        """
    )
    assert_only(
        text,
        "vips: [»192.0.2.10]",
        "bgp.vips[0]",
        "VIP 192.0.2.10 is in both ha and bgp (a resource of dir2 in ha.resources): a VIP is either moved "
        "between two directors or announced by all of them",
    )


def test_a_vip_of_a_service_with_another_problem_is_not_also_said_to_be_missing():
    services = SERVICES.replace("port: 443", "port: 70000")
    issues = issues_of(doc(MINIMAL, services))
    assert [(i.field, i.message) for i in issues] == [
        ("virtual_services[1].port", "port 70000 is out of range 1..65535")
    ]


def test_an_invalid_neighbour_does_not_also_leave_its_family_without_neighbours():
    text = case("local_as: 1", "neighbors: [{address: 10.0.0.1, as: 0}]", V1)
    assert [i.field for i in issues_of(text)] == ["bgp.neighbors[0].as"]


def test_every_problem_is_reported_at_once():
    text = case(
        "local_as: 0",
        "neighbors: [{address: 10.0.0.1, as: 2, hold_time: 1}, {address: x, as: 2}]",
        "kernel_table: 254",
        "vips: [192.0.2.77, {address: 192.0.2.10, prepend: 99}]",
    )
    assert [i.field for i in issues_of(text)] == [
        "bgp.local_as",
        "bgp.neighbors[0].hold_time",
        "bgp.neighbors[1].address",
        "bgp.kernel_table",
        "bgp.vips[0]",
        "bgp.vips[1].prepend",
    ]


def test_the_top_level_messages_name_the_bgp_section():
    [empty] = issues_of("")
    assert empty.message == (
        "the configuration file is empty (expected a mapping with global, virtual_services, ha, bgp and notify "
        "sections)"
    )
    [listed] = issues_of("- 1\n")
    assert listed.message == "the top level must be a mapping (global, virtual_services, ha, bgp, notify), got list"
    [unknown] = issues_of("bpg: {}\n")
    assert unknown.message.startswith("unknown key 'bpg'") and "bgp" in unknown.message


def test_parse_bgp_needs_a_bgp_mapping():
    with pytest.raises(TypeError, match="'bgp' value is a mapping"):
        parse_bgp({"bgp": [1]}, "t.yaml", [], None)


# --- warnings ------------------------------------------------------------------------------------


WARN_SCHEDULER = (
    "flows a router rehashes to another director land on another real server; use mh (Maglev hashing) for active-active"
)
WARN_NAT = (
    "replies of a NAT service must pass the director that took the request; with ECMP they may not; use dr or tun"
)


def located(text: str, marked: str, field: str, message: str) -> str:
    line, column = position(text, marked)
    return f"t.yaml:{line}:{column}: {field}: {message}"


def test_a_scheduler_other_than_mh_is_a_warning():
    text = doc(
        MINIMAL,
        SERVICES.replace(
            "port: 443\n    scheduler: mh\n    scheduler_flags: [mh-fallback]", "port: 443\n    scheduler: wlc"
        ),
    )
    assert warnings_of(text) == [
        located(
            text,
            "scheduler: »wlc",
            "virtual_services[1].scheduler",
            f"virtual service web443 on BGP VIP 192.0.2.10 uses scheduler wlc: {WARN_SCHEDULER}",
        )
    ]


def test_the_default_scheduler_is_a_warning_located_at_its_service():
    services = (
        "virtual_services:\n  - {name: web, address: 192.0.2.10, port: 80, real_servers: [{address: 10.0.1.21}]}\n"
    )
    text = doc(MINIMAL, services)
    assert warnings_of(text) == [
        located(
            text,
            "  - »{name: web",
            "virtual_services[0].scheduler",
            f"virtual service web on BGP VIP 192.0.2.10 uses scheduler wlc: {WARN_SCHEDULER}",
        )
    ]


def test_nat_is_a_warning_at_the_service_or_at_the_real_server():
    services = textwrap.dedent(
        """\
        virtual_services:
          - {name: a, address: 192.0.2.10, port: 1, forwarding: nat, scheduler: mh, scheduler_flags: [mh-fallback],
              real_servers: [{address: 10.1.1.9}]}
          - name: b
            address: 192.0.2.10
            port: 81
            scheduler: mh
            scheduler_flags: [mh-fallback]
            forwarding: tun
            real_servers: [{address: 10.0.1.21}, {address: 10.0.1.22, port: 8080, forwarding: nat}]
        """
    )
    text = doc(MINIMAL, services)
    assert warnings_of(text) == [
        located(
            text,
            "forwarding: »nat, sched",
            "virtual_services[0].forwarding",
            f"virtual service a on BGP VIP 192.0.2.10 forwards with nat: {WARN_NAT}",
        ),
        located(
            text,
            "forwarding: »nat}",
            "virtual_services[1].real_servers[1].forwarding",
            f"real server 10.0.1.22 of virtual service b on BGP VIP 192.0.2.10 forwards with nat: {WARN_NAT}",
        ),
    ]


def test_mh_and_dr_give_no_warning_with_or_without_mh_port():
    assert warnings_of(doc(MINIMAL)) == []
    no_port = SERVICES.replace("    scheduler_flags: [mh-port, mh-fallback]\n", "    scheduler_flags: [mh-fallback]\n")
    assert warnings_of(doc(MINIMAL, no_port)) == []


def test_mh_without_mh_fallback_or_with_on_failure_remove_is_a_warning():
    services = SERVICES.replace("[mh-port, mh-fallback]", "[mh-port]").replace(
        "  - name: web443\n", "  - name: web443\n    on_failure: remove\n"
    )
    text = doc(MINIMAL, services)
    assert warnings_of(text) == [
        located(
            text,
            "scheduler_flags: »[mh-port]",
            "virtual_services[0].scheduler_flags",
            "virtual service web on BGP VIP 192.0.2.10 has no mh-fallback: a real server at weight 0 keeps its "
            "slots in mh's table, so a new flow hashed to it is dropped; add mh-fallback to send those flows to "
            "the next real server",
        ),
        located(
            text,
            "on_failure: »remove",
            "virtual_services[1].on_failure",
            "virtual service web443 on BGP VIP 192.0.2.10 removes failed real servers: deleting and re-adding a "
            "real server rebuilds mh's table in another order than on the other directors, so they choose other "
            "real servers for some flows; use on_failure: quiescent",
        ),
    ]


def test_services_of_other_addresses_and_fwmark_services_give_no_warning():
    services = SERVICES.replace(
        "{name: other, address: 192.0.2.99, port: 80, scheduler: mh",
        "{name: other, address: 192.0.2.99, port: 80, scheduler: rr",
    )
    services = services.replace("fwmark: 7\n    scheduler: mh", "fwmark: 7\n    scheduler: wlc")
    assert warnings_of(doc(MINIMAL, services)) == []
    assert warnings_of(services) == []  # nor any file without a bgp section


def test_a_min_healthy_above_the_real_servers_is_a_warning():
    text = doc(MINIMAL.replace("vips: [192.0.2.10]", "vips: [{address: 192.0.2.10, min_healthy: 3}]"))
    assert warnings_of(text) == [
        located(
            text,
            f"  - »name: {name}\n",
            f"virtual_services[{index}]",
            f"virtual service {name} on BGP VIP 192.0.2.10 has 2 real servers, fewer than the VIP's min_healthy 3: "
            "the VIP is never announced",
        )
        for index, name in ((0, "web"), (1, "web443"))
    ]


def test_directord_check_prints_the_warnings_and_passes(tmp_path, capsys):
    path = tmp_path / "d.yaml"
    path.write_text(
        doc(
            MINIMAL,
            SERVICES.replace(
                "port: 443\n    scheduler: mh\n    scheduler_flags: [mh-fallback]", "port: 443\n    scheduler: rr"
            ),
        )
    )
    assert cli_main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK (5 virtual services, 7 real servers)\n"
    assert err.splitlines() == [
        f"warning: {path}:11:16: virtual_services[1].scheduler: virtual service web443 on BGP VIP 192.0.2.10 uses "
        f"scheduler rr: {WARN_SCHEDULER}"
    ]


# --- hostile sizes -------------------------------------------------------------------------------


def test_too_many_neighbours_is_one_error_and_none_is_read():
    items = ", ".join(f"{{address: 10.0.{i // 256}.{i % 256}, as: 0}}" for i in range(MAX_NEIGHBORS + 1))
    text = case("local_as: 1", f"neighbors: [{items}]", V1)
    issues = issues_of(text)
    assert [(i.field, i.message) for i in issues] == [("bgp.neighbors", f"{MAX_NEIGHBORS + 1} neighbours; at most 64")]
    assert (issues[0].line, issues[0].column) == position(text, "neighbors: »[")


def test_as_many_neighbours_as_allowed_load():
    items = ", ".join(f"{{address: 10.0.0.{i + 1}, as: 65000}}" for i in range(MAX_NEIGHBORS))
    bgp = parse_bgp_text(f"local_as: 1\nneighbors: [{items}]\n{V1}\n")
    assert len(bgp.neighbors) == MAX_NEIGHBORS and bgp.neighbors[-1].name == f"n{MAX_NEIGHBORS}"


def test_too_many_vips_is_one_error_and_none_is_read():
    items = ", ".join(f"10.1.{i // 256}.{i % 256}" for i in range(MAX_VIPS + 1))
    text = case("local_as: 1", N1, f"vips: [{items}]")
    issues = issues_of(text)
    assert [(i.field, i.message) for i in issues] == [("bgp.vips", f"{MAX_VIPS + 1} VIPs; at most {MAX_VIPS}")]


def test_too_many_communities_is_one_error():
    many = ", ".join(f"'1:{i}'" for i in range(33))
    text = case("local_as: 1", N1, f"vips: [{{address: 192.0.2.10, communities: [{many}]}}]")
    assert_only(text, "communities: »[", "bgp.vips[0].communities", "33 communities; at most 32")
    text = case("local_as: 1", N1, f"vips: [{{address: 192.0.2.10, large_communities: [{many}]}}]")
    assert_only(text, "large_communities: »[", "bgp.vips[0].large_communities", "33 communities; at most 32")


def test_huge_values_are_quoted_short():
    text = case("local_as: 1", f"neighbors: [{{address: {'x' * 100_000}, as: 2}}]", V1)
    [issue] = issues_of(text)
    assert issue.field == "bgp.neighbors[0].address"
    assert issue.message == f"address is not an IP address: '{'x' * 60}'..."
    text = case("local_as: 1", N1, f"vips: [{{address: 192.0.2.10, min_healthy: '{'9' * 100_000}%'}}]")
    [issue] = issues_of(text)
    assert issue.message == f"expected a count (2) or a percentage (\"50%\"), got '{'9' * 60}'..."
    text = case("local_as: 1", N1, f"vips: [{{address: 192.0.2.10, communities: ['{'1' * 100_000}:1']}}]")
    [issue] = issues_of(text)
    assert issue.message == f"expected 'ASN:VALUE' with each part 0..65535, got '{'1' * 60}'..."
