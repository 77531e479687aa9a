"""Tests for ha.node.groups: the resource sets and the driver operations on the
resource groups (Acquire / Release, confirmations, batches), without a node."""

from __future__ import annotations

import logging

import pytest
from nodefakes import VIP_A, VIP_B, FakeHost, config

from ha.model import Resource, ResourceGroup
from ha.node.api import Acquire, GroupInfo, Release
from ha.node.groups import (
    ACQUIRE_RETRY,
    ALL,
    FOREIGN,
    LOCAL,
    NONE,
    GroupTable,
    rsc_name,
    rsc_type,
)

VIP_A2 = ResourceGroup("nodea", (Resource("192.168.50.11", 32, "eth0"),))
OTHER = ResourceGroup("nodeb", (Resource("192.168.50.99", 32, "eth0"),))


def table(groups=(VIP_A, VIP_A2, VIP_B)) -> tuple[GroupTable, FakeHost, list[str]]:
    host = FakeHost(0.0)
    settled: list[str] = []
    return GroupTable(config(groups=tuple(groups)), host, lambda: settled.append("settled")), host, settled


def test_resource_sets():
    assert [rsc_name(b) for b in (NONE, LOCAL, FOREIGN, ALL, 7, -1)] == [
        "none",
        "local",
        "foreign",
        "all",
        "none",
        "none",
    ]
    assert [rsc_type(w) for w in ("all", "local", "foreign")] == [ALL, LOCAL, FOREIGN]
    with pytest.raises(ValueError, match="expected all, local or foreign"):
        rsc_type("none")


def test_groups_by_owner_and_key():
    t, _, _ = table()
    assert [g.local for g in t.groups] == [True, True, False]
    assert t.groups_of(LOCAL) == [0, 1] and t.groups_of(FOREIGN) == [2] and t.groups_of(ALL) == [0, 1, 2]
    assert t.groups_of(NONE) == []
    key = t.groups[2].key
    assert key is not None and t.by_key(key) == 2 and t.by_key("nope") is None and t.by_key(None) is None
    assert t.groups[0].describe() == f"group {t.groups[0].key} (owner nodea)"
    assert t.configured(VIP_B) and not t.configured(OTHER)


def test_acquire_and_release_emit_only_what_changes_the_target():
    t, host, _ = table()
    assert t.acquire(0, "why")
    assert not t.acquire(0, "again")  # already the target
    assert t.acquire(0, "announce", force=True)
    assert host.actions == [Acquire(VIP_A, "why"), Acquire(VIP_A, "announce")]
    assert t.groups[0].target and t.groups[0].want and list(t.groups[0].ops) == ["acquire", "acquire"]
    assert t.release(0, "bye") and not t.release(0, "bye again")
    assert not t.groups[0].target and not t.groups[0].want
    assert not t.release(1, "never held")
    assert t.busy() and t.infos()[0] == GroupInfo(VIP_A, False, ("acquire", "acquire", "release"))


def test_a_batch_completes_once_every_operation_is_confirmed():
    t, host, settled = table()
    done: list[float] = []
    t.start_batch([0, 1], "acquire", "preferred owner", done.append)
    assert [a.group for a in host.actions] == [VIP_A, VIP_A2]
    host.now = 3.0
    t.confirm_acquired(VIP_A, True, 3.0, retry=True)
    host.drain()
    assert done == [] and settled == ["settled"]
    host.now = 4.0
    t.confirm_acquired(VIP_A2, True, 4.0, retry=True)
    host.drain()
    assert done == [4.0] and settled == ["settled", "settled"]
    assert not t.busy() and t.groups[0].held and t.groups[1].held
    assert (logging.INFO, f"acquired {t.groups[1].describe()}") in host.logs


def test_a_batch_with_nothing_to_do_completes_later_not_synchronously():
    t, host, _ = table()
    done: list[float] = []
    t.start_batch([2], "release", "not held", done.append)
    assert done == [] and host.actions == []
    host.now = 7.0
    host.drain()
    assert done == [7.0]
    t.start_batch([2], "release", "no callback", None)
    assert not host.deferred


def test_a_failed_acquisition_is_retried_while_wanted():
    t, host, _ = table()
    t.acquire(0, "why")
    t.confirm_acquired(VIP_A, False, 10.0, retry=True)
    g = t.groups[0]
    assert not g.held and g.retry_at == 10.0 + ACQUIRE_RETRY and t.deadlines() == [10.0 + ACQUIRE_RETRY]
    assert host.counts["acquire_failures"] == 1
    t.acquire(1, "why")
    t.confirm_acquired(VIP_A2, False, 10.0, retry=False)  # stopping: no retry
    assert t.groups[1].retry_at is None


def test_confirmations_out_of_order_unexpected_or_unknown_are_logged():
    t, host, _ = table()
    t.acquire(0, "a")
    t.release(0, "r")
    t.confirm_released(VIP_A)
    t.confirm_released(VIP_A)
    t.confirm_acquired(OTHER, True, 0.0, retry=True)
    t.confirm_released(OTHER)
    messages = [m for _, m in host.logs]
    assert f"release of {t.groups[0].describe()} confirmed out of order" in messages
    assert f"unexpected release confirmation for {t.groups[0].describe()}" in messages
    assert any("acquired() for a group that is not configured" in m for m in messages)
    assert any("released() for a group that is not configured" in m for m in messages)
    assert list(t.groups[0].ops) == ["acquire"]


def test_start_release_force_release_abandon_and_drop():
    t, host, _ = table()
    t.release_all_at_start()
    assert [type(a) for a in host.actions] == [Release, Release, Release] and t.busy()
    t.abandon()
    assert not t.busy()
    t.force_release(1, "graceful shutdown")
    assert host.actions[-1] == Release(VIP_A2, "graceful shutdown") and list(t.groups[1].ops) == ["release"]
    done: list[float] = []
    t.start_batch([1], None, "", done.append)
    t.drop_batches()
    t.confirm_released(VIP_A2)
    host.drain()
    assert done == []
