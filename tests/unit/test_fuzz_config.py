"""Property-based fuzzing of the configuration loader (director.config.parse_config).

Documents are generated as Python data and written with PyYAML:

* valid configurations (virtual services of every kind, real servers,
  checks, persistence, fallback, global settings, an ``ha`` section using an
  authkeys file in a temporary directory) must load, with every service and
  real server kept;
* the same skeletons with one to three mutations (a value replaced by a value
  of any YAML type, a key removed, an unknown key added), and their YAML text
  with byte-level edits, must either load or raise `ConfigError` whose every
  issue names the file, a line and column (1-based) and says what is wrong:
  never another exception.

Example counts come from fuzzprofile (``DIRECTORD_FUZZ=long`` for the long run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzprofile import FUZZ, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from director.config import ConfigError, parse_config
from director.model import Config

# --- valid skeletons ----------------------------------------------------------------------------

PORTS = st.integers(1, 65535)
SCHEDULERS = st.sampled_from(["rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq"])
SECONDS = st.sampled_from([0.5, 1, 2, 2.5, 5])


@st.composite
def checks(draw, protocol: str) -> dict[str, Any]:
    if protocol != "tcp":
        return draw(st.sampled_from([{"type": "none"}, {"type": "external", "command": ["/bin/true"]}]))
    check: dict[str, Any] = {"type": draw(st.sampled_from(["tcp", "http", "https", "none"]))}
    if check["type"] in ("http", "https"):
        check["path"] = draw(st.sampled_from(["/", "/healthz", "/status?full=1"]))
        check["expect_status"] = draw(st.lists(st.integers(200, 399), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            check["expect_body"] = draw(st.sampled_from(["ok", "alive|ready", "^OK$"]))
    if check["type"] != "none" and draw(st.booleans()):
        interval = draw(SECONDS)
        check.update(interval=interval, timeout=min(interval, 1), rise=draw(st.integers(1, 5)))
    return check


@st.composite
def services(draw, index: int) -> dict[str, Any]:
    """One valid IPv4 virtual service, distinct from the others by its address (10.0.<index>.1)."""
    protocol = draw(st.sampled_from(["tcp", "tcp", "udp"]))
    service: dict[str, Any] = {"name": f"svc{index}"}
    if draw(st.integers(0, 4)) == 0:
        service.update(fwmark=index + 1, family="inet", check={"type": "none"})
        port = None
    else:
        port = draw(PORTS)
        service.update(address=f"10.0.{index}.1", port=port, protocol=protocol, check=draw(checks(protocol)))
    service["scheduler"] = draw(SCHEDULERS)
    service["forwarding"] = draw(st.sampled_from(["dr", "nat", "tun"]))
    service["on_failure"] = draw(st.sampled_from(["quiescent", "remove"]))
    if draw(st.booleans()):
        service["persistence"] = {"timeout": draw(st.integers(1, 3600))}
    reals = []
    for host in draw(st.lists(st.integers(2, 250), max_size=4, unique=True)):
        real: dict[str, Any] = {"address": f"192.168.{index}.{host}", "weight": draw(st.integers(0, 100))}
        if port is not None and service["forwarding"] == "nat":
            real["port"] = draw(PORTS)
        if draw(st.booleans()):
            upper = draw(st.integers(0, 1000))
            real.update(upper_threshold=upper, lower_threshold=draw(st.integers(0, upper)))
        reals.append(real)
    service["real_servers"] = reals
    if port is not None and draw(st.booleans()):
        # direct routing and tunnelling forward packets unchanged: the same port
        fallback_port = draw(PORTS) if service["forwarding"] == "nat" else port
        service["fallback"] = {"address": "127.0.0.1", "port": fallback_port}
    return service


@st.composite
def configs(draw, authkeys: str) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["global"] = {"reconcile_interval": draw(SECONDS), "drain_timeout": draw(st.integers(0, 600))}
    count = draw(st.integers(0, 4))
    doc["virtual_services"] = [draw(services(i)) for i in range(count)]
    if draw(st.booleans()):
        doc["ha"] = {
            "node": "dir1",
            "nodes": ["dir1", "dir2"],
            "media": draw(st.sampled_from([["bcast eth0"], ["ucast eth0 192.168.0.2"], [{"bcast": "eth1"}]])),
            "authkeys": authkeys,
            "resources": [f"dir1 10.0.{i}.1/32/eth0" for i in range(max(count, 1))],
        }
        if draw(st.booleans()):
            doc["ha"].update(keepalive=0.2, deadtime=draw(st.sampled_from([1, 2, 5])))
    return doc


# --- mutations ------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e400", ".nan", "65536", "tcp", "wlc", "::1", "10.0.0.1", "eth0", "/x"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.one_of(st.text(max_size=12), st.sampled_from(["address", "port", "check", "ha", "weight", "global"]))


def places(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indexes) inside `node`, its root included."""
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += places(value, (*path, index))
    return out


def lookup(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


@st.composite
def mutated_configs(draw, authkeys: str) -> dict[str, Any]:
    doc = draw(configs(authkeys))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(places(doc)))
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if not path:
            if action == "replace":
                doc = draw(VALUES)
            continue
        parent = lookup(doc, path[:-1])
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "remove":
            del parent[path[-1]]
        else:
            target = lookup(doc, path)
            if isinstance(target, dict):
                target[draw(KEYS)] = draw(VALUES)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(VALUES))
            else:
                parent[path[-1]] = draw(VALUES)
        if not isinstance(doc, (dict, list)):
            break
    return doc


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=draw_flow(doc))


def draw_flow(doc: Any) -> bool | None:
    return None if isinstance(doc, dict) and len(doc) % 2 else False


# --- the properties -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory with an authkeys file (mode 600); configurations are parsed as if in it."""
    root = tmp_path_factory.mktemp("fuzzconfig")
    keys = root / "authkeys"
    keys.write_text("auth 1\n1 sha1 fuzzsecret\n")
    os.chmod(keys, 0o600)
    return root


def load(text: str, path: str) -> Config | ConfigError:
    """The loaded Config, or the ConfigError after checking that every issue is located."""
    try:
        return parse_config(text, path)
    except ConfigError as err:
        assert err.issues, "ConfigError without issues"
        for issue in err.issues:
            assert issue.file == path, issue
            assert issue.line >= 1 and issue.column >= 1, issue
            assert isinstance(issue.message, str) and issue.message.strip(), issue
            assert str(issue).startswith(f"{path}:{issue.line}:{issue.column}: "), issue
        return err


@FUZZ
@given(st.data())
def test_fuzz_valid_configs_load(site, data):
    doc = data.draw(configs(str(site / "authkeys")))
    path = str(site / "directord.yaml")
    result = load(dump(doc), path)
    assert isinstance(result, Config), f"{result}\n{dump(doc)}"
    assert len(result.services) == len(doc["virtual_services"])
    for service, spec in zip(result.services, doc["virtual_services"]):
        assert len(service.real_servers) == len(spec["real_servers"])
    assert (result.ha is not None) == ("ha" in doc)


@fuzz_settings(2)
@given(st.data())
def test_fuzz_mutated_configs_raise_only_located_config_errors(site, data):
    doc = data.draw(mutated_configs(str(site / "authkeys")))
    load(dump(doc), str(site / "directord.yaml"))


@st.composite
def edited_text(draw, authkeys: str) -> str:
    text = dump(draw(configs(authkeys)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.text(max_size=4) | st.sampled_from([":", "- ", "{", "[", "&a ", "*a", "!!", "\t", "\n  ", "'"]))
        if kind == "insert":
            text = text[:pos] + piece + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 6)) :]
        else:
            text = text[:pos] + piece + text[pos + len(piece) :]
    return text


@fuzz_settings(2)
@given(st.data())
def test_fuzz_edited_yaml_text_raises_only_located_config_errors(site, data):
    load(data.draw(edited_text(str(site / "authkeys"))), str(site / "directord.yaml"))
