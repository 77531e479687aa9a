"""The configuration file as hostile input: special files, sizes, nesting, aliases, huge values, bounds.

Each case is refused with a located error (``FILE[:LINE:COL]: FIELD: message``)
instead of blocking, exhausting memory, crashing or echoing megabytes, and
``directord check`` prints it without a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from director.config import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    ConfigError,
    ConfigIssue,
    format_issues,
    load_config,
    parse_config,
)
from ha.readfile import ReadFileError, read_regular_file, read_regular_file_if_exists

SERVICE = """
virtual_services:
  - address: 10.0.0.1
    port: 80
    check:
      type: http
      {key}: {value}
    real_servers:
      - address: 10.0.1.1
"""


def issues_of(text: str, path: str = "t.yaml") -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), path)
    return info.value.issues


def only(text: str) -> ConfigIssue:
    issues = issues_of(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def load_issue(path: str | Path) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    (issue,) = info.value.issues
    return issue


def run_check(path: str | Path) -> subprocess.CompletedProcess[str]:
    """``directord check -c PATH`` in a child process (a refusal must not wait: 20 s deadline)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from director.cli import main; sys.exit(main(sys.argv[1:]))",
            "check",
            "-c",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


# --- special files and sizes --------------------------------------------------------------------


def test_fifo_is_refused_without_blocking(tmp_path: Path):
    path = tmp_path / "directord.yaml"
    os.mkfifo(path)
    issue = load_issue(path)
    assert str(issue) == f"{path}: not a regular file but a FIFO (named pipe)"


def test_device_is_refused_without_reading():
    assert str(load_issue("/dev/zero")) == "/dev/zero: not a regular file but a character device"


def test_directory_is_refused(tmp_path: Path):
    assert str(load_issue(tmp_path)) == f"{tmp_path}: not a regular file but a directory"


def test_oversize_file_is_refused(tmp_path: Path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.truncate(MAX_CONFIG_BYTES + 1)  # sparse: costs no disk
    assert str(load_issue(path)) == f"{path}: too large: {MAX_CONFIG_BYTES + 1} bytes, the limit is 8 MiB"


def test_a_file_longer_than_its_reported_size_is_cut_at_the_limit():
    """A regular file whose size says nothing of its content (a /proc file reports 0, a
    file may grow while it is read) is still read only up to the limit."""
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0 and len(status.read_bytes()) > 64
    with pytest.raises(ReadFileError, match="too large: more than 64 bytes"):
        read_regular_file(status, 64)
    assert read_regular_file(status, 1 << 20).startswith(b"Name:")


def test_a_missing_state_file_is_none_and_anything_else_still_refused(tmp_path: Path):
    assert read_regular_file_if_exists(tmp_path / "absent.json", 64) is None
    (tmp_path / "state.json").write_bytes(b"{}")
    assert read_regular_file_if_exists(tmp_path / "state.json", 64) == b"{}"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ReadFileError, match="not a regular file"):
        read_regular_file_if_exists(tmp_path / "fifo", 64)
    with pytest.raises(ReadFileError, match="not a regular file"):
        read_regular_file_if_exists(tmp_path, 64)


def test_symlink_to_regular_file_is_read(tmp_path: Path):
    real = tmp_path / "real.yaml"
    real.write_text("virtual_services: []\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    assert load_config(str(link)).services == ()


# --- nesting, aliases, scalars the YAML library cannot build --------------------------------------


@pytest.mark.parametrize("style", ["block", "flow"])
def test_deep_nesting_is_a_located_error(style: str):
    if style == "flow":
        text = "ha: " + "[" * 1000 + "]" * 1000 + "\n"
    else:
        text = "".join("  " * level + f"k{level}:\n" for level in range(1000)) + "  " * 1000 + "x: 1\n"
    (issue,) = issues_of(text)
    assert issue.message == f"invalid YAML: nesting deeper than {MAX_YAML_DEPTH} levels of mappings and lists"
    assert issue.line >= 1 and issue.field == ""


def test_nesting_at_the_limit_is_accepted_by_the_loader():
    # 32 levels parse; the value is then refused by the schema, not by the loader.
    text = "ha: " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1) + "\n"
    (issue,) = issues_of(text)
    assert not issue.message.startswith("invalid YAML")


def test_alias_bomb_is_refused():
    # Nine levels of ten aliases each stand for 10**9 values.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        ref = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([ref] * 10)}]")
    (issue,) = issues_of("\n".join(lines) + "\n")
    assert issue.message.startswith("invalid YAML: more than 2000000 values")


def test_recursive_alias_is_refused():
    (issue,) = issues_of("ha: &loop [*loop]\n")
    assert issue.message == "invalid YAML: an alias refers to a node that contains it (recursive structure)"
    assert (issue.line, issue.column) == (1, 12)


def test_more_real_servers_or_services_than_the_bounds_are_one_located_error():
    from director.config import MAX_REAL_SERVERS, MAX_SERVICES

    # an alias repeats a list of 1,000 real servers: the file stays small, the count is the expanded one
    rs = ", ".join(f"{{address: 10.1.{i // 250}.{i % 250 + 1}}}" for i in range(1000))
    services = [f"  - {{address: 10.0.{n // 250}.{n % 250 + 1}, port: 80, real_servers: *rs}}" for n in range(1, 21)]
    text = f"rs: &rs [{rs}]\nvirtual_services:\n  - {{address: 10.0.0.1, port: 80, real_servers: *rs}}\n"
    over = "\n".join(services) + "\n"
    (issue,) = [i for i in issues_of(text + over) if i.field == "virtual_services"]
    assert issue.message == f"at most {MAX_REAL_SERVERS} real servers in one file (all services together), got 21000"
    assert (issue.line, issue.column) == (3, 3)
    assert not [i for i in issues_of(text + "\n".join(services[:-1]) + "\n") if i.field == "virtual_services"]
    many = "virtual_services:\n" + "  - {address: 10.0.0.1, port: 80}\n" * (MAX_SERVICES + 1)
    (issue,) = issues_of(many)
    assert issue.message == f"at most {MAX_SERVICES} virtual services in one file, got {MAX_SERVICES + 1}"


def test_the_node_tree_is_freed_a_piece_at_a_time():
    """Dropped at once, a tree of a million nodes is freed in one C call holding the interpreter
    lock (a thread waiting for it waits that long); `release_nodes` frees it in small steps."""
    import functools
    import threading
    import time

    import yaml

    from director.config.located import LocatedLoader, release_nodes

    def tree() -> yaml.Node:
        mark = yaml.Mark("t", 0, 0, 0, None, None)
        pairs = [
            (yaml.ScalarNode("tag:yaml.org,2002:str", f"k{i}", mark, mark), yaml.ScalarNode("t", "1", mark, mark))
            for i in range(200_000)
        ]
        items = [yaml.ScalarNode("t", "1", mark, mark) for _ in range(600_000)]
        return yaml.SequenceNode(
            "t", [yaml.MappingNode("t", pairs, mark, mark), yaml.SequenceNode("t", items, mark, mark)], mark, mark
        )

    def worst_wait(free) -> float:
        done = threading.Event()
        worst = 0.0

        def probe() -> None:
            nonlocal worst
            while not done.is_set():
                start = time.perf_counter()
                time.sleep(0.001)
                worst = max(worst, time.perf_counter() - start)

        thread = threading.Thread(target=probe)
        thread.start()
        time.sleep(0.01)
        free()
        done.set()
        thread.join()
        return worst

    holder = [tree()]
    at_once = worst_wait(holder.clear)
    roots = [tree(), tree()]
    # the better of two runs: a busy machine may preempt the probing thread itself
    stepwise = min(worst_wait(functools.partial(release_nodes, root)) for root in roots)
    assert all(root.value == [] for root in roots)
    assert at_once > 3 * stepwise and stepwise < 0.05, (at_once, stepwise)

    # the loader releases the tree it composed once the data is built
    released = []

    class Spy(LocatedLoader):
        def construct_document(self, node):
            released.append(node)
            return super().construct_document(node)

    loader = Spy("a: [1, 2]\nb: {c: 3}\n")
    assert loader.get_single_data() == {"a": [1, 2], "b": {"c": 3}}
    assert released[0].value == []


def test_huge_integer_is_a_located_error():
    (issue,) = issues_of("virtual_services:\n  - address: 10.0.0.1\n    port: " + "1" * 5000 + "\n")
    assert (issue.line, issue.column) == (3, 11)
    assert issue.message.startswith("invalid YAML: cannot read this int value: Exceeds the limit")


# --- quoted values in messages --------------------------------------------------------------------


def test_huge_scalar_is_cut_in_the_message():
    text = f"virtual_services:\n  - address: {'A' * 1_000_000}\n    port: 80\n"
    (issue,) = issues_of(text)
    assert issue.message == f"not an IP address: '{'A' * 60}'..."


def test_huge_unknown_key_is_cut_in_the_message():
    (issue,) = issues_of(f"global:\n  ? {'k' * 100_000}\n  : 1\n")
    assert len(str(issue)) < 400
    assert f"unknown key '{'k' * 60}'..." in issue.message


def test_control_characters_are_escaped():
    (issue,) = issues_of('virtual_services:\n  - address: "1.2.3.4\\e[2J\\0\\nX"\n    port: 80\n')
    assert issue.message == r"not an IP address: '1.2.3.4\x1b[2J\x00\nX'"
    assert str(issue).isprintable()


def test_check_prints_one_line_for_a_huge_scalar(tmp_path: Path):
    path = tmp_path / "directord.yaml"
    path.write_text(f"virtual_services:\n  - address: 10.0.0.1\n    port: 80\n    scheduler: {'s' * 1_000_000}\n")
    result = run_check(path)
    assert result.returncode == 1
    assert len(result.stderr) < 1000 and "Traceback" not in result.stderr


# --- directord check prints one clear line, no traceback -----------------------------------------------


def _fifo(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    return path, "not a regular file but a FIFO (named pipe)"


def _deep(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "deep.yaml"
    path.write_text("ha: " + "[" * 1000 + "]" * 1000 + "\n")
    return path, f"invalid YAML: nesting deeper than {MAX_YAML_DEPTH} levels"


def _oversize(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.truncate(MAX_CONFIG_BYTES + 1)
    return path, "too large"


def _zero(tmp_path: Path) -> tuple[Path, str]:
    return Path("/dev/zero"), "not a regular file but a character device"


@pytest.mark.parametrize("make", [_fifo, _deep, _oversize, _zero], ids=["fifo", "deep", "oversize", "dev-zero"])
def test_check_command_reports_one_line(tmp_path: Path, make):
    path, reason = make(tmp_path)
    result = run_check(path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 2, result.stderr  # the issue, then the count
    assert lines[0].startswith(f"{path}") and reason in lines[0]


# --- control_socket -----------------------------------------------------------------------------------


def control_socket_doc(path: str) -> str:
    return f"global:\n  control_socket: {path}\n"


def test_control_socket_over_a_regular_file_is_refused(tmp_path: Path):
    victim = tmp_path / "important"
    victim.write_text("keep me\n")
    (issue,) = issues_of(control_socket_doc(str(victim)), "d.yaml")
    assert str(issue) == (
        f"d.yaml:2:19: global.control_socket: '{victim}' exists and is a regular file, not a socket; "
        "the daemon would replace and later delete it: choose another path or remove it"
    )
    assert victim.read_text() == "keep me\n"


def test_control_socket_over_a_directory_or_symlink_is_refused(tmp_path: Path):
    (issue,) = issues_of(control_socket_doc(str(tmp_path)))
    assert "exists and is a directory, not a socket" in issue.message
    link = tmp_path / "link"
    link.symlink_to("/nonexistent")
    (issue,) = issues_of(control_socket_doc(str(link)))
    assert "exists and is a symbolic link, not a socket" in issue.message


def test_control_socket_absent_or_a_socket_is_accepted(tmp_path: Path):
    absent = tmp_path / "absent.sock"
    assert parse_config(control_socket_doc(str(absent))).settings.control_socket == str(absent)
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        assert parse_config(control_socket_doc(str(path))).settings.control_socket == str(path)


# --- bounds of times and counts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("interval", "1.0e+308", "interval must be 0.05..3600 seconds, got 1e+308"),
        ("interval", "1.0e-300", "interval must be 0.05..3600 seconds, got 1e-300"),
        ("interval", "0.01", "interval must be 0.05..3600 seconds, got 0.01"),
        ("interval", "3601", "interval must be 0.05..3600 seconds, got 3601"),
        ("retry_interval", "1.0e-300", "retry_interval must be 0.05..3600 seconds, got 1e-300"),
        ("timeout", "86400", "timeout must be 0.01..3600 seconds, got 86400"),
        ("timeout", "0.001", "timeout must be 0.01..3600 seconds, got 0.001"),
        ("rise", "1001", "rise must be 1..1000, got 1001"),
        ("fall", "100000000000000000000", "fall must be 1..1000, got 100000000000000000000"),
        ("interval", ".nan", "expected a finite number, got number nan"),
        ("timeout", ".inf", "expected a finite number, got number inf"),
    ],
)
def test_check_times_and_counts_are_bounded(key: str, value: str, message: str):
    issue = only(SERVICE.format(key=key, value=value))
    assert issue.field == f"virtual_services[0].check.{key}"
    assert issue.message == message


@pytest.mark.parametrize(
    "key, value", [("interval", "0.05"), ("interval", 3600), ("timeout", "0.01"), ("rise", 1000), ("fall", 1)]
)
def test_check_bounds_are_inclusive(key: str, value: object):
    config = parse_config(textwrap.dedent(SERVICE.format(key=key, value=value)))
    assert float(getattr(config.services[0].check, key)) == float(value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("reconcile_interval", "1.0e+308", "must be 0.1..3600 seconds, got 1e+308"),
        ("reconcile_interval", "1.0e-300", "must be 0.1..3600 seconds, got 1e-300"),
        ("drain_timeout", "1.0e+308", "must be 0..86400 seconds, got 1e+308"),
    ],
)
def test_global_times_are_bounded(key: str, value: str, message: str):
    issue = only(f"global:\n  {key}: {value}\n")
    assert (issue.field, issue.message) == (f"global.{key}", message)


# --- expect_body: RE2 syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"'(a)\1'", r"invalid escape sequence: \1"),
        ("'ok(?=!)'", "invalid perl operator: (?="),
        ("'(?<!not )ok'", "invalid perl operator: (?<!"),
    ],
)
def test_expect_body_must_be_re2(pattern: str, reason: str):
    issue = only(SERVICE.format(key="expect_body", value=pattern))
    assert issue.field == "virtual_services[0].check.expect_body"
    assert issue.message == (
        f"expect_body is not a regular expression the checker can use: {reason} "
        "(it is matched with RE2 syntax: no backreferences, no lookahead or lookbehind)"
    )


def test_expect_body_re2_accepted_and_too_long_refused():
    config = parse_config(textwrap.dedent(SERVICE.format(key="expect_body", value=r"'(?i)<title>\s*OK\d+'")))
    assert config.services[0].check.expect_body == r"(?i)<title>\s*OK\d+"
    issue = only(SERVICE.format(key="expect_body", value="'" + "a" * 5000 + "'"))
    assert issue.message == "expect_body is 5000 characters long; at most 4096"


def test_invalid_timestamp_is_a_located_error():
    # PyYAML resolves 2001-99-99 as a timestamp and its constructor raises ValueError.
    (issue,) = issues_of("ha:\n  state_dir: 2001-99-99\n")
    assert (issue.line, issue.column) == (2, 14)
    assert issue.message == "invalid YAML: cannot read this timestamp value: month must be in 1..12"


def test_many_bad_status_codes_are_one_issue():
    codes = ", ".join(str(code) for code in range(1000, 11000))
    issue = only(SERVICE.format(key="expect_status", value=f"[200, {codes}]"))
    assert issue.message == "status code 1000 is out of range 100..599 (and 9999 more)"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("path", "/" + "p" * 9000, "path is 9001 characters long; at most 8192"),
        ("host", "h" * 300, "host is 300 characters long; at most 260"),
        (
            "method",
            "G" * 40,
            "method must be an HTTP method token such as GET or HEAD (at most 32 characters), got '" + "G" * 40 + "'",
        ),
    ],
)
def test_http_check_strings_are_bounded(key: str, value: str, message: str):
    issue = only(SERVICE.format(key=key, value=value))
    assert (issue.field, issue.message) == (f"virtual_services[0].check.{key}", message)


@pytest.mark.parametrize(
    "command, message",
    [
        (["/bin/true"] + ["a"] * 300, "command has 301 items; at most 256"),
        (["/bin/true", "a" * 5000], "a command argument is 5000 characters long; at most 4096"),
    ],
)
def test_external_command_is_bounded(command: list[str], message: str):
    text = SERVICE.replace("type: http", "type: external").format(key="command", value=command)
    issue = only(text)
    assert (issue.field, issue.message) == ("virtual_services[0].check.command", message)


def test_issues_are_capped_at_one_hundred_and_counted():
    text = "virtual_services:\n" + "".join(f"  - {{address: 10.0.0.1, port: {70000 + i}}}\n" for i in range(500))
    issues = issues_of(text)
    assert len(issues) == 101
    assert all(issue.message.startswith("port 7") for issue in issues[:100])
    assert str(issues[100]) == "t.yaml: 400 more problems not listed"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert info.value.total == 500
    assert format_issues(info.value).endswith("\nt.yaml: 400 more problems not listed\nt.yaml: 500 errors")


def test_check_command_counts_every_problem(tmp_path):
    """`directord check` prints the number of problems found, not of those listed."""
    import subprocess
    import sys

    path = tmp_path / "many.yaml"
    path.write_text(
        "virtual_services:\n" + "".join(f"  - {{address: 10.0.0.1, port: {70000 + i}}}\n" for i in range(500))
    )
    run = subprocess.run(
        [sys.executable, "-m", "director.cli", "check", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == f"{path}: 500 error(s)", run.stderr[-500:]
