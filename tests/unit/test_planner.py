"""The planner: exact operation lists for given desired and kernel states."""

import socket
from collections.abc import Mapping

import pytest

from director.model import (
    IP_VS_SVC_F_HASHED,
    IP_VS_SVC_F_PERSISTENT,
    DesiredService,
    DestAttrs,
    DestKey,
    FallbackServer,
    KernelDest,
    KernelService,
    Persistence,
    RealServer,
    ServiceAttrs,
    ServiceKey,
    VirtualService,
)
from director.planner import (
    Op,
    desired_service,
    desired_service_steps,
    plan,
    plan_chunks,
    plan_service,
    plan_service_parts,
    run_steps,
)

WEB = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 80)
DNS = ServiceKey(socket.AF_INET, socket.IPPROTO_UDP, "10.0.0.100", 53)
OTHER = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.200", 80)
RS1, RS2, RS3 = DestKey("10.0.0.11", 80), DestKey("10.0.0.12", 80), DestKey("10.0.0.13", 80)
FB = DestKey("127.0.0.1", 80)
WRR = ServiceAttrs(scheduler="wrr")
DR1 = DestAttrs(fwd_method=3, weight=1)
DR3 = DestAttrs(fwd_method=3, weight=3)


def kservice(attrs, dests):
    return KernelService(attrs=attrs, dests={k: KernelDest(a) for k, a in dests.items()})


def vservice(**kw):
    base = dict(
        name="web",
        key=WEB,
        scheduler="wrr",
        real_servers=(
            RealServer("10.0.0.11", 80, weight=3),
            RealServer("10.0.0.12", 80, weight=1),
        ),
    )
    base.update(kw)
    return VirtualService(**base)


def test_empty_kernel_adds_service_before_its_destinations():
    desired = {WEB: DesiredService(WRR, {RS2: DR1, RS1: DR3})}
    assert plan(desired, {}) == [
        Op("add_service", WEB, service_attrs=WRR),
        Op("add_dest", WEB, dest=RS1, dest_attrs=DR3),
        Op("add_dest", WEB, dest=RS2, dest_attrs=DR1),
    ]


def test_matching_kernel_gives_no_operation():
    desired = {WEB: DesiredService(WRR, {RS1: DR3, RS2: DR1})}
    observed = {WEB: kservice(WRR, {RS1: DR3, RS2: DR1})}
    assert plan(desired, observed) == []


def test_kernel_set_hashed_flag_is_not_a_difference():
    desired = {WEB: DesiredService(WRR, {})}
    observed = {WEB: kservice(ServiceAttrs(scheduler="wrr", flags=IP_VS_SVC_F_HASHED), {})}
    assert plan(desired, observed) == []


def test_weight_change_is_one_set_with_the_complete_entry():
    thresholds = DestAttrs(fwd_method=0, weight=5, u_thresh=100, l_thresh=50)
    desired = {WEB: DesiredService(WRR, {RS1: thresholds})}
    observed = {WEB: kservice(WRR, {RS1: DestAttrs(fwd_method=0, weight=1, u_thresh=100, l_thresh=50)})}
    assert plan(desired, observed) == [Op("set_dest", WEB, dest=RS1, dest_attrs=thresholds)]


def test_scheduler_change_is_a_service_set():
    lc = ServiceAttrs(scheduler="lc")
    desired = {WEB: DesiredService(lc, {})}
    observed = {WEB: kservice(WRR, {})}
    assert plan(desired, observed) == [Op("set_service", WEB, service_attrs=lc)]


def test_deletes_then_sets_then_adds_destinations():
    desired = {WEB: DesiredService(WRR, {RS1: DR1, RS3: DR1})}
    observed = {WEB: kservice(WRR, {RS1: DR3, RS2: DR1})}
    assert plan(desired, observed) == [
        Op("del_dest", WEB, dest=RS2),
        Op("set_dest", WEB, dest=RS1, dest_attrs=DR1),
        Op("add_dest", WEB, dest=RS3, dest_attrs=DR1),
    ]


def test_unmanaged_services_are_never_touched():
    desired = {WEB: DesiredService(WRR, {})}
    observed = {WEB: kservice(WRR, {}), OTHER: kservice(WRR, {RS1: DR1})}
    assert plan(desired, observed) == []


def test_retired_service_is_deleted_with_one_operation():
    observed = {DNS: kservice(WRR, {RS1: DR1, RS2: DR1}), OTHER: kservice(WRR, {})}
    assert plan({}, observed, retired=[DNS]) == [Op("del_service", DNS)]


def test_retired_service_absent_from_kernel_gives_nothing():
    assert plan({}, {}, retired=[DNS]) == []


def test_services_are_planned_in_sorted_order():
    desired = {WEB: DesiredService(WRR, {}), DNS: DesiredService(WRR, {})}
    assert [op.service for op in plan(desired, {})] == sorted([WEB, DNS])


def test_plan_service_alone_matches_plan():
    desired = DesiredService(WRR, {RS1: DR1})
    observed = kservice(WRR, {RS1: DR3})
    assert plan_service(WEB, desired, observed) == [Op("set_dest", WEB, dest=RS1, dest_attrs=DR1)]


def test_plan_chunks_joined_are_the_plan():
    desired, observed = {}, {}
    for i in range(10):
        key = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 1000 + i)
        desired[key] = DesiredService(WRR, {RS1: DR1, RS2: DR3})
        if i % 3:
            observed[key] = kservice(WRR, {RS1: DR3})
    observed[DNS] = kservice(WRR, {})
    retired = [DNS, OTHER]
    for chunk in (1, 2, 3, 4, 7, 100):
        parts = list(plan_chunks(desired, observed, retired, chunk=chunk))
        assert [op for part in parts for op in part] == plan(desired, observed, retired), chunk
    with pytest.raises(ValueError, match="chunk"):
        next(plan_chunks(desired, observed, chunk=0))


def test_plan_chunks_cut_after_a_budget_of_destinations():
    # each service costs 1 + its 2 desired destinations (none in the kernel): a part ends when
    # the work reaches the chunk, so with chunk 4 every part holds two services
    desired = {
        ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 1000 + i): DesiredService(
            WRR, {RS1: DR1, RS2: DR3}
        )
        for i in range(10)
    }
    parts = list(plan_chunks(desired, {DNS: kservice(WRR, {})}, [DNS], chunk=4))
    assert len(parts) == 6  # 5 x 2 services, then the deletion
    assert [{op.service for op in part} for part in parts[:5]] == [
        set(sorted(desired)[i : i + 2]) for i in range(0, 10, 2)
    ]
    assert parts[-1] == [Op("del_service", DNS)]


def big_service_states():
    """A service of 10 desired destinations against a kernel entry holding 5 of them (3 with
    other attributes) and 3 others: 3 deletions, 3 edits, 5 additions, a service edit."""
    dests = [DestKey(f"10.0.1.{i}", 80) for i in range(1, 14)]
    desired = DesiredService(WRR, {d: DR1 for d in dests[:10]})
    kernel = {d: (DR3 if i < 3 else DR1) for i, d in enumerate(dests[:5])} | {d: DR1 for d in dests[10:]}
    return desired, kservice(ServiceAttrs(scheduler="rr"), kernel)


def test_plan_service_parts_joined_are_plan_service():
    desired, observed = big_service_states()
    whole = plan_service(WEB, desired, observed)
    assert [op.kind for op in whole] == ["set_service"] + ["del_dest"] * 3 + ["set_dest"] * 3 + ["add_dest"] * 5
    for chunk in range(1, 16):
        for have in (observed, None):
            parts = list(plan_service_parts(WEB, desired, have, chunk))
            assert [op for part in parts for op in part] == plan_service(WEB, desired, have), (chunk, have)
    # a part after every 3 destinations compared (3 deleted, then 10 desired), then the rest
    assert len(list(plan_service_parts(WEB, desired, observed, 3))) == 13 // 3 + 1
    assert len(list(plan_service_parts(WEB, desired, None, 3))) == 10 // 3 + 1
    with pytest.raises(ValueError, match="chunk"):
        next(plan_service_parts(WEB, desired, observed, 0))


def test_plan_chunks_cut_a_service_larger_than_the_budget():
    desired, observed = big_service_states()
    small = DesiredService(WRR, {RS1: DR1})
    table = {WEB: desired, OTHER: small}
    parts = list(plan_chunks(table, {WEB: observed}, chunk=4))
    assert [op for part in parts for op in part] == plan(table, {WEB: observed})
    # WEB (first in key order) compares 13 destinations: a part after every 4 and one for the
    # rest (the additions all come in its last); then one part for OTHER
    assert len(parts) == (13 // 4 + 1) + 1
    assert [op.service for op in parts[-1]] == [OTHER, OTHER]


def test_desired_service_steps_end_in_desired_service():
    servers = tuple(RealServer(f"10.0.1.{i}", 80, weight=i) for i in range(1, 6))
    svc = vservice(real_servers=servers)
    health = {rs.key: ("up" if i % 2 else "down") for i, rs in enumerate(servers)}
    observed = kservice(WRR, {servers[0].key: DR3})
    steps = desired_service_steps(svc, health, observed, (), chunk=2)
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result = done.value
            break
        pauses += 1
    assert pauses == 2  # after the 2nd and the 4th real server
    assert (
        result
        == desired_service(svc, health, observed)
        == run_steps(desired_service_steps(svc, health, observed, (), chunk=1))
    )
    with pytest.raises(ValueError, match="chunk"):
        next(desired_service_steps(svc, health, observed, (), chunk=0))


# --- desired_service -----------------------------------------------------------


def test_up_servers_get_configured_weights():
    d = desired_service(vservice(), {RS1: "up", RS2: "up"}, None)
    assert d.dests == {RS1: DR3, RS2: DR1}
    assert d.attrs == ServiceAttrs(scheduler="wrr", netmask="255.255.255.255")


def test_down_server_is_quiescent_by_default():
    d = desired_service(vservice(), {RS1: "up", RS2: "down"}, None)
    assert d.dests == {RS1: DR3, RS2: DestAttrs(fwd_method=3, weight=0)}


def test_down_server_is_removed_with_on_failure_remove():
    d = desired_service(vservice(on_failure="remove"), {RS1: "up", RS2: "down"}, None)
    assert d.dests == {RS1: DR3}


def test_unknown_server_keeps_kernel_entry_and_is_not_added():
    observed = kservice(WRR, {RS1: DestAttrs(fwd_method=3, weight=7)})
    d = desired_service(vservice(), {}, observed)
    assert d.dests == {RS1: DestAttrs(fwd_method=3, weight=7)}
    assert plan_service(WEB, d, observed) == []


def test_restart_against_programmed_kernel_then_first_results_change_nothing():
    observed = kservice(ServiceAttrs(scheduler="wrr", flags=IP_VS_SVC_F_HASHED), {RS1: DR3, RS2: DR1})
    svc = vservice()
    assert plan_service(WEB, desired_service(svc, {}, observed), observed) == []
    assert plan_service(WEB, desired_service(svc, {RS1: "up", RS2: "up"}, observed), observed) == []


def test_fallback_added_only_when_every_server_is_down():
    svc = vservice(fallback=FallbackServer("127.0.0.1", 80))
    assert FB not in desired_service(svc, {RS1: "up", RS2: "down"}, None).dests
    all_down = desired_service(svc, {RS1: "down", RS2: "down"}, None)
    assert all_down.dests[FB] == DR1
    assert all_down.dests[RS1].weight == 0


def test_fallback_removed_when_a_server_comes_back():
    svc = vservice(fallback=FallbackServer("127.0.0.1", 80))
    observed = kservice(WRR, {RS1: DestAttrs(weight=0), RS2: DestAttrs(weight=0), FB: DR1})
    ops = plan_service(WEB, desired_service(svc, {RS1: "up", RS2: "down"}, observed), observed)
    assert ops == [Op("del_dest", WEB, dest=FB), Op("set_dest", WEB, dest=RS1, dest_attrs=DR3)]


def test_fallback_kept_while_states_are_unknown():
    svc = vservice(fallback=FallbackServer("127.0.0.1", 80))
    observed = kservice(WRR, {FB: DR1})
    assert desired_service(svc, {RS1: "down"}, observed).dests == {RS1: DestAttrs(weight=0), FB: DR1}
    assert desired_service(svc, {RS1: "down"}, None).dests == {RS1: DestAttrs(weight=0)}


def test_draining_destination_is_held_at_weight_zero():
    observed = kservice(WRR, {RS1: DR3, RS3: DestAttrs(fwd_method=0, weight=4)})
    svc = vservice(real_servers=(RealServer("10.0.0.11", 80, weight=3),))
    d = desired_service(svc, {RS1: "up"}, observed, draining=[RS3])
    assert d.dests == {RS1: DR3, RS3: DestAttrs(fwd_method=0, weight=0)}
    assert plan_service(WEB, d, observed) == [
        Op("set_dest", WEB, dest=RS3, dest_attrs=DestAttrs(fwd_method=0, weight=0))
    ]
    # once the reconciler stops draining it, the destination is deleted
    assert plan_service(WEB, desired_service(svc, {RS1: "up"}, observed), observed) == [Op("del_dest", WEB, dest=RS3)]


def test_persistence_and_ipv6_attributes():
    v6 = ServiceKey(socket.AF_INET6, socket.IPPROTO_TCP, "2001:db8::100", 443)
    svc = VirtualService(name="v6", key=v6, scheduler="sh", scheduler_flags=frozenset({"sh-port"}))
    assert svc.service_attrs() == ServiceAttrs(scheduler="sh", flags=0x10, timeout=0, netmask=128)
    persistent = VirtualService(name="p", key=WEB, persistence=Persistence(300, "255.255.255.0"))
    assert persistent.service_attrs() == ServiceAttrs(
        scheduler="wlc", flags=IP_VS_SVC_F_PERSISTENT, timeout=300, netmask="255.255.255.0"
    )


class CountingMapping(Mapping):
    """A read-only mapping that counts every access (lookup, membership test, iteration step)
    into a shared tally: the planner's work on a table, measured without a clock."""

    def __init__(self, data: dict, tally: list[int]) -> None:
        self._data = data
        self._tally = tally

    def __getitem__(self, key):
        self._tally[0] += 1
        return self._data[key]

    def __contains__(self, key) -> bool:
        self._tally[0] += 1
        return key in self._data

    def __iter__(self):
        for key in self._data:
            self._tally[0] += 1
            yield key

    def __len__(self) -> int:
        return len(self._data)


def large_tables(n: int, tally: list[int]) -> tuple[CountingMapping, CountingMapping]:
    """``n`` services of 20 real servers each, desired == observed, every mapping counted."""
    desired, observed = {}, {}
    for i in range(n):
        key = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, f"10.1.{i // 256}.{i % 256}", 80)
        dests = {DestKey(f"10.2.0.{j}", 80): DR1 for j in range(20)}
        desired[key] = DesiredService(WRR, CountingMapping(dests, tally))
        observed[key] = KernelService(
            attrs=WRR, dests=CountingMapping({k: KernelDest(a) for k, a in dests.items()}, tally)
        )
    return CountingMapping(desired, tally), CountingMapping(observed, tally)


def large_service(d: int, tally: list[int]) -> tuple[CountingMapping, CountingMapping]:
    """One service of ``d`` real servers, desired == observed, every mapping counted."""
    dests = {DestKey(f"10.3.{j // 256}.{j % 256}", 80): DR1 for j in range(d)}
    desired = {WEB: DesiredService(WRR, CountingMapping(dests, tally))}
    observed = {
        WEB: KernelService(attrs=WRR, dests=CountingMapping({k: KernelDest(a) for k, a in dests.items()}, tally))
    }
    return CountingMapping(desired, tally), CountingMapping(observed, tally)


def test_large_table_plans_linearly_and_correctly():
    """Planning work grows linearly with the table, in services and in real servers of
    one service: the planner's table and real-server accesses for 4N services (or one
    service of 4D real servers) are about 4 times those for N (D); a lookup by scanning
    gives 16."""
    for tables, sizes, per_item in ((large_tables, (250, 1000), 20), (large_service, (500, 2000), 2)):
        work = {}
        for n in sizes:
            tally = [0]
            desired, observed = tables(n, tally)
            assert plan(desired, observed) == []
            work[n] = tally[0]
        small, big = sizes
        assert work[small] >= small * per_item, work  # every real server was looked at
        assert work[big] <= 4.5 * work[small], (tables.__name__, work)  # linear: 4 times, with room for a constant
    tally = [0]
    desired, observed = large_tables(1000, tally)
    first = min(desired)
    changed = dict(desired)
    changed[first] = DesiredService(WRR, {**desired[first].dests, DestKey("10.2.0.0", 80): DR3})
    assert plan(changed, observed) == [Op("set_dest", first, dest=DestKey("10.2.0.0", 80), dest_attrs=DR3)]


def test_record_op_keeps_cache_equal_to_what_a_dump_would_show():
    from director.planner import record_op

    desired = {WEB: DesiredService(WRR, {RS1: DR3, RS2: DR1})}
    table = {OTHER: kservice(WRR, {RS1: DR1})}
    for op in plan(desired, table):
        record_op(table, op)
    assert plan(desired, table) == []
    assert table[OTHER] == kservice(WRR, {RS1: DR1})
    for op in plan({}, table, retired=[WEB]):
        record_op(table, op)
    assert set(table) == {OTHER}


# --- the operator's state (directord rs drain|disable|enable) ------------------------------


@pytest.mark.parametrize("on_failure", ["quiescent", "remove"])
@pytest.mark.parametrize("health", ["up", "down", "unknown"])
def test_drain_is_weight_0_and_disabled_is_absent_whatever_the_health(on_failure, health):
    observed = kservice(WRR, {RS1: DR3, RS2: DR1})
    svc = vservice(on_failure=on_failure)
    d = desired_service(svc, {RS1: health, RS2: "up"}, observed, admin={RS1: "drain"})
    assert d.dests[RS1] == DestAttrs(fwd_method=3, weight=0) and d.dests[RS2] == DR1
    d = desired_service(svc, {RS1: health, RS2: "up"}, observed, admin={RS1: "disabled"})
    assert RS1 not in d.dests and d.dests[RS2] == DR1
    ops = plan_service(WEB, d, observed)
    assert [(op.kind, op.dest) for op in ops] == [("del_dest", RS1)]


def test_enabled_follows_health_and_neither_drained_nor_disabled_counts_as_up():
    svc = vservice(fallback=FallbackServer("127.0.0.1", 80))
    d = desired_service(svc, {RS1: "up", RS2: "down"}, None, admin={RS1: "enabled"})
    assert d.dests == {RS1: DR3, RS2: DestAttrs(fwd_method=3, weight=0)}
    d = desired_service(svc, {RS1: "up", RS2: "down"}, None, admin={RS1: "drain"})
    assert FB in d.dests  # no real server up: the fallback serves new connections
    d = desired_service(svc, {RS1: "up", RS2: "up"}, None, admin={RS1: "disabled", RS2: "drain"})
    assert set(d.dests) == {RS2, FB}


def test_admin_in_steps_equals_at_once():
    svc = vservice(real_servers=tuple(RealServer(f"10.0.1.{i}", 80) for i in range(1, 40)))
    admin = {DestKey(f"10.0.1.{i}", 80): ("drain" if i % 3 else "disabled") for i in range(1, 40, 2)}
    health = {rs.key: "up" for rs in svc.real_servers}
    at_once = desired_service(svc, health, None, admin=admin)
    stepped = run_steps(desired_service_steps(svc, health, None, chunk=7, admin=admin))
    assert stepped == at_once and len(at_once.dests) == 39 - sum(1 for s in admin.values() if s == "disabled")


def test_mh_adds_every_real_server_together_in_one_order_whichever_check_passes_first():
    """mh (quiescent): real servers not checked yet are added at weight 0, so the first pass
    adds all of them, in the sorted order `plan_service` uses, whichever is up first (the
    table ``ip_vs_mh.c`` builds depends on the kernel's list order); another scheduler
    leaves them out until checked."""
    servers = tuple(RealServer(k.address, 80) for k in (RS3, RS1, RS2))
    mh = VirtualService("web", WEB, scheduler="mh", real_servers=servers)
    for first_up in (RS1, RS3):
        desired = desired_service(mh, {first_up: "up"}, None)
        ops = plan_service(WEB, desired, None)
        assert [(op.kind, op.dest, op.dest_attrs.weight if op.dest_attrs else None) for op in ops[1:]] == [
            ("add_dest", k, 1 if k == first_up else 0) for k in (RS1, RS2, RS3)
        ]
    # what the kernel has is kept (a restart changes nothing)
    kernel = KernelService(ServiceAttrs("mh"), {RS1: KernelDest(DestAttrs(3, 1))})
    assert desired_service(mh, {}, kernel).dests[RS1] == DestAttrs(3, 1)
    wlc = VirtualService("web", WEB, scheduler="wlc", real_servers=servers)
    assert set(desired_service(wlc, {RS1: "up"}, None).dests) == {RS1}
    removing = VirtualService("web", WEB, scheduler="mh", real_servers=servers, on_failure="remove")
    assert set(desired_service(removing, {RS1: "up"}, None).dests) == {RS1}
