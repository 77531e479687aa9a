"""Property-based fuzzing of `directord convert` (director.convert.convert_text).

Inputs: ldirectord.cf, ha.cf and haresources texts, generated from the
directives the converters know, and the shipped samples (tests/data/ldirectord)
mutated line by line (lines dropped, duplicated, moved, tokens replaced,
random text inserted).

Properties:

* generated valid inputs convert, and the result loads with directord's own
  loader with every virtual service and real server kept, and a pair of notify
  hooks per resource script and per virtual with a fallbackcommand;
* any input either converts or raises `ConvertError` whose errors each name
  one of the input files, a line (0 for the file as a whole) and a message;
  never another exception;
* whatever converts is YAML the loader reads back: `parse_config` returns a
  configuration or raises `ConfigError`, never another exception (the
  ``convert`` command turns that ConfigError into its "refused by directord"
  error).

Example counts come from fuzzprofile (``DIRECTORD_FUZZ=long`` for the long run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from fuzzprofile import FUZZ, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from director.config import ConfigError, parse_config
from director.convert import Conversion, ConvertError, convert_text
from director.model import Config

DATA = Path(__file__).resolve().parents[1] / "data" / "ldirectord"
SAMPLES = {name: (DATA / name).read_text() for name in ("debian-example.cf", "every-directive.cf", "lab-sites.cf")}
HA_CF = (DATA / "ha.cf").read_text()
HARESOURCES = (DATA / "haresources").read_text()
FILES = ("ldirectord.cf", "ha.cf", "haresources")

# --- generated valid inputs -----------------------------------------------------------------------

PORTS = st.integers(1, 65535)


@st.composite
def virtuals(draw, index: int) -> tuple[str, int]:
    """One ldirectord virtual block (its lines) and how many real servers it has."""
    fwmark = draw(st.integers(0, 4)) == 0
    method = draw(st.sampled_from(["gate", "masq", "ipip"]))
    port = draw(st.sampled_from([80, 443, 8080, 25, 3306])) if not fwmark else None
    head = f"virtual={index + 1}" if fwmark else f"virtual=10.0.{index}.1:{port}"
    lines = [head]
    hosts = draw(st.lists(st.integers(2, 250), min_size=1, max_size=4, unique=True))
    for host in hosts:
        real_port = "" if fwmark else f":{draw(PORTS) if method == 'masq' else port}"
        weight = draw(st.integers(0, 100))
        lines.append(f"\treal=192.168.{index}.{host}{real_port} {method} {weight}")
    if fwmark:
        lines.append("\tprotocol=fwm")
        # (checktype=off needs checkport too: the always failing check is an external one)
        lines.append(draw(st.sampled_from(["\tchecktype=on", "\tchecktype=off\n\tcheckport=80", "\tservice=none"])))
    else:
        check = draw(st.sampled_from(["connect", "on", "negotiate", "off"]))
        lines.append(f"\tchecktype={check}")
        if check == "negotiate":
            lines.append("\tservice=http")
            lines.append(f'\trequest="{draw(st.sampled_from(["index.html", "healthz", "status/ok"]))}"')
            lines.append(f'\treceive="{draw(st.sampled_from(["ok", "Test Page", "alive"]))}"')
    lines.append(f"\tscheduler={draw(st.sampled_from(['rr', 'wrr', 'lc', 'wlc', 'sh', 'sed']))}")
    if draw(st.booleans()):
        lines.append(f"\tpersistent={draw(st.integers(1, 3600))}")
    lines.append(f"\tquiescent={draw(st.sampled_from(['yes', 'no']))}")
    if draw(st.booleans()):
        lines.append(f"\tcheckinterval={draw(st.integers(1, 30))}")
    if draw(st.integers(0, 3)) == 0:
        lines.append(f"\tfallbackcommand={draw(FALLBACK_COMMANDS)}")
    return "\n".join(lines), len(hosts)


#: fallbackcommand texts: plain words (run as an argv) and shell syntax (run through /bin/sh -c).
FALLBACK_COMMANDS = st.sampled_from(
    ["/usr/local/sbin/sorry", '"/usr/local/sbin/sorry --quiet"', "\"logger -t ld 'down' | cat\"", "pager"]
)
GLOBALS = st.lists(
    st.sampled_from(
        [
            "checktimeout=5",
            "checkinterval=2",
            "quiescent=yes",
            "autoreload=no",
            "fork=no",
            "fallbackcommand=/usr/local/sbin/sorry",
            'fallbackcommand="$HOME/x" ; true',
        ]
    ),
    max_size=3,
    unique=True,
)


@st.composite
def ldirectord_files(draw) -> tuple[str, list[int]]:
    """A valid ldirectord.cf and the real server count of each virtual."""
    lines = ["# generated"]
    lines += draw(GLOBALS)
    counts = []
    for index in range(draw(st.integers(1, 4))):
        block, reals = draw(virtuals(index))
        lines += ["", block]
        counts.append(reals)
    return "\n".join(lines) + "\n", counts


@st.composite
def ha_files(draw) -> tuple[str, str]:
    """A valid ha.cf (nodes dir1 and dir2) and haresources."""
    keepalive = draw(st.sampled_from(["1", "500ms", "2"]))
    deadtime = draw(st.sampled_from(["10", "30", "15"]))
    lines = [f"keepalive {keepalive}", f"deadtime {deadtime}"]
    lines.append(draw(st.sampled_from(["bcast eth1", "ucast eth0 192.168.6.12", "mcast eth1 239.0.0.1 694 1 0"])))
    lines.append(draw(st.sampled_from(["node dir1\nnode dir2", "node dir1 dir2"])))
    lines.append(f"auto_failback {draw(st.sampled_from(['on', 'off', 'legacy']))}")
    if draw(st.booleans()):
        lines.append("ping 192.168.6.1")
    scripts = st.lists(st.sampled_from(["httpd", "Filesystem::/dev/sdb1::/srv::ext4", "MailTo::root"]), max_size=2)
    resources = [" ".join([f"dir1 IPaddr::10.0.0.{draw(st.integers(1, 250))}/24/eth0", *draw(scripts)])]
    if draw(st.booleans()):
        resources.append(" ".join([f"dir2 10.0.1.{draw(st.integers(1, 250))}/24/eth0", *draw(scripts)]))
    return "\n".join(lines) + "\n", "\n".join(resources) + "\n"


# --- mutations --------------------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [
        "virtual=",
        "real=",
        "=",
        ":",
        "->",
        "[",
        "]",
        "gate",
        "masq",
        "ipip",
        "\t",
        " ",
        "\\",
        '"',
        "#",
        "65536",
        "-1",
        "0",
        "999999999999999999999",
        "::",
        "node",
        "bcast",
        "IPaddr::",
        "/",
        "ms",
        "on",
        "off",
        "yes",
    ]
)


@st.composite
def mutated(draw, text: str) -> str:
    lines = text.split("\n")
    rng = draw(st.randoms(use_true_random=True))  # uniform line choice (integers() favours the first)
    for _ in range(draw(st.integers(1, 5))):
        if not lines:
            lines = [""]
        pos = rng.randrange(len(lines))
        action = draw(st.sampled_from(["drop", "duplicate", "move", "token", "text", "cut"]))
        if action == "drop":
            del lines[pos]
        elif action == "duplicate":
            lines.insert(pos, lines[pos])
        elif action == "move":
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(pos))
        elif action == "cut":
            line = lines[pos]
            lines[pos] = line[: draw(st.integers(0, len(line)))]
        else:
            line = lines[pos]
            at = draw(st.integers(0, len(line)))
            piece = draw(TOKENS) if action == "token" else draw(st.text(max_size=8))
            end = at + draw(st.integers(0, 3))
            lines[pos] = line[:at] + piece + line[end:]
    return "\n".join(lines)


# --- the properties -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authkeys(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("fuzzconvert") / "authkeys"
    path.write_text("auth 1\n1 sha1 fuzzsecret\n")
    os.chmod(path, 0o600)
    return str(path)


def convert(ld: str, ha_cf: str | None, haresources: str | None, authkeys: str) -> Conversion | ConvertError:
    """The conversion, or the ConvertError after checking that every error is located."""
    try:
        return convert_text(
            ld,
            "ldirectord.cf",
            ha_cf=ha_cf,
            ha_cf_path="ha.cf",
            haresources=haresources,
            haresources_path="haresources",
            authkeys=authkeys,
            node="dir1" if ha_cf else None,
        )
    except ConvertError as err:
        assert err.errors, "ConvertError without errors"
        for issue in err.issues:
            assert issue.file in FILES and issue.line >= 0, issue
            assert issue.severity in ("error", "warning", "note"), issue
            assert isinstance(issue.message, str) and issue.message.strip(), issue
        return err


def load(result: Conversion) -> Config | ConfigError:
    assert isinstance(yaml.safe_load(result.text), dict)
    for issue in result.issues:
        assert issue.severity in ("warning", "note") and issue.file in FILES, issue
    try:
        return parse_config(result.text, "directord.yaml")
    except ConfigError as err:
        assert err.issues and all(i.file == "directord.yaml" and i.line >= 1 for i in err.issues), err
        return err


@FUZZ
@given(ldirectord_files(), st.none() | ha_files())
def test_fuzz_valid_inputs_convert_and_load(authkeys, ld, ha):
    text, counts = ld
    ha_cf, haresources = ha if ha else (None, None)
    result = convert(text, ha_cf, haresources, authkeys)
    assert isinstance(result, Conversion), f"{result}\n{text}\n{ha_cf}\n{haresources}"
    config = load(result)
    assert isinstance(config, Config), f"{config}\n{result.text}"
    assert [len(s.real_servers) for s in config.services] == counts
    assert (config.ha is not None) == (ha is not None)
    has_global = "\nfallbackcommand=" in text
    blocks = text.split("\nvirtual=")[1:]
    fallback = sum(1 for block in blocks if has_global or "\tfallbackcommand=" in block)
    scripts = sum(len(line.split()) - 2 for line in haresources.splitlines()) if haresources else 0
    hooks = config.notify.hooks if config.notify is not None else ()
    assert len(hooks) == 2 * (fallback + scripts), result.text


@fuzz_settings(2)
@given(st.data())
def test_fuzz_mutated_samples_raise_only_convert_errors(authkeys, data):
    name = data.draw(st.sampled_from(sorted(SAMPLES)))
    ld = data.draw(mutated(SAMPLES[name]))
    ha_cf = data.draw(st.none() | mutated(HA_CF) | st.just(HA_CF))
    haresources = data.draw(st.none() | mutated(HARESOURCES) | st.just(HARESOURCES)) if ha_cf else None
    result = convert(ld, ha_cf, haresources, authkeys)
    if isinstance(result, Conversion):
        load(result)


@fuzz_settings(2)
@given(st.data())
def test_fuzz_mutated_generated_inputs_raise_only_convert_errors(authkeys, data):
    text, _ = data.draw(ldirectord_files())
    ha = data.draw(st.none() | ha_files())
    ld = data.draw(mutated(text))
    ha_cf, haresources = (data.draw(mutated(ha[0])), data.draw(mutated(ha[1]))) if ha else (None, None)
    result = convert(ld, ha_cf, haresources, authkeys)
    if isinstance(result, Conversion):
        load(result)


@FUZZ
@given(st.text(max_size=300), st.none() | st.text(max_size=200), st.none() | st.text(max_size=100))
def test_fuzz_arbitrary_text_raises_only_convert_errors(authkeys, ld, ha_cf, haresources):
    result = convert(ld, ha_cf, haresources if ha_cf is not None else None, authkeys)
    if isinstance(result, Conversion):
        load(result)


def test_control_character_in_a_comment_keeps_the_output_yaml():
    """Input text copied into a comment is escaped (found by the mutated-input properties:
    a BEL in comment= made the output unreadable YAML)."""
    result = convert_text("virtual=192.168.6.240:80\n\treal=192.168.6.2:80 gate\n\tcomment=caf\x07e\n", "l.cf")
    assert isinstance(yaml.safe_load(result.text), dict)
    assert "caf\\x07e" in result.text
