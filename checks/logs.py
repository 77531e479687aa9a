"""Log line formats shared by the director and its checker child, and journald's priorities.

Here because the checker child (`checks.process`) imports nothing of the director, and both
write to the same stderr: the director (`director.cli.setup_logging`) takes its formats from
this module, so the two processes' lines always look alike.

When stderr is the journal (systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the
stream it gives a service, systemd.exec(5)), each line starts with its syslog priority
(``<N>``, sd-daemon(3)) and the text format leaves the time to the journal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["JOURNAL_FORMAT", "LOG_FORMAT", "SYSLOG_PRIORITY", "JournalFormatter", "journal_stream", "text_formatter"]

#: Log line format on a terminal or in a file.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The text format when stderr goes to the journal, which stamps each line itself.
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: syslog priority of each logging level (``sd-daemon.h``: ``SD_CRIT`` 2, ``SD_ERR`` 3,
#: ``SD_WARNING`` 4, ``SD_INFO`` 6, ``SD_DEBUG`` 7), sent to journald as a ``<N>`` line prefix.
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def journal_stream(stream: IO[Any] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` (stderr by default) is connected to the journal: ``$JOURNAL_STREAM``
    names its device and inode (a process whose stderr was redirected elsewhere sees other
    numbers). Never raises."""
    stream = sys.stderr if stream is None else stream
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


class JournalFormatter(logging.Formatter):
    """``<N>`` (the record's syslog priority, `SYSLOG_PRIORITY`) before the line ``inner`` writes:
    journald stores the line at that priority and strips the prefix."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        return f"<{SYSLOG_PRIORITY[level]}>{self.inner.format(record)}"


def text_formatter(journal: bool) -> logging.Formatter:
    """The text formatter: `LOG_FORMAT`, or under the journal `JOURNAL_FORMAT` with priorities."""
    if journal:
        return JournalFormatter(logging.Formatter(JOURNAL_FORMAT))
    return logging.Formatter(LOG_FORMAT)
