"""Configuration problems: `ConfigIssue` (one located problem), `ConfigError` (all of them), and
the quoting of hostile values in messages (`quote`, `describe`).

Every value quoted in a message is bounded (`MAX_QUOTED` characters) and escaped, so a message
is always one printable line whatever the file holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ISSUES",
    "MAX_QUOTED",
    "ConfigError",
    "ConfigIssue",
    "bounded",
    "describe",
    "escape",
    "format_issues",
    "quote",
    "yaml_kind",
]

#: Most issues one `ConfigError` lists; the rest are counted in a last issue.
MAX_ISSUES = 100
#: Longest quoted value shown in a message, in characters (longer ones end with ``...``).
MAX_QUOTED = 60


def escape(text: str) -> str:
    """``text`` with every non-printable character (ESC, NUL, newline...) written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """A value quoted for a message: ``repr`` of its first ``limit`` characters, ``...`` after when cut.

    A string is quoted; another value (a number...) is its ``repr``, cut alike.

    Control characters come out escaped (``'\\x1b'``), so a message is always
    one printable line, and a 50 MB scalar costs 60 characters.
    """
    if not isinstance(value, str):
        return bounded(repr(value), limit)
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (``...`` appended) and escaped (see `escape`)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return escape(text)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a configuration file.

    Attributes:
        file: path of the configuration file, as given to the loader.
        line: 1-based line of the offending YAML node; 0 when the problem has
            no position (the file could not be read).
        column: 1-based column of that node; 0 when ``line`` is 0.
        field: dotted path of the offending value, e.g.
            ``virtual_services[0].real_servers[1].weight``; ``""`` for problems
            of the file as a whole (YAML syntax, empty file).
        message: what is wrong, in plain words.

    ``str(issue)`` is ``FILE:LINE:COL: FIELD: MESSAGE``; the ``FIELD: `` part is
    left out when ``field`` is empty, and ``:LINE:COL`` when ``line`` is 0.
    """

    file: str
    line: int
    column: int
    field: str
    message: str

    def __post_init__(self) -> None:
        # Whatever a message quotes, an issue stays one printable line of bounded length.
        object.__setattr__(self, "field", bounded(self.field, 200))
        object.__setattr__(self, "message", bounded(self.message, 1000))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration file is invalid.

    Attributes:
        issues: the problems found, sorted by position in the file (never
            empty): the first `MAX_ISSUES`, then, when there were more, one
            issue without position saying how many were left out.
            ``str(error)`` lists them, one per line.
        total: how many problems were found (``len(issues)`` unless some
            were left out).
    """

    def __init__(self, issues: list[ConfigIssue]) -> None:
        kept = list(issues[:MAX_ISSUES])
        if len(issues) > MAX_ISSUES:
            rest = len(issues) - MAX_ISSUES
            plural = "s" if rest != 1 else ""
            kept.append(ConfigIssue(kept[0].file, 0, 0, "", f"{rest} more problem{plural} not listed"))
        self.issues: list[ConfigIssue] = kept
        self.total = len(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


def format_issues(err: ConfigError) -> str:
    """Human-readable report for ``directord check``: one issue per line, then a count line.

    Example::

        /etc/directord/directord.yaml:14:11: virtual_services[0].port: port 70000 is out of range 1..65535
        /etc/directord/directord.yaml: 1 error
    """
    count = err.total
    file = err.issues[0].file if err.issues else "configuration"
    noun = "error" if count == 1 else "errors"
    return f"{err}\n{file}: {count} {noun}"


def yaml_kind(value: Any) -> str:
    """The YAML name of a loaded value's kind: ``null``, ``boolean``, ``integer``, ``number``, ``string``,
    ``mapping``, ``list`` (another Python type: its class name)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def describe(value: Any) -> str:
    """``string '80'``, ``boolean True``, ``mapping``: a short description of a YAML value."""
    kind = yaml_kind(value)
    if value is None or isinstance(value, (dict, list)):
        return kind
    return f"{kind} {quote(value, 40) if isinstance(value, str) else bounded(repr(value), 40)}"
