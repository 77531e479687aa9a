"""Pure reconciliation planning: (desired state, kernel state) -> ordered IPVS operations.

Nothing here performs I/O.  Two steps:

1. `desired_service` turns one configured virtual service, the health of its
   real servers and the destinations being drained into the kernel entry it
   should have (`DesiredService`).
2. `plan_service` / `plan` compare desired entries with the kernel's
   (`KernelService`, as dumped by `director.ipvs`) and return the operations
   that close the gap, in an order the kernel accepts:

   * a service is added before its destinations;
   * an existing service whose attributes differ is edited with ``set`` and
     its complete attribute set (the kernel replaces every field on edit);
   * destinations are deleted, then edited (``set`` with the complete entry),
     then added;
   * a retired service (one directord managed and no longer configures) is
     deleted with one ``del_service``: the kernel deletes its destinations
     with it (``ip_vs_del_service`` -> ``__ip_vs_unlink_dest``), so no
     destination operation is needed.

Services that are in the kernel but neither desired nor retired are never
touched: directord shares the table with whatever else programs it.

Complexity is linear in the number of services and destinations involved;
planning one service costs only that service's destinations, which is what a
health transition needs.  For a caller on an event loop each step also comes
in parts of about `PLAN_BUDGET` destinations (`desired_service_steps`,
`plan_service_parts`, `plan_chunks`), so that a table of thousands of services,
or one service of tens of thousands of real servers, never holds the loop (and
the heartbeat on it) for long: 100,000 destinations take about a second here.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar, cast

from .model import (
    MANAGED_SERVICE_FLAGS,
    DesiredService,
    DesiredTable,
    DestAttrs,
    DestKey,
    KernelDest,
    KernelService,
    KernelTable,
    ServiceAttrs,
    ServiceKey,
    VirtualService,
)

#: Destinations (real servers) planned between two yields to the event loop: about 10 ms
#: of CPU here, 0.2 s in the emulated test VM.
PLAN_BUDGET = 1000

_T = TypeVar("_T")

OpKind = Literal["add_service", "set_service", "del_service", "add_dest", "set_dest", "del_dest"]

#: Health states as reported by the check engine.
HealthState = Literal["unknown", "up", "down"]
#: An operator's state for a real server (``directord rs enable|drain|disable``):
#: ``enabled`` follows its health; ``drain`` keeps it at weight 0 (no new connections, its
#: connections go on: HAProxy's ``drain``); ``disabled`` takes it out of the table
#: (HAProxy's ``maint``).
AdminState = Literal["enabled", "drain", "disabled"]
ADMIN_STATES: tuple[AdminState, ...] = ("enabled", "drain", "disabled")


@dataclass(frozen=True)
class Op:
    """One IPVS operation (one generic-netlink command).

    Attributes:
        kind: ``add_service`` (IPVS_CMD_NEW_SERVICE), ``set_service``
            (IPVS_CMD_SET_SERVICE), ``del_service`` (IPVS_CMD_DEL_SERVICE),
            ``add_dest`` (IPVS_CMD_NEW_DEST), ``set_dest`` (IPVS_CMD_SET_DEST),
            ``del_dest`` (IPVS_CMD_DEL_DEST).
        service: the virtual service concerned.
        service_attrs: complete service attributes for add/set_service, else None.
        dest: the destination for the ``*_dest`` kinds, else None.
        dest_attrs: complete destination attributes for add/set_dest, else None.
    """

    kind: OpKind
    service: ServiceKey
    service_attrs: ServiceAttrs | None = None
    dest: DestKey | None = None
    dest_attrs: DestAttrs | None = None

    def __str__(self) -> str:
        if self.dest is None:
            return f"{self.kind} {self.service}"
        return f"{self.kind} {self.service} -> {self.dest}"


def normalize_service_attrs(attrs: ServiceAttrs) -> ServiceAttrs:
    """Keep only the service flag bits directord manages (drops kernel-set HASHED)."""
    flags = attrs.flags & MANAGED_SERVICE_FLAGS
    return attrs if flags == attrs.flags else replace(attrs, flags=flags)


def desired_service(
    service: VirtualService,
    health: Mapping[DestKey, HealthState],
    observed: KernelService | None,
    draining: Iterable[DestKey] = (),
    admin: Mapping[DestKey, AdminState] | None = None,
    weights: Mapping[DestKey, int] | None = None,
) -> DesiredService:
    """The kernel entry one configured virtual service should have right now.

    Args:
        service: the configured virtual service.
        health: state of each configured real server (missing = ``unknown``).
        observed: the service as the kernel holds it, or None when absent.
        draining: destinations removed from the configuration that are still
            draining; they are kept at weight 0 with their kernel attributes.
        admin: the operator's state of real servers (missing = ``enabled``), which
            comes before their health: ``drain``: present at weight 0; ``disabled``:
            absent. Neither counts as up (for the fallback server).
        weights: the weight of an ``up`` real server when it is not its configured one (an
            agent's share, a slow start's step; missing = configured).  Weight 0 still counts
            as up for the fallback server (the real server asked for it: ``drain``).

    Rules, per enabled real server:

    * ``up``: present with its configured attributes (at ``weights[key]`` when given);
    * ``down``: present at weight 0 when ``on_failure`` is ``quiescent``,
      absent when it is ``remove``;
    * ``unknown`` (no check result yet, e.g. just after a start): left as the
      kernel has it (present with the kernel's attributes, or absent).  This is
      what makes a restart against a programmed kernel issue no change.  With the
      ``mh`` scheduler and ``quiescent``, an absent one is added at weight 0, so that
      all are added together, in the same order on every director (the order
      ``ip_vs_mh.c`` builds its table in).

    The fallback server is present while no real server is up and none is
    unknown; while some are unknown it is left as the kernel has it.  A
    fallback that is also a configured real server is handled as the real
    server alone.

    Returns:
        DesiredService with the service attributes and destination map.

    `desired_service_steps` computes the same in steps.
    """
    return run_steps(
        desired_service_steps(service, health, observed, draining, chunk=sys.maxsize, admin=admin, weights=weights)
    )


def run_steps(steps: Generator[None, None, _T]) -> _T:
    """Drive a computation in steps (`desired_service_steps`) to its end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value  # the generator's return value, of its declared type
            return result


def desired_service_steps(
    service: VirtualService,
    health: Mapping[DestKey, HealthState],
    observed: KernelService | None,
    draining: Iterable[DestKey] = (),
    chunk: int = PLAN_BUDGET,
    admin: Mapping[DestKey, AdminState] | None = None,
    weights: Mapping[DestKey, int] | None = None,
) -> Generator[None, None, DesiredService]:
    """`desired_service` in steps, for a caller on an event loop: a generator that yields
    (``None``) between two parts of ``chunk`` real servers and returns the `DesiredService` (the
    ``value`` of its StopIteration; `run_steps` drives it to the end).  ``health`` and
    ``draining`` are read as the steps go: the caller must not change them in between.

    Raises:
        ValueError: ``chunk`` < 1 (at the first step).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    kernel_dests = observed.dests if observed is not None else {}
    dests: dict[DestKey, DestAttrs] = {}
    any_up = False
    any_unknown = False
    servers = service.real_servers
    quiescent = service.on_failure == "quiescent"
    # mh builds its lookup table from the destinations in the kernel's list order
    # (ip_vs_mh.c): added all at once (sorted, by `plan_service`), at weight 0 until checked,
    # every director has the same order, whichever real server's check passes first
    keep_order = quiescent and service.scheduler == "mh"
    for start in range(0, len(servers), chunk):
        if start:
            yield
        for rs in servers[start : start + chunk]:
            key = rs.key
            operator = admin.get(key, "enabled") if admin else "enabled"
            if operator == "drain":
                dests[key] = rs.dest_attrs(weight=0)
                continue
            if operator == "disabled":
                continue
            state = health.get(key, "unknown")
            if state == "up":
                any_up = True
                dests[key] = rs.dest_attrs(weights.get(key) if weights else None)
            elif state == "down":
                if quiescent:
                    dests[key] = rs.dest_attrs(weight=0)
            else:
                any_unknown = True
                current = kernel_dests.get(key)
                if current is not None:
                    dests[key] = current.attrs
                elif keep_order:
                    dests[key] = rs.dest_attrs(weight=0)
    for key in draining:
        if key in dests:
            continue
        current = kernel_dests.get(key)
        if current is not None:
            dests[key] = replace(current.attrs, weight=0)
    fb = service.fallback
    if fb is not None and fb.key not in dests:
        if not any_up and not any_unknown:
            dests[fb.key] = fb.dest_attrs()
        elif not any_up and fb.key in kernel_dests:
            dests[fb.key] = kernel_dests[fb.key].attrs
    return DesiredService(attrs=service.service_attrs(), dests=dests)


def plan_service(key: ServiceKey, desired: DesiredService, observed: KernelService | None) -> list[Op]:
    """Operations that make one kernel service equal to ``desired``.

    Destinations present in the kernel but not in ``desired`` are deleted.
    Returns an empty list when nothing differs.  `plan_service_parts` gives the
    same list in parts.
    """
    return [op for part in plan_service_parts(key, desired, observed, chunk=sys.maxsize) for op in part]


def plan_service_parts(
    key: ServiceKey, desired: DesiredService, observed: KernelService | None, chunk: int = PLAN_BUDGET
) -> Iterator[list[Op]]:
    """`plan_service` in parts, for a caller on an event loop: parts of at most ``chunk``
    destinations compared (the kernel's to delete, then the desired ones; the additions all
    come in the last part, after the edits; some parts may be empty); joined, the parts are
    exactly `plan_service`'s list.

    Raises:
        ValueError: ``chunk`` < 1 (at the first part).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    wanted = desired.dests
    ops: list[Op] = []
    if observed is None:
        ops.append(Op("add_service", key, service_attrs=desired.attrs))
        keys = sorted(wanted)
        for start in range(0, len(keys), chunk):
            if start:
                yield ops
                ops = []
            ops.extend(Op("add_dest", key, dest=dkey, dest_attrs=wanted[dkey]) for dkey in keys[start : start + chunk])
        yield ops
        return
    if normalize_service_attrs(observed.attrs) != desired.attrs:
        ops.append(Op("set_service", key, service_attrs=desired.attrs))
    kernel = observed.dests
    gone = sorted(kernel.keys() - wanted.keys())
    for start in range(0, len(gone), chunk):
        ops.extend(Op("del_dest", key, dest=dkey) for dkey in gone[start : start + chunk])
        yield ops
        ops = []
    adds: list[Op] = []  # after the edits
    keys = sorted(wanted)
    for start in range(0, len(keys), chunk):
        if start:
            yield ops
            ops = []
        for dkey in keys[start : start + chunk]:
            want = wanted[dkey]
            have = kernel.get(dkey)
            if have is None:
                adds.append(Op("add_dest", key, dest=dkey, dest_attrs=want))
            elif have.attrs != want:
                ops.append(Op("set_dest", key, dest=dkey, dest_attrs=want))
    ops.extend(adds)
    yield ops


def plan(
    desired: DesiredTable,
    observed: KernelTable,
    retired: Iterable[ServiceKey] = (),
) -> list[Op]:
    """Operations that bring the kernel table to the desired state.

    Args:
        desired: every service directord manages, as it should be.
        observed: the whole kernel table (other services are ignored).
        retired: services directord managed earlier and no longer configures;
            deleted when present in the kernel and not desired.

    Returns:
        Ordered operations (services in sorted key order, then deletions of
        retired services); empty when the kernel already matches.
    """
    return [op for part in plan_chunks(desired, observed, retired) for op in part]


def plan_chunks(
    desired: DesiredTable,
    observed: KernelTable,
    retired: Iterable[ServiceKey] = (),
    chunk: int = PLAN_BUDGET,
) -> Iterator[list[Op]]:
    """`plan` in parts of about ``chunk`` destinations compared each (services in sorted key
    order; a service that alone has more is cut into `plan_service_parts`), then the
    deletions of retired services; joined, the parts are exactly `plan`'s list.  A caller on
    an event loop yields between parts, so planning a large table never holds the loop (and
    the heartbeat on it) for the whole table.

    ``retired`` is read once, before the first part.

    Raises:
        ValueError: ``chunk`` < 1.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    deletions = [Op("del_service", key) for key in sorted(set(retired)) if key in observed and key not in desired]
    ops: list[Op] = []
    work = 0
    for key in sorted(desired):
        want, have = desired[key], observed.get(key)
        cost = 1 + len(want.dests) + (len(have.dests) if have is not None else 0)
        if cost <= chunk:
            ops.extend(plan_service(key, want, have))
            work += cost
            if work >= chunk:
                yield ops
                ops, work = [], 0
            continue
        for part in plan_service_parts(key, want, have, chunk):
            ops.extend(part)
            yield ops
            ops = []
        work = 0
    if ops:
        yield ops
    if deletions:
        yield deletions


def record_op(table: dict[ServiceKey, KernelService], op: Op) -> None:
    """Update a cached kernel table in place as if ``op`` had succeeded.

    Lets the reconciler keep an accurate picture of the kernel between dumps
    without reading it back after each command.  Connection counters of an
    edited destination are kept; a new destination starts at zero.
    """
    current = table.get(op.service)
    # add/set operations carry complete attributes (`Op`); the casts state that, they check nothing
    if op.kind == "add_service":
        table[op.service] = KernelService(attrs=cast(ServiceAttrs, op.service_attrs), dests={})
    elif op.kind == "set_service" and current is not None:
        table[op.service] = KernelService(attrs=cast(ServiceAttrs, op.service_attrs), dests=current.dests)
    elif op.kind == "del_service":
        table.pop(op.service, None)
    elif current is not None and op.dest is not None:
        dests = dict(current.dests)
        if op.kind == "del_dest":
            dests.pop(op.dest, None)
        else:
            old = dests.get(op.dest)
            attrs = cast(DestAttrs, op.dest_attrs)
            dests[op.dest] = replace(old, attrs=attrs) if old is not None else KernelDest(attrs)
        table[op.service] = KernelService(attrs=current.attrs, dests=dests)
