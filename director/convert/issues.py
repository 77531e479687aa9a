"""Messages of `directord convert`: errors, warnings and notes tied to a line of an input file.

* an **error** stops the conversion (nothing is written): the input is not
  valid for the program that reads it (ldirectord, heartbeat), or it holds
  something directord must be told explicitly;
* a **warning** names a directive whose meaning directord cannot express yet:
  the setting is left out (or approximated, as said in the message) and
  never dropped silently;
* a **note** says how a directive was carried over when the translation is
  not one-to-one but keeps its meaning (also written as a comment into the
  output).

A warning may also mark a **weaker check** (`Issue.weaker`): a virtual service
whose real servers directord would check less than ldirectord did (a connect
where ldirectord negotiated, a receive pattern left out, no check at all).
``directord convert --strict`` refuses to write while there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ConvertError", "Issue", "Issues", "Severity"]

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Issue:
    """One message about one input line.

    Attributes:
        severity: ``error``, ``warning`` or ``note``.
        file: path of the input file as given.
        line: 1-based line; 0 when the message concerns the file as a whole.
        directive: the directive concerned (``quiescent``, ``real``...);
            ``""`` when none.
        message: plain words.
        weaker: a warning saying that directord would check a virtual
            service's real servers less than ldirectord does (``line`` is
            then the ``virtual=`` line); ``--strict`` refuses those.

    ``str(issue)`` is ``FILE:LINE: DIRECTIVE: MESSAGE`` (``:LINE`` left out
    for line 0, ``DIRECTIVE: `` when empty).  The message is cut to 1000
    characters and its control characters (ESC, NUL, newline) are escaped.
    """

    severity: Severity
    file: str
    line: int
    directive: str
    message: str
    weaker: bool = False

    def __post_init__(self) -> None:
        # One printable line of bounded length, whatever the input file held.
        message = self.message if len(self.message) <= 1000 else self.message[:1000] + "..."
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        object.__setattr__(self, "message", message)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"{self.directive}: " if self.directive else ""
        return f"{where}: {what}{self.message}"


class ConvertError(Exception):
    """The input cannot be converted.

    Attributes:
        issues: every error found (never empty), in input order, then the
            warnings and notes gathered so far (for context).
    """

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        super().__init__(str(self))

    @property
    def errors(self) -> list[Issue]:
        """The issues of severity ``error``."""
        return [i for i in self.issues if i.severity == "error"]

    def __str__(self) -> str:
        return "\n".join(f"error: {i}" for i in self.errors)


class Issues:
    """Collector of issues for one input file (``file`` as given)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Issue] = []

    def error(self, line: int, directive: str, message: str) -> None:
        """Add an error at ``line`` (1-based; 0: the file as a whole) about ``directive``."""
        self.items.append(Issue("error", self.file, line, directive, message))

    def warn(self, line: int, directive: str, message: str) -> None:
        """Add a warning at ``line`` (1-based; 0: the file as a whole) about ``directive``."""
        self.items.append(Issue("warning", self.file, line, directive, message))

    def note(self, line: int, directive: str, message: str) -> None:
        """Add a note at ``line`` (1-based; 0: the file as a whole) about ``directive``."""
        self.items.append(Issue("note", self.file, line, directive, message))

    def weaker(self, line: int, service: str, ldirectord: str, directord: str) -> None:
        """Add a weaker-check warning (`Issue.weaker`) for the virtual of ``line``.

        Args:
            line: the ``virtual=`` line (1-based).
            service: how the virtual is named (servicename, ``VIP:PORT/PROTO``,
                ``fwmark N``) and its ldirectord service type.
            ldirectord: what ldirectord's check does (after "ldirectord ").
            directord: what directord's converted check does (after "directord ").
        """
        message = f"{service}: weaker check than ldirectord's: ldirectord {ldirectord}; directord {directord}"
        self.items.append(Issue("warning", self.file, line, "check", message, weaker=True))

    @property
    def has_errors(self) -> bool:
        """True once an error was added."""
        return any(i.severity == "error" for i in self.items)
