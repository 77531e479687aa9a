"""Hypothesis settings shared by the property-based fuzz tests (tests/unit/test_fuzz_*.py).

Two profiles, chosen by the environment variable ``DIRECTORD_FUZZ``:

* unset or ``default``: a bounded example count per property, so the regular
  suite stays quick;
* ``long``: thousands of examples per property, for a run by hand (see
  docs/fuzzing.md)::

      DIRECTORD_FUZZ=long python3 -m pytest tests/unit -k fuzz -p no:cacheprovider

Both have no per-example deadline (a shared machine is slow at times) and no
example database (nothing is written into the working tree); a failure prints
the ``@reproduce_failure`` blob that replays it. Each test applies `FUZZ`
(optionally scaled with `fuzz_settings`) as a decorator: the profiles are not
loaded globally, so other tests are not affected.

``ValueError`` at import for any other value of ``DIRECTORD_FUZZ``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["FUZZ", "PROFILE", "fuzz_settings"]

#: Examples per property in the regular suite, and in the long run.
DEFAULT_EXAMPLES = 40
LONG_EXAMPLES = 4000

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

settings.register_profile("directord-fuzz", max_examples=DEFAULT_EXAMPLES, **_COMMON)
settings.register_profile("directord-fuzz-long", max_examples=LONG_EXAMPLES, **_COMMON)

_CHOICE = os.environ.get("DIRECTORD_FUZZ", "default").strip() or "default"
if _CHOICE not in ("default", "long"):
    raise ValueError(f"DIRECTORD_FUZZ must be 'default' or 'long', not {_CHOICE!r}")

#: Name of the profile in use.
PROFILE = "directord-fuzz-long" if _CHOICE == "long" else "directord-fuzz"

#: Settings of the selected profile, for use as ``@FUZZ`` on a ``@given`` test.
FUZZ = settings.get_profile(PROFILE)


def fuzz_settings(scale: float = 1.0) -> settings:
    """The selected profile with ``max_examples`` multiplied by `scale` (at least 1).

    For properties whose single example is much dearer or cheaper than usual.
    """
    return settings(FUZZ, max_examples=max(1, int(FUZZ.max_examples * scale)))
