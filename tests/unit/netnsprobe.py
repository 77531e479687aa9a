"""Whether network namespaces can be made here: the one probe of the unit tests that need them
(``test_netns.py``, ``test_rtnl.py``, ``test_ha_vip.py``, ``test_ha_announce.py``).

A test module asks once, at import: ``_problem = netns_problem(PREFIX)`` and
``needs_netns = netns_skip(_problem)``, the mark of its tests that make namespaces; a fixture
may also ``pytest.skip(_problem)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


def netns_problem(
    prefix: str,
    *,
    create: Callable[[str], object] | None = None,
    remove: Callable[[str], object] | None = None,
) -> str | None:
    """None when a named network namespace can be made and removed here, else why not (a skip
    reason): ``needs root``, or ``cannot create network namespaces: ERROR`` for any exception.

    The probe namespace is ``<prefix>-probe``. ``create`` and ``remove`` make and remove it by
    name: `director.lab.netns.create_netns` and `delete_netns` unless given (a test of a lower
    layer passes that layer's own, e.g. `ha.rtnl.netns_create` and `netns_remove`).
    """
    if os.geteuid() != 0:
        return "needs root"
    if create is None or remove is None:
        from director.lab import netns

        create = create or netns.create_netns
        remove = remove or netns.delete_netns
    name = f"{prefix}-probe"
    try:
        create(name)
        remove(name)
    except Exception as e:  # no namespace support here
        return f"cannot create network namespaces: {e}"
    return None


def netns_skip(problem: str | None) -> pytest.MarkDecorator:
    """The mark of tests that need network namespaces: skip with ``problem`` (a `netns_problem`
    answer) unless it is None."""
    return pytest.mark.skipif(problem is not None, reason=problem or "")
