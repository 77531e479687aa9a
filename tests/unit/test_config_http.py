"""``global.http`` (the metrics listener): its address, its token file, and the rule that any
address but loopback needs a token."""

from __future__ import annotations

import os

import pytest
from test_config import issues_of, only_issue, parse

from director.model import HTTPSettings

TOKEN = "0123456789abcdef0123456789abcdef"


def token_file(tmp_path, text: str = TOKEN + "\n", mode: int = 0o600) -> str:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_absent_means_no_listener_and_empty_means_the_default_loopback_port():
    assert parse("global: {}\n").settings.http is None
    http = parse("global:\n  http: {}\n").settings.http
    assert http == HTTPSettings("127.0.0.1", 9199)
    assert http.loopback and http.listen == "127.0.0.1:9199" and http.token is None


@pytest.mark.parametrize(
    "listen, host, port",
    [("127.0.0.1:9100", "127.0.0.1", 9100), ("[::1]:9199", "::1", 9199), ("[0:0::1]:1", "::1", 1)],
)
def test_listen_forms(listen, host, port):
    http = parse(f'global:\n  http: {{listen: "{listen}"}}\n').settings.http
    assert (http.host, http.port) == (host, port)


@pytest.mark.parametrize(
    "listen",
    [
        "localhost:9199",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "::1:9199",
        "[127.0.0.1]:9199",
        ":9199",
        "127.0.0.1:9x",
        "[fe80::1%eth0]:9199",
        "127.0.0.1:٩١",
    ],
)
def test_bad_listen_is_located(listen):
    issue = only_issue(f'global:\n  http:\n    listen: "{listen}"\n')
    assert (issue.line, issue.field) == (3, "global.http.listen")
    assert "ADDRESS:PORT" in issue.message


def test_any_address_but_loopback_needs_a_token_file():
    issue = only_issue('global:\n  http:\n    listen: "0.0.0.0:9199"\n')
    assert (issue.line, issue.field) == (3, "global.http.listen")
    assert "token_file is required" in issue.message


def test_token_is_read_from_its_file(tmp_path):
    path = token_file(tmp_path)
    http = parse(f'global:\n  http: {{listen: "0.0.0.0:9199", token_file: {path}}}\n').settings.http
    assert http.token == TOKEN and http.token_file == path and not http.loopback
    assert TOKEN not in repr(http)  # never logged with the settings


@pytest.mark.parametrize(
    "text, mode, words",
    [
        (TOKEN, 0o644, "bad permissions 644"),
        ("short\n", 0o600, "at least 16 characters"),
        (TOKEN + " " + TOKEN, 0o600, "one token"),
        ("", 0o600, "one token"),
    ],
)
def test_bad_token_files_are_located(tmp_path, text, mode, words):
    path = token_file(tmp_path, text, mode)
    issue = only_issue(f"global:\n  http:\n    token_file: {path}\n")
    assert (issue.line, issue.field) == (3, "global.http.token_file")
    assert words in issue.message and path in issue.message


def test_a_token_file_in_a_directory_others_can_write_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    path = token_file(tmp_path / "d")
    os.chmod(tmp_path / "d", 0o775)
    issue = only_issue(f"global:\n  http:\n    token_file: {path}\n")
    assert issue.field == "global.http.token_file"
    assert f"directory {tmp_path / 'd'} has mode 775: writable by group or others" in issue.message


def test_token_file_must_be_an_absolute_path_to_a_regular_file(tmp_path):
    issue = only_issue("global:\n  http:\n    token_file: token\n")
    assert "absolute path" in issue.message
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    issue = only_issue(f"global:\n  http:\n    token_file: {fifo}\n")
    assert "not a regular file" in issue.message


def test_unknown_key_under_http():
    issues = issues_of("global:\n  http: {listen: '127.0.0.1:9199', port: 1}\n")
    assert [i.field for i in issues] == ["global.http.port"]
