"""heartbeat's configuration rules, pure: its time syntax, its booleans and its timer defaults.

These are facts of heartbeat 3.0.6, used wherever directord reads heartbeat's notions: the
``ha:`` section of the YAML file (`director.config.ha`) and ``directord convert``'s reading of
ha.cf.  Keeping them in one place means both count a time the same way.

* times (``lib/clplumbing/cl_misc.c``, ``cl_get_msec``): a decimal number of seconds, or with
  an ``ms`` / ``us`` suffix, rounded to the nearest millisecond (`heartbeat_msec`,
  `heartbeat_time_msec`); directord also accepts an ``s`` suffix.
* booleans (``cl_str_to_boolean``, same file): `TRUE_WORDS`, `FALSE_WORDS`.
* timers (``heartbeat/config.c``, ``init_config``): keepalive 1 s, deadtime 30 s; warntime
  unset -> deadtime / 2; initdead unset -> deadtime if deadtime > 10 s, 12 s if deadtime < 6 s,
  else 2 x deadtime (`resolve_timers`, with directord's own profile beside heartbeat's).
* node names are case-insensitive: heartbeat lowercases them (``add_node``), and our own name
  defaults to ``uname -n`` (`default_node_name`).
"""

from __future__ import annotations

import os
import re
from typing import Literal

from ha.model import (
    DEFAULT_DEADTIME,
    DEFAULT_INITDEAD,
    DEFAULT_KEEPALIVE,
    DEFAULT_WARNTIME,
    HEARTBEAT_DEADTIME,
    HEARTBEAT_KEEPALIVE,
    Timers,
)

__all__ = [
    "FALSE_WORDS",
    "MAX_TIME_TEXT",
    "TRUE_WORDS",
    "Compat",
    "default_node_name",
    "heartbeat_msec",
    "heartbeat_time_msec",
    "resolve_timers",
]

#: The two timer profiles: directord's (sub-second failover) and heartbeat's own.
Compat = Literal["directord", "heartbeat"]
#: The words heartbeat's ``cl_str_to_boolean`` reads as true and as false, in lower case
#: (``lib/clplumbing/cl_misc.c``); ha.cf and the ha section read booleans so.
TRUE_WORDS = ("true", "on", "yes", "y", "1")
FALSE_WORDS = ("false", "off", "no", "n", "0")
#: Longest time string `heartbeat_time_msec` reads, in characters.
MAX_TIME_TEXT = 32
#: heartbeat's initdead rule thresholds (heartbeat/config.c, init_config), seconds.
_HB_INITDEAD_SAME_ABOVE = 10.0
_HB_INITDEAD_FIXED_BELOW = 6.0
_HB_INITDEAD_FIXED = 12.0

# The directord profile's warntime default is heartbeat's deadtime / 2 rule.
assert DEFAULT_WARNTIME == DEFAULT_DEADTIME / 2

#: heartbeat's time syntax: a decimal number, an optional unit, blanks around both.
_TIME = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|s)?\s*", re.IGNORECASE)
#: ``cl_get_msec``'s ``(multiplier, divisor)`` per unit (heartbeat ``lib/clplumbing/cl_misc.c``).
_MSEC_SCALE = {"s": (1000.0, 1.0), "ms": (1.0, 1.0), "us": (1.0, 1000.0)}
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def heartbeat_msec(number: str, unit: str) -> int:
    """Milliseconds of the heartbeat time ``number`` + ``unit`` (pure), computed as heartbeat's
    ``cl_get_msec`` (``lib/clplumbing/cl_misc.c``) does: the number as a double, times the
    unit's multiplier (1000 for seconds, 1 otherwise), divided by its divisor (1000 for ``us``,
    1 otherwise), plus 0.5, truncated.  So halves round up: ``"2500us"`` is 3 ms,
    ``"500.5ms"`` 501 ms, and, as heartbeat's own comment says, ``"499us"`` is 0 and ``"501us"``
    is 1.

    ``number``: digits with an optional fraction (``"1"``, ``"0.5"``, ``".5"``); ``unit``:
    ``s``, ``ms`` or ``us`` in any case.

    Raises:
        ValueError: ``number`` is not a decimal number, or ``unit`` is another word.
        OverflowError: the value is too large to count milliseconds of.
    """
    scale = _MSEC_SCALE.get(unit.lower())
    if scale is None:
        raise ValueError("not a heartbeat time unit (s, ms or us)")
    if _DECIMAL.fullmatch(number) is None:
        raise ValueError("not a decimal number")
    multiplier, divisor = scale
    return int(float(number) * multiplier / divisor + 0.5)


def heartbeat_time_msec(text: str) -> int:
    """Milliseconds of a heartbeat time string (pure): ``N``, ``Ns``, ``Nms`` or ``Nus``, ``N`` a
    decimal number with an optional fraction, the suffix in any case, blanks allowed around it
    and around the whole; no suffix means seconds (as ha.cf's ``keepalive 2``).  Counted as
    heartbeat's ``cl_get_msec`` counts (`heartbeat_msec`).

    Raises:
        ValueError: ``text`` has another form or is longer than 32 characters.
    """
    match = _TIME.fullmatch(text) if len(text) <= MAX_TIME_TEXT else None
    if match is None:
        raise ValueError(f"not a heartbeat time (N, Ns, Nms or Nus; at most {MAX_TIME_TEXT} characters)")
    return heartbeat_msec(match.group(1), match.group(2) or "s")


def resolve_timers(
    compat: Compat,
    keepalive: float | None = None,
    warntime: float | None = None,
    deadtime: float | None = None,
    initdead: float | None = None,
) -> Timers:
    """Fill the unset timers (``None``) with the profile's defaults; all in seconds.

    ``directord``: keepalive `ha.model.DEFAULT_KEEPALIVE` (0.2), deadtime
    `DEFAULT_DEADTIME` (0.8), warntime deadtime / 2 (`DEFAULT_WARNTIME`, 0.4, with
    the default deadtime), initdead max(`DEFAULT_INITDEAD` (3), deadtime).

    ``heartbeat`` (heartbeat/config.c, ``init_config``): keepalive 1, deadtime
    30, warntime deadtime / 2, initdead deadtime if deadtime > 10 s, 12 s if
    deadtime < 6 s, else 2 x deadtime.

    Pure; does not validate (see `director.config.ha.parse_ha` for the rules).
    """
    if compat == "heartbeat":
        keepalive = HEARTBEAT_KEEPALIVE if keepalive is None else keepalive
        deadtime = HEARTBEAT_DEADTIME if deadtime is None else deadtime
        if initdead is None:
            if deadtime > _HB_INITDEAD_SAME_ABOVE:
                initdead = deadtime
            elif deadtime < _HB_INITDEAD_FIXED_BELOW:
                initdead = _HB_INITDEAD_FIXED
            else:
                initdead = 2 * deadtime
    else:
        keepalive = DEFAULT_KEEPALIVE if keepalive is None else keepalive
        deadtime = DEFAULT_DEADTIME if deadtime is None else deadtime
        if initdead is None:
            initdead = max(DEFAULT_INITDEAD, deadtime)
    if warntime is None:  # heartbeat's rule, in both profiles
        warntime = deadtime / 2
    return Timers(keepalive=keepalive, warntime=warntime, deadtime=deadtime, initdead=initdead)


def default_node_name() -> str:
    """Our node name when ``node`` is not given: ``uname -n``, lowercased as heartbeat does."""
    return os.uname().nodename.lower()
