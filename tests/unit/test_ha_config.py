"""Tests of the ``ha:`` section of the YAML configuration (`director.config.ha`), heartbeat's rules
(`ha.config`) and the environment check (`ha.environment`).

The section is parsed through `director.config.parse_config` / `load_config`,
so locations and field paths are those a user sees.  Authkeys files are made
in ``tmp_path`` with explicit modes.  The environment check runs only inside
a network namespace the test creates (root only), never on this host's links.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

import director.config.ha as section
from director.config import ConfigError, ConfigIssue, load_config, parse_config
from director.config.ha import parse_duration
from ha.config import default_node_name, heartbeat_msec, resolve_timers
from ha.environment import check_ha_environment
from ha.model import HAConfig, Medium, Resource, ResourceGroup, Timers

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "directord-ha.yaml"
CONFIGS = Path(__file__).resolve().parent / "configs"
HB_DATA = ROOT / "tests" / "data" / "heartbeat"


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> str:
    """A valid authkeys file at mode 600 (heartbeat's sha1 test key)."""
    path = tmp_path / "authkeys"
    shutil.copyfile(HB_DATA / "authkeys.sha1", path)
    path.chmod(0o600)
    return str(path)


def doc(body: str, keys: str | None = None) -> str:
    """A document whose line 1 is ``ha:`` and whose body (indented by the caller's dedent) follows."""
    text = "ha:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ") + "\n"
    return text.replace("KEYS", keys or "")


BASE = """
nodes: [dir1, dir2]
node: dir1
media: [bcast eth1]
authkeys: KEYS
"""


def parse_ha_text(body: str, keys: str) -> HAConfig:
    config = parse_config(doc(body, keys), "t.yaml")
    assert config.ha is not None
    return config.ha


def ha_issues(body: str, keys: str | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc(body, keys), "t.yaml")
    return info.value.issues


def only(body: str, keys: str | None = None) -> ConfigIssue:
    issues = ha_issues(body, keys)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


# --- the samples and fixtures -----------------------------------------------------------------


def test_sample_file(tmp_path: Path, keys: str):
    text = SAMPLE.read_text()
    assert "authkeys: /etc/directord/authkeys" in text
    copy = tmp_path / "directord-ha.yaml"
    copy.write_text(text.replace("/etc/directord/authkeys", keys))
    config = load_config(str(copy))
    assert [s.name for s in config.services] == ["web"]
    assert config.ha == HAConfig(
        node="dir1",
        nodes=("dir1", "dir2"),
        media=(Medium("bcast", "eth1"), Medium("ucast", "eth0", peer="192.168.10.3")),
        authkeys=keys,
        udpport=694,
        timers=Timers(keepalive=0.2, warntime=0.4, deadtime=0.8, initdead=3.0),
        auto_failback=True,
        groups=(ResourceGroup("dir1", (Resource("192.168.10.100", 32, "eth0"),)),),
        ping_nodes=("192.168.10.1",),
        compat="directord",
        state_dir="/var/lib/directord",
        announce_repeats=3,
        announce_interval=1.1,
        announce_refresh=0.0,
        line=text.splitlines().index("ha:") + 1,
    )


def test_heartbeat_fixture_with_relative_authkeys(tmp_path: Path):
    shutil.copyfile(CONFIGS / "ha_heartbeat.yaml", tmp_path / "c.yaml")
    shutil.copyfile(HB_DATA / "authkeys.sha1", tmp_path / "authkeys")
    (tmp_path / "authkeys").chmod(0o600)
    ha = load_config(str(tmp_path / "c.yaml")).ha
    assert ha is not None
    assert ha.compat == "heartbeat" and ha.line == 3
    assert ha.node == "nodea" and ha.nodes == ("nodea", "nodeb")
    assert ha.authkeys == str(tmp_path / "authkeys")
    assert ha.media == (
        Medium("bcast", "eth0"),
        Medium("bcast", "eth1"),
        Medium("mcast", "eth2", group="239.0.0.42", port=694, ttl=1, loop=False),
        Medium("ucast", "eth3", peer="10.250.0.2"),
    )
    assert ha.timers == Timers(keepalive=1.0, warntime=4.0, deadtime=8.0, initdead=16.0)
    assert ha.auto_failback == "legacy"
    assert ha.groups == (
        ResourceGroup("nodea", (Resource("10.250.0.100", 24, "eth0"),)),
        ResourceGroup("nodeb", (Resource("10.250.0.101", 24, "eth0"), Resource("10.250.0.102", 24, "eth0"))),
    )


def test_heartbeat_haresources_line_of_the_capture_pair(keys: str):
    line = (HB_DATA / "haresources").read_text().strip()
    ha = parse_ha_text(
        f"""
        nodes: [nodea, nodeb]
        node: nodea
        media: [bcast eth0]
        authkeys: KEYS
        resources: ["{line}"]
        """,
        keys,
    )
    assert ha.groups == (ResourceGroup("nodea", (Resource("10.250.0.100", 24, "eth0"),)),)


def test_error_fixture_reports_everything_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(str(CONFIGS / "ha_errors.yaml"))
    found = [(i.line, i.field) for i in info.value.issues]
    assert found == [
        (3, "ha.node"),
        (4, "ha.nodes[2]"),
        (6, "ha.media[0]"),
        (7, "ha.media[1]"),
        (8, "ha.media[2]"),
        (9, "ha.media[3].peer"),
        (10, "ha.media[4].ttl"),
        (11, "ha.udpport"),
        (12, "ha.authkeys"),
        (14, "ha.deadtime"),
        (15, "ha.warntime"),
        (16, "ha.auto_failback"),
        (18, "ha.resources[0].owner"),
        (19, "ha.resources[0].addresses[0]"),
        (20, "ha.resources[1]"),
        (21, "ha.ping_nodes[0]"),
        (22, "ha.compat"),
        (23, "ha.state_dir"),
        (24, "ha.announce_interval"),
        (25, "ha.frobnicate"),
    ]
    text = str(info.value)
    assert f"{CONFIGS / 'ha_errors.yaml'}:14:13: ha.deadtime: deadtime 2 s must exceed 2 x keepalive 1 s" in text
    assert "ha.frobnicate: unknown key 'frobnicate'" in text


# --- defaults of the two profiles --------------------------------------------------------------


def test_directord_defaults(keys: str):
    ha = parse_ha_text(BASE, keys)
    assert ha == HAConfig(node="dir1", nodes=("dir1", "dir2"), media=(Medium("bcast", "eth1"),), authkeys=keys, line=1)
    assert ha.timers == Timers(keepalive=0.2, warntime=0.4, deadtime=0.8, initdead=3.0)
    assert ha.auto_failback is True and ha.compat == "directord" and ha.udpport == 694
    assert (ha.groups, ha.ping_nodes, ha.state_dir) == ((), (), "/var/lib/directord")
    assert (ha.announce_repeats, ha.announce_interval, ha.announce_refresh) == (3, 1.1, 0.0)


def test_heartbeat_defaults(keys: str):
    ha = parse_ha_text(BASE + "compat: heartbeat\n", keys)
    assert ha.timers == Timers(keepalive=1.0, warntime=15.0, deadtime=30.0, initdead=30.0)
    assert ha.auto_failback == "legacy"


@pytest.mark.parametrize(
    "deadtime, initdead",
    [(3, 12.0), (5.999, 12.0), (6, 12.0), (8, 16.0), (10, 20.0), (10.5, 10.5), (30, 30.0)],
)
def test_heartbeat_initdead_rule(keys: str, deadtime: float, initdead: float):
    ha = parse_ha_text(BASE + f"compat: heartbeat\ndeadtime: {deadtime}\n", keys)
    assert ha.timers.initdead == initdead
    assert ha.timers.warntime == deadtime / 2
    assert resolve_timers("heartbeat", deadtime=deadtime).initdead == initdead


def test_directord_derived_defaults(keys: str):
    assert parse_ha_text(BASE + "deadtime: 5\n", keys).timers == Timers(0.2, 2.5, 5.0, 5.0)
    assert parse_ha_text(BASE + "deadtime: 2\n", keys).timers == Timers(0.2, 1.0, 2.0, 3.0)
    assert parse_ha_text(BASE + "keepalive: 50ms\ndeadtime: 200ms\n", keys).timers == Timers(0.05, 0.1, 0.2, 3.0)


def test_explicit_timers_are_kept(keys: str):
    ha = parse_ha_text(BASE + "keepalive: 0.5\nwarntime: 1\ndeadtime: 2s\ninitdead: 10000ms\n", keys)
    assert ha.timers == Timers(keepalive=0.5, warntime=1.0, deadtime=2.0, initdead=10.0)


def test_compat_heartbeat_takes_the_capture_timers(keys: str):
    # tests/data/heartbeat/ha.cf: keepalive 1, warntime 3, deadtime 6, initdead 12
    ha = parse_ha_text(BASE + "compat: heartbeat\nkeepalive: 1\nwarntime: 3\ndeadtime: 6\ninitdead: 12\n", keys)
    assert ha.timers == Timers(1.0, 3.0, 6.0, 12.0)


# --- times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        (1, 1.0),
        (0.2, 0.2),
        ("1", 1.0),
        ("0.1", 0.1),
        (".5", 0.5),
        ("1.", 1.0),
        ("200ms", 0.2),
        ("200 ms", 0.2),
        ("2MS", 0.002),
        ("100000us", 0.1),
        ("0.5s", 0.5),
        (" 3 ", 3.0),
        ("499us", 0.0),
        ("501us", 0.001),
        ("1.0004", 1.0),
        ("1.0005", 1.001),
        (-1, -1.0),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "number, unit, msec",
    [
        # heartbeat's own examples (lib/clplumbing/cl_misc.c, the comment above cl_get_msec)
        ("1", "s", 1000),
        ("1000", "ms", 1000),
        ("1000000", "us", 1000),
        ("0.1", "s", 100),
        ("100", "ms", 100),
        ("100000", "us", 100),
        ("0.001", "s", 1),
        ("1", "ms", 1),
        ("1000", "us", 1),
        ("499", "us", 0),
        ("501", "us", 1),
        # its rule: the number as a double, times the multiplier, divided by the divisor, plus 0.5,
        # truncated to a long; so halves go up, in double arithmetic
        ("2500", "us", 3),
        ("500", "us", 1),
        ("500.5", "ms", 501),
        ("1.0005", "s", 1001),
        ("2.5", "MS", 3),
        (".5", "s", 500),
        ("500.4", "us", 1),
        ("0.4999", "ms", 0),
    ],
)
def test_heartbeat_msec_follows_cl_get_msec(number, unit, msec):
    assert heartbeat_msec(number, unit) == msec
    assert parse_duration(f"{number}{unit}") == msec / 1000


@pytest.mark.parametrize(
    "number, unit", [("1", "min"), ("inf", "s"), ("nan", "ms"), ("1e3", "us"), (" 1", "s"), ("-1", "s"), ("", "s")]
)
def test_heartbeat_msec_rejects_other_forms(number, unit):
    with pytest.raises(ValueError):
        heartbeat_msec(number, unit)


@pytest.mark.parametrize("value", ["", "-1", "1min", "ms", "1 2", "1e3", "0x10"])
def test_parse_duration_rejects_strings(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, [1], {"s": 1}])
def test_parse_duration_rejects_types(value):
    with pytest.raises(TypeError):
        parse_duration(value)


def test_parse_duration_rejects_infinity():
    with pytest.raises(ValueError):
        parse_duration(float("inf"))


# --- timer rules ------------------------------------------------------------------------------


def test_deadtime_must_exceed_twice_keepalive(keys: str):
    issue = only(BASE + "keepalive: 0.5\ndeadtime: 1\n", keys)
    assert (issue.line, issue.field) == (7, "ha.deadtime")
    assert issue.message == "deadtime 1 s must exceed 2 x keepalive 0.5 s"


def test_keepalive_against_default_deadtime_is_reported_at_keepalive(keys: str):
    issue = only(BASE + "keepalive: 0.5\n", keys)
    assert (issue.line, issue.field) == (6, "ha.keepalive")
    assert issue.message == "deadtime 0.8 s (default) must exceed 2 x keepalive 0.5 s"


def test_heartbeat_profile_applies_the_same_rule(keys: str):
    issue = only(BASE + "compat: heartbeat\ndeadtime: 2\n", keys)
    assert issue.field == "ha.deadtime"
    assert issue.message == "deadtime 2 s must exceed 2 x keepalive 1 s (default)"


def test_initdead_below_deadtime(keys: str):
    for extra in ("initdead: 0.7\n", "compat: heartbeat\ninitdead: 20\n"):
        issue = only(BASE + extra, keys)
        assert issue.field == "ha.initdead"
        assert "must be >= deadtime" in issue.message


def test_warntime_below_deadtime_only_in_directord_profile(keys: str):
    issue = only(BASE + "warntime: 1\n", keys)
    assert issue.field == "ha.warntime"
    assert issue.message.startswith("warntime 1 s must be below deadtime 0.8 s (default)")
    ha = parse_ha_text(BASE + "compat: heartbeat\nwarntime: 40\n", keys)
    assert ha.timers.warntime == 40.0


@pytest.mark.parametrize(
    "extra, field, message",
    [
        ("keepalive: 0", "ha.keepalive", "must be 0.01..60 seconds, got 0"),
        ("keepalive: 499us", "ha.keepalive", "must be 0.01..60 seconds, got '499us'"),
        ("warntime: -1", "ha.warntime", "must be 0.01..3600 seconds, got -1"),
        ("deadtime: -2", "ha.deadtime", "must be 0.01..3600 seconds, got -2"),
        ("initdead: 1 minute", "ha.initdead", "not a time: '1 minute'"),
        ("deadtime: true", "ha.deadtime", "expected a number of seconds or a string such as '200ms', got boolean"),
        ("keepalive: 61", "ha.keepalive", "must be 0.01..60 seconds, got 61"),
        ("warntime: 3601", "ha.warntime", "must be 0.01..3600 seconds, got 3601"),
        ("deadtime: 1.0e+308", "ha.deadtime", "expected a finite number of seconds, got 1e+308"),
        ("deadtime: '1e308'", "ha.deadtime", "not a time: '1e308'"),
        ("deadtime: '" + "9" * 400 + "'", "ha.deadtime", "not a time: '" + "9" * 60 + "'..."),
        ("initdead: 86401", "ha.initdead", "must be 0..86400 seconds, got 86401"),
    ],
)
def test_bad_timer_values(keys: str, extra: str, field: str, message: str):
    issue = only(BASE + extra + "\n", keys)
    assert issue.field == field and issue.line == 6
    assert message in issue.message


def test_invalid_timer_does_not_hide_other_timer_rules(keys: str):
    issues = ha_issues(BASE + "warntime: soon\nkeepalive: 1\ninitdead: 0.5\n", keys)
    assert [(i.line, i.field) for i in issues] == [(6, "ha.warntime"), (7, "ha.keepalive"), (8, "ha.initdead")]


# --- nodes ---------------------------------------------------------------------------------


def test_node_names_are_case_insensitive(keys: str):
    ha = parse_ha_text(BASE.replace("node: dir1", "node: DIR2").replace("[dir1, dir2]", "[Dir1, dir2]"), keys)
    assert (ha.node, ha.nodes) == ("dir2", ("dir1", "dir2"))


def test_node_defaults_to_the_host_name(keys: str, monkeypatch):
    assert default_node_name() == os.uname().nodename.lower()
    monkeypatch.setattr(section, "default_node_name", lambda: "dir2")
    assert parse_ha_text(BASE.replace("node: dir1\n", ""), keys).node == "dir2"


def test_host_name_not_among_nodes(keys: str, monkeypatch):
    monkeypatch.setattr(section, "default_node_name", lambda: "lb7")
    issue = only(BASE.replace("node: dir1\n", ""), keys)
    assert str(issue) == (
        "t.yaml:2:10: ha.nodes: our node name 'lb7' (the host name; set 'node' to choose another) "
        "is not among the nodes (dir1, dir2)"
    )


def test_explicit_node_not_among_nodes(keys: str):
    issue = only(BASE.replace("node: dir1", "node: dir3"), keys)
    assert str(issue) == "t.yaml:3:9: ha.node: our node name 'dir3' is not among the nodes (dir1, dir2)"


@pytest.mark.parametrize(
    "nodes, line, field, message",
    [
        ("[dir1, dir2, DIR2]", 2, "ha.nodes[2]", "duplicate node 'dir2'"),
        ("[dir1, 'dir 2']", 2, "ha.nodes[1]", "one word without blanks"),
        ("[dir1, 7]", 2, "ha.nodes[1]", "expected a string, got integer 7"),
        ("dir1", 2, "ha.nodes", "expected a list, got string 'dir1'"),
        ("[]", 2, "ha.nodes", "at least one node"),
        ("[dir1, dir2, dir3]", 2, "ha.nodes", "3 nodes: directord pairs two directors"),
    ],
)
def test_bad_nodes(keys: str, nodes: str, line: int, field: str, message: str):
    issue = only(BASE.replace("[dir1, dir2]", nodes), keys)
    assert (issue.line, issue.field) == (line, field)
    assert message in issue.message


def test_empty_section_reports_each_required_key():
    issues = ha_issues("{}")
    assert [(i.line, i.field) for i in issues] == [(2, "ha.nodes"), (2, "ha.media"), (2, "ha.authkeys")]
    assert all(i.message.startswith("missing required key") for i in issues)


def test_unknown_key_with_suggestion(keys: str):
    issue = only(BASE + "dead_time: 3\n", keys)
    assert str(issue) == "t.yaml:6:3: ha.dead_time: unknown key 'dead_time'; did you mean 'deadtime'?"


def test_no_ha_section_means_no_ha():
    assert parse_config("global: {}\n", "t.yaml").ha is None
    assert parse_config("ha:\n", "t.yaml").ha is None


# --- media ---------------------------------------------------------------------------------


def test_media_lines_and_mappings(keys: str):
    ha = parse_ha_text(
        """
        nodes: [dir1, dir2]
        node: dir1
        udpport: 695
        authkeys: KEYS
        media:
          - bcast eth1 eth2
          - mcast eth1 239.0.0.1 694 2 1
          - ucast eth1 10.0.1.2 10.0.1.3
          - {bcast: eth3}
          - {mcast: eth3, group: 239.0.0.9}
          - {mcast: eth4, group: 239.0.0.9, port: 700, ttl: 255, loop: true}
          - {ucast: eth3, peer: 10.0.3.2}
        """,
        keys,
    )
    assert ha.udpport == 695
    assert ha.media == (
        Medium("bcast", "eth1", port=695),
        Medium("bcast", "eth2", port=695),
        Medium("mcast", "eth1", port=694, group="239.0.0.1", ttl=2, loop=True),
        Medium("ucast", "eth1", port=695, peer="10.0.1.2"),
        Medium("ucast", "eth1", port=695, peer="10.0.1.3"),
        Medium("bcast", "eth3", port=695),
        Medium("mcast", "eth3", port=695, group="239.0.0.9", ttl=1, loop=False),
        Medium("mcast", "eth4", port=700, group="239.0.0.9", ttl=255, loop=True),
        Medium("ucast", "eth3", port=695, peer="10.0.3.2"),
    )


@pytest.mark.parametrize(
    "medium, field, message",
    [
        ("bcast", "ha.media[0]", "no interface given"),
        ("serial /dev/ttyS0", "ha.media[0]", "unknown medium 'serial'; expected bcast, mcast or ucast"),
        ("bcast eth0:1", "ha.media[0]", "invalid interface name 'eth0:1'"),
        ("bcast abcdefghijklmnop", "ha.media[0]", "longer than 15 bytes"),
        # dev_valid_name refuses a NUL as the sync daemon's interface rule (director.model.valid_ifname) does
        ('"bcast eth\\0"', "ha.media[0]", "invalid interface name 'eth\\x00'"),
        ("mcast eth1 239.0.0.1 694 1", "ha.media[0]", "five values"),
        ("mcast eth1 10.0.0.1 694 1 0", "ha.media[0]", "mcast group 10.0.0.1 is not a multicast address"),
        ("mcast eth1 ff02::1 694 1 0", "ha.media[0]", "IPv6; heartbeat's media are IPv4 only"),
        ("mcast eth1 239.0.0.1 0 1 0", "ha.media[0]", "mcast port must be an integer 1..65535, got '0'"),
        ("mcast eth1 239.0.0.1 694 256 0", "ha.media[0]", "mcast TTL must be an integer 1..255, got '256'"),
        ("mcast eth1 239.0.0.1 694 1 yes", "ha.media[0]", "mcast loop must be 0 or 1, got 'yes'"),
        ("ucast eth1", "ha.media[0]", "expected 'ucast IF PEER-ADDRESS"),
        ("ucast eth1 dir2.example", "ha.media[0]", "ucast peer 'dir2.example' is not an IP address"),
        ("ucast eth1 239.1.1.1", "ha.media[0]", "ucast peer 239.1.1.1 is not a unicast address"),
        ("{bcast: eth1, ucast: eth2}", "ha.media[0]", "found bcast, ucast together"),
        ("{interface: eth1}", "ha.media[0]", "exactly one of bcast, mcast, ucast"),
        ("{bcast: eth1, port: 1}", "ha.media[0].port", "unknown key 'port'"),
        ("{ucast: eth1}", "ha.media[0].peer", "missing required key 'peer'"),
        ("{ucast: eth1, peer: 10.0.0.256}", "ha.media[0].peer", "not an IP address"),
        ("{mcast: eth1}", "ha.media[0].group", "missing required key 'group'"),
        ("{mcast: eth1, group: 239.0.0.1, loop: 1}", "ha.media[0].loop", "expected a boolean"),
        ("{mcast: eth1, group: 239.0.0.1, port: '694'}", "ha.media[0].port", "expected an integer, got string"),
        ("{bcast: 3}", "ha.media[0].bcast", "expected a string, got integer 3"),
        ("17", "ha.media[0]", "expected a heartbeat medium line"),
    ],
)
def test_bad_media(keys: str, medium: str, field: str, message: str):
    issue = only(BASE.replace("media: [bcast eth1]", f"media:\n  - {medium}"), keys)
    assert (issue.line, issue.field) == (5, field)
    assert message in issue.message


def test_media_required_and_not_empty(keys: str):
    issue = only(BASE.replace("media: [bcast eth1]", "media: []"), keys)
    assert issue.field == "ha.media" and "at least one medium" in issue.message


def test_duplicate_media(keys: str):
    issue = only(BASE.replace("media: [bcast eth1]", "media: [bcast eth1, {bcast: eth1}]"), keys)
    assert (issue.field, issue.message) == ("ha.media[1]", "duplicate medium bcast eth1 (same as media[0])")


def test_udpport_range(keys: str):
    issue = only(BASE + "udpport: 70000\n", keys)
    assert (issue.field, issue.message) == ("ha.udpport", "port 70000 is out of range 1..65535")


# --- authkeys ----------------------------------------------------------------------------------


def write_keys(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "ak"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    "text, mode, where, reason",
    [
        ("auth 1\n1 sha1 k\n", 0o640, "", "bad permissions 640: readable by group or others"),
        ("auth 1\n1 sha1 k\n", 0o604, "", "bad permissions 604: readable by group or others"),
        ("auth 1\n1 sha1 k\n", 0o602, "", "bad permissions 602: writable by group or others"),
        ("auth 1\n1 sha1 k\n", 0o611, "", "bad permissions 611: executable by group or others"),
        ("auth 2\n1 sha1 k\n", 0o600, ":1", "'auth 2' names an index with no key line"),
        ("auth 1\n# the key\n1 sha1\n", 0o600, ":3", "auth method sha1 needs a key"),
        ("auth 1\n1 rot13 k\n", 0o600, ":2", "unknown auth method 'rot13'"),
        ("auth 1\n16 md5 k\n", 0o600, ":2", "index 16 not in 0..15"),
        ("1 sha1 k\n", 0o600, "", "no 'auth N' line"),
    ],
)
def test_authkeys_errors(tmp_path: Path, text: str, mode: int, where: str, reason: str):
    path = write_keys(tmp_path, text, mode)
    issue = only(BASE, path)
    assert (issue.line, issue.column, issue.field) == (5, 13, "ha.authkeys")
    assert issue.message.startswith(f"unusable authkeys file: {path}{where}: {reason}")
    assert str(issue).startswith(f"t.yaml:5:13: ha.authkeys: unusable authkeys file: {path}{where}: ")


def test_authkeys_missing_file(tmp_path: Path):
    issue = only(BASE, str(tmp_path / "nope"))
    assert issue.field == "ha.authkeys"
    assert issue.message == f"unusable authkeys file: {tmp_path / 'nope'}: cannot read: No such file or directory"


def test_authkeys_fifo_is_a_located_error(tmp_path: Path):
    path = tmp_path / "ak"
    os.mkfifo(path, 0o600)
    issue = only(BASE, str(path))
    assert str(issue) == (
        f"t.yaml:5:13: ha.authkeys: unusable authkeys file: {path}: not a regular file but a FIFO (named pipe)"
    )


@pytest.mark.parametrize("name", ["authkeys.md5", "authkeys.crc"])
def test_authkeys_other_methods_load(tmp_path: Path, name: str):
    path = write_keys(tmp_path, (HB_DATA / name).read_text())
    assert parse_ha_text(BASE, path).authkeys == path


def test_authkeys_relative_to_the_config_file(tmp_path: Path):
    write_keys(tmp_path, "auth 3\n3 crc\n")
    (tmp_path / "c.yaml").write_text(doc(BASE, "ak"))
    assert load_config(str(tmp_path / "c.yaml")).ha.authkeys == str(tmp_path / "ak")


def test_authkeys_must_be_a_string():
    issues = ha_issues(BASE.replace("authkeys: KEYS", "authkeys: [a]"))
    assert [(i.field, i.message) for i in issues] == [("ha.authkeys", "expected a string, got list")]


# --- auto_failback, ping nodes, state_dir, announcements ---------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("on", True),
        ("off", False),
        ("true", True),
        ("no", False),
        ("legacy", "legacy"),
        ("'on'", True),
        ("'Off'", False),
        ("'LEGACY'", "legacy"),
    ],
)
def test_auto_failback_values(keys: str, value: str, expected):
    assert parse_ha_text(BASE + f"auto_failback: {value}\n", keys).auto_failback == expected
    assert parse_ha_text(BASE + f"compat: heartbeat\nauto_failback: {value}\n", keys).auto_failback == expected


@pytest.mark.parametrize("value", ["maybe", "2", "[on]"])
def test_auto_failback_bad(keys: str, value: str):
    issue = only(BASE + f"auto_failback: {value}\n", keys)
    assert issue.field == "ha.auto_failback" and "expected true (on), false (off) or legacy" in issue.message


def test_ping_nodes(keys: str):
    ha = parse_ha_text(BASE + "ping_nodes: [192.168.10.1, '2001:DB8::1']\n", keys)
    assert ha.ping_nodes == ("192.168.10.1", "2001:db8::1")
    issues = ha_issues(BASE + "ping_nodes: [gw, 10.0.0.1, 10.0.0.1]\n", keys)
    assert [(i.field, i.message) for i in issues] == [
        ("ha.ping_nodes[0]", "not an IP address: 'gw' (ping nodes are addresses, not host names)"),
        ("ha.ping_nodes[2]", "duplicate ping node 10.0.0.1"),
    ]


def test_probing_settings(keys: str):
    ha = parse_ha_text(
        BASE + "ping_nodes: [192.168.10.1, 2001:db8::1]\nping_interval: 500ms\nping_timeout: 0.3\n"
        "ping_rise: 1\nping_fall: 5\nlink_monitor: false\n",
        keys,
    )
    assert ha.ping_nodes == ("192.168.10.1", "2001:db8::1")
    assert (ha.ping_interval, ha.ping_timeout, ha.ping_rise, ha.ping_fall, ha.link_monitor) == (0.5, 0.3, 1, 5, False)
    default = parse_ha_text(BASE, keys)
    assert (default.ping_interval, default.ping_timeout, default.ping_rise, default.ping_fall) == (1.0, 1.0, 2, 3)
    assert default.link_monitor is True


def test_state_dir_and_announcements(keys: str):
    ha = parse_ha_text(
        BASE + "state_dir: /srv/ha\nannounce_repeats: 5\nannounce_interval: 1500ms\nannounce_refresh: 60\n", keys
    )
    assert (ha.state_dir, ha.announce_repeats, ha.announce_interval, ha.announce_refresh) == ("/srv/ha", 5, 1.5, 60.0)


@pytest.mark.parametrize(
    "extra, field, message",
    [
        ("state_dir: var/lib", "ha.state_dir", "must be an absolute directory path, got 'var/lib'"),
        ("announce_repeats: 0", "ha.announce_repeats", "announce_repeats 0 is out of range 1..100"),
        ("announce_interval: 1", "ha.announce_interval", "must be > 1 s (the kernel ignores"),
        ("announce_interval: 900ms", "ha.announce_interval", "got 0.9 s"),
        ("announce_refresh: 0.5", "ha.announce_refresh", "must be 0 (off) or > 1 s, got 0.5 s"),
        ("compat: pacemaker", "ha.compat", "expected directord or heartbeat, got string 'pacemaker'"),
        ("ping_interval: 0", "ha.ping_interval", "must be 0.01..3600 s, got 0 s"),
        ("ping_timeout: 2", "ha.ping_timeout", "must not exceed ping_interval (1 s)"),
        ("ping_rise: 0", "ha.ping_rise", "out of range 1..100"),
        ("ping_fall: two", "ha.ping_fall", "expected an integer"),
        ("link_monitor: sometimes", "ha.link_monitor", "expected true or false"),
        ("announce_repeats: 1000000000", "ha.announce_repeats", "announce_repeats 1000000000 is out of range 1..100"),
        ("announce_interval: 3601", "ha.announce_interval", "must be at most 3600 s, got 3601 s"),
        ("announce_refresh: 86401", "ha.announce_refresh", "must be at most 86400 s, got 86401 s"),
        ("ping_interval: 3601", "ha.ping_interval", "must be 0.01..3600 s, got 3601 s"),
        ("ping_timeout: 1.0e-300", "ha.ping_timeout", "must be 0.01..3600 s, got 0 s"),
        ("ping_nodes: [" + ", ".join(["10.0.0.1"] * 65) + "]", "ha.ping_nodes", "65 ping nodes; at most 64"),
        (
            "resources: [" + ", ".join(["dir1 10.0.0.1/32/eth0"] * 1025) + "]",
            "ha.resources",
            "1025 resource groups; at most 1024 addresses in all",
        ),
        (
            "resources: ['dir1 " + " ".join(f"10.0.{i // 256}.{i % 256}/32/eth0" for i in range(1025)) + "']",
            "ha.resources",
            "more than 1024 resource addresses",
        ),
    ],
)
def test_bad_other_values(keys: str, extra: str, field: str, message: str):
    issue = only(BASE + extra + "\n", keys)
    assert issue.field == field and message in issue.message


def test_media_are_bounded(keys: str):
    media = "media: [" + ", ".join(f"bcast eth{i}" for i in range(65)) + "]"
    issue = only(BASE.replace("media: [bcast eth1]", media), keys)
    assert (issue.field, issue.message) == ("ha.media", "65 media; at most 64")


# --- resources -----------------------------------------------------------------------------


def test_resource_forms(keys: str):
    ha = parse_ha_text(
        BASE
        + """
resources:
  - owner: dir1
    addresses:
      - 192.168.10.100/32/eth0
      - {address: 192.168.10.101, prefix: 24, interface: eth0.10}
      - 2001:DB8::100/128/eth0
      - IPaddr2::192.168.10.102/32/eth0
  - dir2 192.168.10.110/32/eth1 IPaddr::192.168.10.111/32/eth1
  - owner: DIR2
    addresses: [{address: "2001:db8::200", prefix: 64, interface: eth1}]
""",
        keys,
    )
    assert ha.groups == (
        ResourceGroup(
            "dir1",
            (
                Resource("192.168.10.100", 32, "eth0"),
                Resource("192.168.10.101", 24, "eth0.10"),
                Resource("2001:db8::100", 128, "eth0"),
                Resource("192.168.10.102", 32, "eth0"),
            ),
        ),
        ResourceGroup("dir2", (Resource("192.168.10.110", 32, "eth1"), Resource("192.168.10.111", 32, "eth1"))),
        ResourceGroup("dir2", (Resource("2001:db8::200", 64, "eth1"),)),
    )
    assert str(ha.groups[0].resources[0]) == "192.168.10.100/32/eth0"


@pytest.mark.parametrize(
    "resources, found",
    [
        (
            "[{owner: dir9, addresses: [10.0.0.1/32/eth0]}]",
            [("ha.resources[0].owner", "owner 'dir9' is not among the nodes (dir1, dir2)")],
        ),
        ("[dir9 10.0.0.1/32/eth0]", [("ha.resources[0]", "owner 'dir9' is not among the nodes (dir1, dir2)")]),
        ("[dir1]", [("ha.resources[0]", "expected a haresources line 'OWNER IP/PREFIX/IF")]),
        (
            "[{owner: dir1, addresses: [10.0.0.1/33/eth0]}]",
            [("ha.resources[0].addresses[0]", "prefix length 33 is out of range 1..32")],
        ),
        (
            "[{owner: dir1, addresses: ['2001:db8::1/129/eth0']}]",
            [("ha.resources[0].addresses[0]", "prefix length 129 is out of range 1..128")],
        ),
        (
            "[{owner: dir1, addresses: [10.0.0.1/32]}]",
            [("ha.resources[0].addresses[0]", "expected IP/PREFIX/IF such as 192.168.10.100/32/eth0")],
        ),
        (
            "[{owner: dir1, addresses: [10.0.0.1/24/eth0/10.0.0.255]}]",
            [("ha.resources[0].addresses[0]", "expected IP/PREFIX/IF")],
        ),
        (
            "[{owner: dir1, addresses: [10.0.0.1/x/eth0]}]",
            [("ha.resources[0].addresses[0]", "prefix length 'x' is not a number")],
        ),
        ("[{owner: dir1, addresses: [vip/32/eth0]}]", [("ha.resources[0].addresses[0]", "not an IP address: 'vip'")]),
        (
            "[{owner: dir1, addresses: [224.0.0.5/32/eth0]}]",
            [("ha.resources[0].addresses[0]", "cannot be a resource address")],
        ),
        (
            "[{owner: dir1, addresses: [10.0.0.1/32/eth:0]}]",
            [("ha.resources[0].addresses[0]", "invalid interface name 'eth:0'")],
        ),
        ("[{owner: dir1, addresses: []}]", [("ha.resources[0].addresses", "must list at least one address")]),
        ("[{owner: dir1}]", [("ha.resources[0].addresses", "missing required key 'addresses'")]),
        ("[{addresses: [10.0.0.1/32/eth0]}]", [("ha.resources[0].owner", "missing required key 'owner'")]),
        (
            "[{owner: dir1, addresses: [10.0.0.1/32/eth0], score: 5}]",
            [("ha.resources[0].score", "unknown key 'score'")],
        ),
        (
            "[{owner: dir1, addresses: [{address: x, prefix: '24'}]}]",
            [
                ("ha.resources[0].addresses[0].interface", "missing required key 'interface'"),
                ("ha.resources[0].addresses[0].address", "not an IP address: 'x'"),
                ("ha.resources[0].addresses[0].prefix", "expected an integer, got string '24'"),
            ],
        ),
        (
            "[{owner: dir1, addresses: [10.0.0.1/32/eth0]}, dir2 10.0.0.1/24/eth1]",
            [("ha.resources[1]", "address 10.0.0.1 is already a resource (ha.resources[0].addresses[0])")],
        ),
        ("[7]", [("ha.resources[0]", "expected a mapping (owner, addresses) or a haresources line")]),
        ("{owner: dir1}", [("ha.resources", "expected a list, got mapping")]),
    ],
)
def test_bad_resources(keys: str, resources: str, found: list[tuple[str, str]]):
    issues = ha_issues(BASE + f"resources: {resources}\n", keys)
    assert len(issues) == len(found), "\n".join(map(str, issues))
    for issue, (field, message) in zip(issues, found):
        assert issue.line == 6 and issue.field == field
        assert message in issue.message, str(issue)


# --- the environment check, in a network namespace of this test ---------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    """A namespace with veth va (10.9.0.1/24 brd +) <-> vb (10.9.1.1/24, no broadcast), and vc <-> vd (no IPv4)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"hacfg{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot create a network namespace: {err}")
    try:
        _ip("-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        _ip("-n", name, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
        _ip("-n", name, "addr", "add", "10.9.0.1/24", "brd", "+", "dev", "va")
        _ip("-n", name, "addr", "add", "10.9.1.1/24", "dev", "vb")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def env_config(media: tuple[Medium, ...], groups: tuple[ResourceGroup, ...] = (), line: int = 12) -> HAConfig:
    return HAConfig(node="dir1", nodes=("dir1", "dir2"), media=media, authkeys="/x", groups=groups, line=line)


def test_environment_all_present(netns: str):
    ha = env_config(
        (Medium("bcast", "va"), Medium("mcast", "vb", group="239.0.0.1"), Medium("ucast", "vd", peer="10.9.0.2")),
        (ResourceGroup("dir1", (Resource("10.9.0.100", 32, "va"), Resource("10.9.9.9", 32, "vd"))),),
    )
    assert check_ha_environment(ha, netns=netns) == []


def test_environment_problems(netns: str):
    ha = env_config(
        (
            Medium("bcast", "va"),
            Medium("bcast", "vb"),
            Medium("mcast", "vd", group="239.0.0.1"),
            Medium("ucast", "eth9", peer="10.9.0.2"),
        ),
        (ResourceGroup("dir2", (Resource("10.9.0.100", 32, "va"), Resource("10.9.0.101", 32, "veth7"))),),
    )
    where = f" (network namespace {netns})"
    assert check_ha_environment(ha, netns=netns, file="/etc/directord/directord.yaml") == [
        f"/etc/directord/directord.yaml:12: ha.media: bcast vb: interface 'vb' has no IPv4 address with a "
        f"broadcast address{where}; a bcast medium sends to it (add one with 'ip addr add ADDRESS/PREFIX brd + "
        "dev vb')",
        f"/etc/directord/directord.yaml:12: ha.media: mcast vd 239.0.0.1 694 1 0: interface 'vd' has no IPv4 "
        f"address{where}; an mcast medium sends from it",
        f"/etc/directord/directord.yaml:12: ha.media: ucast eth9 10.9.0.2: interface 'eth9' does not exist{where}",
        f"/etc/directord/directord.yaml:12: ha.resources: 10.9.0.101/32/veth7 (owner dir2): interface 'veth7' "
        f"does not exist{where}",
    ]
    # without a file the messages start at the field
    assert check_ha_environment(ha, netns=netns)[0].startswith("ha.media: bcast vb: ")


def test_environment_of_a_parsed_config(netns: str, keys: str):
    ha = parse_ha_text(BASE.replace("media: [bcast eth1]", "media: [bcast va, bcast vb]"), keys)
    problems = check_ha_environment(ha, netns=netns, file="t.yaml")
    assert len(problems) == 1 and problems[0].startswith("t.yaml:1: ha.media: bcast vb: ")


def test_environment_check_needs_an_existing_namespace():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"hacfg-missing{os.getpid()}"
    with pytest.raises(OSError):
        check_ha_environment(env_config((Medium("bcast", "va"),)), netns=name)
    assert not os.path.exists(f"/run/netns/{name}")
