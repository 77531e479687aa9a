"""The resource groups as the node drives them: which are ours (the first column of
haresources), the resource sets of heartbeat's messages (none / local / foreign /
all), and the driver operations: `Acquire` / `Release` emitted, confirmed later
by the driver (``acquired`` / ``released``), and batches of them whose completion
moves the resource protocol on (as heartbeat's resource scripts complete later).

Pure: no I/O, no clock reads. Actions go out through a `DriverHost` (the node);
times are monotonic seconds.

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/hb_resource.c``
(the resource sets ``HB_LOCAL_RSC`` / ``HB_FOREIGN_RSC`` / ``HB_ALL_RSC`` and
their ``rsc_hold`` names; a group's key is its first resource, as
``haresources`` names it).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ha.model import HAConfig, ResourceGroup
from ha.node.api import Acquire, Action, GroupInfo, Release

__all__ = [
    "ACQUIRE_RETRY",
    "ALL",
    "FOREIGN",
    "LOCAL",
    "NONE",
    "RSC_NAMES",
    "DriverHost",
    "GroupState",
    "GroupTable",
    "rsc_name",
    "rsc_type",
]

# resource sets (hb_resource.c): bit 1 = our groups, bit 2 = the peer's groups
NONE, LOCAL, FOREIGN, ALL = 0, 1, 2, 3
#: ``rsc_hold`` names of the resource sets, by value.
RSC_NAMES = ("none", "local", "foreign", "all")
#: Seconds after which a failed acquisition is retried while the group should be ours.
ACQUIRE_RETRY = 5.0


def rsc_name(bits: int) -> str:
    """The ``rsc_hold`` name of a resource set (``none`` for anything unknown)."""
    return RSC_NAMES[bits] if 0 <= bits < len(RSC_NAMES) else "none"


def rsc_type(which: str) -> int:
    """The resource set named ``all``, ``local`` or ``foreign``; ``ValueError`` otherwise."""
    if which not in ("all", "local", "foreign"):
        raise ValueError(f"expected all, local or foreign, not {which!r}")
    return RSC_NAMES.index(which)


class DriverHost(Protocol):
    """What the group table needs from the node around it."""

    @property
    def now(self) -> float:
        """The current entry point's time, monotonic seconds."""

    def emit(self, action: Action) -> None:
        """Hand an `Acquire` / `Release` to the driver."""

    def log(self, level: int, message: str) -> None:
        """Log (`level` a `logging` level)."""

    def defer(self, fn: Callable[[], None]) -> None:
        """Run `fn` later in the same entry point, after the current step."""

    def count(self, counter: str) -> None:
        """Add one to the node counter `counter` (`ha.node.api.COUNTERS`)."""


class GroupState:
    """One resource group: `held` as last confirmed by the driver, `want`
    whether it should be ours, `ops` the operations (``"acquire"`` /
    ``"release"``) emitted and not confirmed yet, in order, `retry_at` /
    `legacy_deadline` timers (monotonic seconds or None)."""

    def __init__(self, group: ResourceGroup, local: bool) -> None:
        self.group = group
        self.local = local
        self.held = False
        self.want = False
        self.ops: deque[str] = deque()
        self.retry_at: float | None = None
        self.legacy_deadline: float | None = None

    @property
    def key(self) -> str | None:
        """The haresources key: the group's first resource, as heartbeat names it."""
        return str(self.group.resources[0]) if self.group.resources else None

    @property
    def target(self) -> bool:
        """Whether the group is ours once the pending operations are done."""
        return self.ops[-1] == "acquire" if self.ops else self.held

    def describe(self) -> str:
        """The group for logs: ``group <key> (owner <node>)``."""
        return f"group {self.key or '(empty)'} (owner {self.group.owner})"


class _Batch:
    def __init__(self, groups: set[int], on_done: Callable[[float], None]) -> None:
        self.groups = groups
        self.on_done = on_done


class GroupTable:
    """The configured groups (`groups`, `GroupState` in configuration order;
    groups are named by their index there) and the driver operations on them.

    Args:
        config: the HA configuration (`config.node` is us; `config.groups`).
        host: the node (`DriverHost`).
        on_settled: called (deferred) after every confirmation that leaves its
            group with no pending operation.
    """

    def __init__(self, config: HAConfig, host: DriverHost, on_settled: Callable[[], None]) -> None:
        me = config.node.lower()
        self.groups = [GroupState(g, g.owner.lower() == me) for g in config.groups]
        self._index = {g: i for i, g in enumerate(config.groups)}
        self._host = host
        self._on_settled = on_settled
        self._batches: list[_Batch] = []

    def configured(self, group: ResourceGroup) -> bool:
        """Whether `group` is one of ours to drive (as configured)."""
        return group in self._index

    def groups_of(self, bits: int) -> list[int]:
        """Indexes of the resource set `bits` (`LOCAL`: ours, `FOREIGN`: the peer's)."""
        return [i for i, g in enumerate(self.groups) if (g.local and bits & LOCAL) or (not g.local and bits & FOREIGN)]

    def by_key(self, key: str | None) -> int | None:
        """Index of the group whose key (first resource) is `key`, or None."""
        if key is None:
            return None
        for i, g in enumerate(self.groups):
            if g.key == key:
                return i
        return None

    def busy(self) -> bool:
        """Some driver operation is not confirmed yet."""
        return any(g.ops for g in self.groups)

    def infos(self) -> tuple[GroupInfo, ...]:
        """The groups for `ha.node.api.NodeSnapshot`."""
        return tuple(GroupInfo(g.group, g.held, tuple(g.ops)) for g in self.groups)

    def deadlines(self) -> list[float]:
        """Monotonic seconds of the groups' pending timers."""
        out = []
        for g in self.groups:
            if g.retry_at is not None:
                out.append(g.retry_at)
            if g.legacy_deadline is not None:
                out.append(g.legacy_deadline)
        return out

    def release_all_at_start(self) -> None:
        """A fresh process holds nothing: a `Release` of every group (addresses a
        crashed predecessor left behind go away; a no-op for the driver when absent)."""
        for g in self.groups:
            g.ops.append("release")
            self._host.emit(Release(g.group, "start: nothing is ours until the peers agree"))

    def acquire(self, idx: int, reason: str, *, force: bool = False) -> bool:
        """The group should be ours: emit `Acquire` unless it is (or will be)
        held already; `force` emits it anyway (a re-announcement). True if emitted."""
        g = self.groups[idx]
        g.want = True
        if g.target and not force:
            return False
        g.ops.append("acquire")
        g.retry_at = None
        self._host.emit(Acquire(g.group, reason))
        return True

    def release(self, idx: int, reason: str) -> bool:
        """The group should not be ours: emit `Release` if it is (or will be)
        held. True if emitted."""
        g = self.groups[idx]
        g.want = False
        g.retry_at = None
        g.legacy_deadline = None
        if not g.target:
            return False
        g.ops.append("release")
        self._host.emit(Release(g.group, reason))
        return True

    def force_release(self, idx: int, reason: str) -> None:
        """Emit `Release` even though the group is not held (a failed acquisition
        may have left addresses behind)."""
        g = self.groups[idx]
        g.want = False
        g.ops.append("release")
        self._host.emit(Release(g.group, reason))

    def start_batch(
        self, groups: list[int], op: str | None, reason: str, on_done: Callable[[float], None] | None
    ) -> None:
        """Emit `op` (``"acquire"`` / ``"release"`` / None: just wait) for `groups`;
        call ``on_done(now)`` once none of them has an unconfirmed operation
        (never synchronously: as heartbeat's resource scripts, it completes later)."""
        for i in groups:
            if op == "acquire":
                self.acquire(i, reason)
            elif op == "release":
                self.release(i, reason)
        if on_done is None:
            return
        batch = _Batch({i for i in groups if self.groups[i].ops}, on_done)
        if batch.groups:
            self._batches.append(batch)
        else:
            self._host.defer(lambda: on_done(self._host.now))

    def drop_batches(self) -> None:
        """Forget every batch waiting for confirmations (their `on_done` never runs)."""
        self._batches.clear()

    def abandon(self) -> None:
        """Forget every unconfirmed operation and batch (the stop waited long enough)."""
        for g in self.groups:
            g.ops.clear()
        self._batches.clear()

    def confirm_acquired(self, group: ResourceGroup, ok: bool, now: float, *, retry: bool) -> None:
        """The driver carried out an `Acquire` of `group` at `now` (`ok` False: it
        failed; then, if `retry` and the group should be ours, it is retried
        after `ACQUIRE_RETRY` seconds). A group not configured is logged."""
        idx = self._index.get(group)
        if idx is None:
            self._host.log(logging.WARNING, f"acquired() for a group that is not configured: {group}")
            return
        g = self.groups[idx]
        if "acquire" in g.ops:
            if g.ops[0] != "acquire":
                self._host.log(logging.WARNING, f"acquisition of {g.describe()} confirmed out of order")
            g.ops.remove("acquire")
        else:
            self._host.log(logging.WARNING, f"unexpected acquisition confirmation for {g.describe()}")
        g.held = bool(ok)
        if ok:
            self._host.log(logging.INFO, f"acquired {g.describe()}")
        else:
            self._host.count("acquire_failures")
            self._host.log(logging.ERROR, f"acquisition of {g.describe()} failed")
            if g.want and retry:
                g.retry_at = now + ACQUIRE_RETRY
        self._op_finished(idx)

    def confirm_released(self, group: ResourceGroup) -> None:
        """The driver carried out a `Release` of `group`. A group not configured is logged."""
        idx = self._index.get(group)
        if idx is None:
            self._host.log(logging.WARNING, f"released() for a group that is not configured: {group}")
            return
        g = self.groups[idx]
        if "release" in g.ops:
            if g.ops[0] != "release":
                self._host.log(logging.WARNING, f"release of {g.describe()} confirmed out of order")
            g.ops.remove("release")
        else:
            self._host.log(logging.WARNING, f"unexpected release confirmation for {g.describe()}")
        g.held = False
        self._host.log(logging.INFO, f"released {g.describe()}")
        self._op_finished(idx)

    def _op_finished(self, idx: int) -> None:
        if self.groups[idx].ops:
            return
        done: list[_Batch] = []
        for batch in self._batches:
            batch.groups.discard(idx)
            if not batch.groups:
                done.append(batch)
        for batch in done:
            self._batches.remove(batch)
            self._host.defer(self._done_call(batch))
        self._host.defer(self._on_settled)

    def _done_call(self, batch: _Batch) -> Callable[[], None]:
        """``batch.on_done(now)``, as a call to defer (`now` read when it runs)."""
        return lambda: batch.on_done(self._host.now)
