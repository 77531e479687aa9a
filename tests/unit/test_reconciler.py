"""Reconciler logic against an in-memory kernel table (the real kernel is tested in tests/kernel)."""

import asyncio
import errno
import logging
import socket
from dataclasses import replace

import pytest

from director.ipvs import ApplyResult, IPVSError
from director.model import (
    Config,
    DestAttrs,
    DestKey,
    KernelDest,
    KernelService,
    RealServer,
    ServiceAttrs,
    ServiceKey,
    Settings,
    VirtualService,
)
from director.planner import PLAN_BUDGET, Op, record_op

WEB = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 80)
DNS = ServiceKey(socket.AF_INET, socket.IPPROTO_UDP, "10.0.0.100", 53)
RS1, RS2 = DestKey("10.0.0.11", 80), DestKey("10.0.0.12", 80)


class MemoryKernel:
    """Stands in for KernelIPVS: a dict table, with every command and dump counted."""

    def __init__(self):
        self.table = {}
        self.commands = []
        self.dumps = 0
        self.fail = {}  # (kind, dest) -> errno

    async def open(self):
        pass

    async def close(self):
        pass

    async def dump(self):
        self.dumps += 1
        return {k: replace(v, dests=dict(v.dests)) for k, v in self.table.items()}

    async def dump_dests(self, key):
        return dict(self.table[key].dests)

    async def apply_all(self, ops):
        result = ApplyResult([], [])
        for op in ops:
            code = self.fail.get((op.kind, op.dest))
            if code:
                result.failed.append((op, IPVSError(f"{op}: {errno.errorcode[code]}", op=op, code=code)))
                continue
            self.commands.append(op)
            record_op(self.table, op)
            result.done.append(op)
        return result


def config(real_servers, services_extra=(), drain_timeout=300.0):
    web = VirtualService(name="web", key=WEB, scheduler="rr", real_servers=tuple(real_servers))
    return Config(path="test.yaml", settings=Settings(drain_timeout=drain_timeout), services=(web, *services_extra))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(kernel, health, clock=None):
    from director.reconciler import Reconciler

    return Reconciler(kernel, lambda s, d: health.get((s, d), "unknown"), clock=clock or Clock())


async def test_first_pass_programs_healthy_servers():
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = make(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80, weight=2), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    assert kernel.table[WEB].dests == {RS1: KernelDest(DestAttrs(3, 2)), RS2: KernelDest(DestAttrs(3, 1))}
    assert kernel.table[WEB].attrs.scheduler == "rr"


async def test_health_transition_sends_one_command_and_no_dump():
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = make(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    before, dumps = len(kernel.commands), kernel.dumps
    health[(WEB, RS2)] = "down"
    r.on_health(WEB, RS2)
    await r.service_pass()
    assert kernel.commands[before:] == [Op("set_dest", WEB, dest=RS2, dest_attrs=DestAttrs(3, 0))]
    assert kernel.dumps == dumps


async def test_second_pass_on_programmed_kernel_changes_nothing():
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up"}
    cfg = config([RealServer("10.0.0.11", 80)])
    r = make(kernel, health)
    r.set_config(cfg)
    await r.full_pass()
    n = len(kernel.commands)
    # a new reconciler (a restarted daemon) with no health yet, then with results
    r2 = make(kernel, {})
    r2.set_config(cfg)
    await r2.full_pass()
    r3 = make(kernel, health)
    r3.set_config(cfg)
    await r3.full_pass()
    assert len(kernel.commands) == n


async def test_drift_is_repaired_on_the_next_full_pass():
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = make(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    dests = dict(kernel.table[WEB].dests)
    del dests[RS2]  # as `ipvsadm -d` would
    kernel.table[WEB] = KernelService(kernel.table[WEB].attrs, dests)
    await r.full_pass()
    assert RS2 in kernel.table[WEB].dests


async def test_removed_real_server_drains_until_no_active_connection():
    kernel = MemoryKernel()
    clock = Clock()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = make(kernel, health, clock)
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    kernel.table[WEB].dests[RS2] = KernelDest(DestAttrs(3, 1), active_conns=1)
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.full_pass()
    assert kernel.table[WEB].dests[RS2].attrs.weight == 0
    await r.drain_pass()
    assert RS2 in kernel.table[WEB].dests  # still one active connection
    kernel.table[WEB].dests[RS2] = KernelDest(DestAttrs(3, 0), active_conns=0)
    await r.drain_pass()
    assert RS2 not in kernel.table[WEB].dests
    assert r.draining() == {}


async def test_drain_timeout_deletes_a_busy_server():
    kernel = MemoryKernel()
    clock = Clock()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = make(kernel, health, clock)
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)], drain_timeout=30))
    await r.full_pass()
    kernel.table[WEB].dests[RS2] = KernelDest(DestAttrs(3, 1), active_conns=5)
    r.set_config(config([RealServer("10.0.0.11", 80)], drain_timeout=30))
    await r.full_pass()
    clock.now += 29
    await r.drain_pass()
    assert RS2 in kernel.table[WEB].dests
    clock.now += 2
    await r.drain_pass()
    assert RS2 not in kernel.table[WEB].dests


async def test_service_removed_from_configuration_is_deleted_but_others_untouched():
    kernel = MemoryKernel()
    other = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.9.9.9", 80)
    kernel.table[other] = KernelService(ServiceAttrs(), {})
    dns = VirtualService(name="dns", key=DNS, real_servers=())
    r = make(kernel, {})
    r.set_config(config([], services_extra=(dns,)))
    await r.full_pass()
    assert DNS in kernel.table
    r.set_config(config([]))
    await r.full_pass()
    assert DNS not in kernel.table and WEB in kernel.table and other in kernel.table


async def test_kernel_error_is_counted_and_retried_on_next_pass():
    kernel = MemoryKernel()
    kernel.fail[("add_dest", RS1)] = errno.EINVAL
    health = {(WEB, RS1): "up"}
    r = make(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.full_pass()
    assert r.errors == 1 and RS1 not in kernel.table[WEB].dests
    kernel.fail.clear()
    await r.full_pass()
    assert RS1 in kernel.table[WEB].dests


def reconciler_records(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == "directord.reconciler" and r.levelno == level]


async def test_a_refused_command_is_logged_once_until_its_error_changes_or_it_is_accepted(caplog):
    """A command the kernel refuses pass after pass (here: a scheduler whose module is missing)
    is one ERROR line, not one per pass; one more when the error changes; one INFO line when it is
    accepted. Each refusal is still an ``ipvs.failed`` event on the bus (the machine record), the
    repeats marked ``repeated`` and logged at DEBUG."""
    from director.events import EventBus, IPVSFailed, log_event
    from director.reconciler import Reconciler

    kernel = MemoryKernel()
    kernel.fail[("add_service", None)] = errno.ENOENT  # ip_vs_<scheduler> cannot be loaded
    bus = EventBus(log=log_event)
    failed = bus.subscribe(kinds=frozenset({IPVSFailed.kind}))
    r = Reconciler(kernel, lambda s, d: "up", clock=Clock(), on_event=bus.publish)
    r.set_config(config([]))
    with caplog.at_level(logging.DEBUG, logger="directord.reconciler"):
        for _ in range(5):
            await r.full_pass()
        assert r.errors == 5 and failed.pending() == 5
        assert [e.event.repeated for e in iter(failed.get_nowait, None)] == [False, True, True, True, True]
        (error,) = reconciler_records(caplog, logging.ERROR)
        assert "add_service (service web) failed: add_service" in error and "ENOENT" in error
        assert len([m for m in reconciler_records(caplog, logging.DEBUG) if "still failing" in m]) == 4
        kernel.fail[("add_service", None)] = errno.EINVAL  # another error: logged again
        for _ in range(3):
            await r.full_pass()
        assert (
            len(reconciler_records(caplog, logging.ERROR)) == 2
            and "EINVAL" in reconciler_records(caplog, logging.ERROR)[1]
        )
        kernel.fail.clear()
        for _ in range(3):
            await r.full_pass()
    assert WEB in kernel.table and r.errors == 8 and failed.pending() == 3
    accepted = [m for m in reconciler_records(caplog, logging.INFO) if "accepted (it was refused" in m]
    assert len(accepted) == 1 and "EINVAL" in accepted[0]
    assert len(reconciler_records(caplog, logging.ERROR)) == 2


async def test_a_refused_command_no_longer_planned_ends_its_condition(caplog):
    """Without an event sink (each event logged as it comes): a refused real server that a reload
    removes from the configuration is not sent any more, and that ends its condition, once; the
    next refusal of it is news again."""
    kernel = MemoryKernel()
    kernel.fail[("add_dest", RS2)] = errno.EINVAL
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = make(kernel, health)
    both = config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)])
    r.set_config(both)
    with caplog.at_level(logging.DEBUG, logger="directord.reconciler"):
        for _ in range(3):
            await r.full_pass()
        assert len(reconciler_records(caplog, logging.ERROR)) == 1
        r.set_config(config([RealServer("10.0.0.11", 80)]))
        for _ in range(3):
            await r.full_pass()
        ended = [m for m in reconciler_records(caplog, logging.INFO) if "no longer sent" in m]
        assert len(ended) == 1 and "add_dest" in ended[0] and "10.0.0.12" in ended[0] and "EINVAL" in ended[0]
        r.set_config(both)
        await r.full_pass()
    assert len(reconciler_records(caplog, logging.ERROR)) == 2


async def test_a_refused_command_in_a_health_pass_counts_as_the_same_condition(caplog):
    """Refused at one health transition's service pass, then again at each following one: one
    ERROR line; accepted at the next: one INFO line."""
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up"}
    r = make(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.full_pass()
    kernel.fail[("set_dest", RS1)] = errno.ENOMEM
    health[(WEB, RS1)] = "down"
    with caplog.at_level(logging.DEBUG, logger="directord.reconciler"):
        for _ in range(3):
            r.on_health(WEB, RS1)
            await r.service_pass()
        assert len(reconciler_records(caplog, logging.ERROR)) == 1 and r.errors == 3
        kernel.fail.clear()
        r.on_health(WEB, RS1)
        await r.service_pass()
    assert kernel.table[WEB].dests[RS1].attrs.weight == 0
    assert len([m for m in reconciler_records(caplog, logging.INFO) if "accepted (it was refused" in m]) == 1


async def loop_turns(work):
    """Await the coroutine ``work`` while a task counts its own turns on the event loop; return
    ``(work's result, turns taken while it ran)``: how often ``work`` let the loop run."""
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    try:
        result = await work
    finally:
        stop = True
        await task
    return result, ticks - before


async def test_a_full_pass_of_a_large_table_lets_the_loop_run_between_parts():
    # the heartbeat shares the director's loop: planning thousands of services must not hold it
    services = tuple(
        VirtualService(
            name=f"s{i}",
            key=ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 1000 + i),
            scheduler="rr",
            real_servers=(RealServer("10.0.0.11", 80),),
        )
        for i in range(5 * PLAN_BUDGET)
    )
    kernel = MemoryKernel()  # never suspends: every yield seen below is the reconciler's own
    r = make(kernel, {(svc.key, RS1): "up" for svc in services})
    r.set_config(Config(path="test.yaml", settings=Settings(), services=services))
    _, during = await loop_turns(r.full_pass())
    assert during >= 5  # at least once per PLAN_BUDGET real servers
    assert len(kernel.table) == 5 * PLAN_BUDGET and all(s.dests for s in kernel.table.values())


async def test_one_service_larger_than_the_budget_lets_the_loop_run_inside_it():
    """A single virtual service of 5 x `PLAN_BUDGET` real servers (one of 100,000 takes about a
    second to plan here): the full pass and a health transition's service pass both let the
    loop run several times inside that one service (the first version yielded between
    services only)."""
    servers = [RealServer(f"10.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 80) for i in range(5 * PLAN_BUDGET)]
    health = {(WEB, rs.key): "up" for rs in servers}
    kernel = MemoryKernel()  # never suspends: every yield seen below is the reconciler's own
    r = make(kernel, health)
    r.set_config(config(servers))
    _, during_full = await loop_turns(r.full_pass())
    assert len(kernel.table[WEB].dests) == len(servers)
    for rs in servers[::2]:
        health[(WEB, rs.key)] = "down"
    r.on_health(WEB, servers[0].key)
    ops, during_service = await loop_turns(r.service_pass())
    assert during_full >= 5, f"the loop ran {during_full} times during the full pass"
    assert during_service >= 5, f"the loop ran {during_service} times during the service pass"
    assert [op.kind for op in ops] == ["set_dest"] * len(servers[::2])
    assert sum(d.attrs.weight == 0 for d in kernel.table[WEB].dests.values()) == len(servers[::2])


async def test_first_pass_returns_after_the_first_full_pass_and_when_the_loop_dies():
    kernel = MemoryKernel()
    r = make(kernel, {(WEB, RS1): "up"})
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.start()
    try:
        await asyncio.wait_for(r.first_pass(), 5)
        assert kernel.dumps >= 1 and WEB in kernel.table
    finally:
        await r.stop()

    class BrokenKernel(MemoryKernel):
        async def dump(self):
            raise RuntimeError("a bug, not a kernel error")

    broken = make(BrokenKernel(), {})
    broken.set_config(config([RealServer("10.0.0.11", 80)]))
    await broken.start()
    await asyncio.wait_for(broken.first_pass(), 5)  # the loop died: no wait forever
    with pytest.raises(RuntimeError):
        await broken.stop()  # stop hands the loop's death on


# --- drift: changes made behind the reconciler's back ------------------------------------


def recording(kernel, health, clock=None):
    """A reconciler whose events are kept in ``r.events`` (in order)."""
    from director.reconciler import Reconciler

    events = []
    r = Reconciler(kernel, lambda s, d: health.get((s, d), "unknown"), clock=clock or Clock(), on_event=events.append)
    r.events = events
    return r


def drift_events(r):
    return [e for e in r.events if e.kind == "ipvs.drift"]


def tamper(kernel, key, dests=None, attrs=None):
    """Change the kernel's entry of ``key`` as ``ipvsadm`` would, without telling anyone."""
    old = kernel.table[key]
    kernel.table[key] = KernelService(attrs or old.attrs, dict(old.dests) if dests is None else dests)


async def test_requested_changes_are_not_counted_as_drift():
    """A reload (a real server added, one removed and drained, the scheduler changed), a health
    transition and the full pass that follows each: all requested, none a drift repair."""
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = recording(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.full_pass()
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    health[(WEB, RS1)] = "down"
    r.on_health(WEB, RS1)
    await r.service_pass()
    health[(WEB, RS2)] = "down"  # a transition not yet passed on: the full pass applies it
    r.on_health(WEB, RS2)
    await r.full_pass()
    cfg = config([RealServer("10.0.0.11", 80)])
    r.set_config(Config(cfg.path, settings=cfg.settings, services=(replace(cfg.services[0], scheduler="wlc"),)))
    await r.full_pass()
    await r.full_pass()
    kinds = [e.op for e in r.events if e.kind == "ipvs.applied"]
    assert kinds == ["add_service", "add_dest", "add_dest", "set_dest", "set_dest", "set_service"], kinds
    assert kernel.table[WEB].attrs.scheduler == "wlc" and r.draining() == {WEB: {RS2}}
    assert drift_events(r) == []


async def test_a_real_server_deleted_by_hand_is_put_back_and_counted_at_the_next_full_pass():
    from director.events import IPVSApplied, IPVSDriftRepaired

    kernel = MemoryKernel()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = recording(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    dests = dict(kernel.table[WEB].dests)
    del dests[RS2]  # ipvsadm -d -t 10.0.0.100:80 -r 10.0.0.12:80
    tamper(kernel, WEB, dests)
    r.events.clear()
    ops = await r.full_pass()
    assert ops == [Op("add_dest", WEB, dest=RS2, dest_attrs=DestAttrs(3, 1))] and RS2 in kernel.table[WEB].dests
    assert r.events == [
        IPVSApplied("add_dest", "web", str(WEB), real_server="10.0.0.12:80", weight=1, forwarding="3"),
        IPVSDriftRepaired("web", str(WEB), (("add_dest", 1),), ("add_dest 10.0.0.12:80",)),
    ]
    assert r.events[-1].level == logging.WARNING
    await r.full_pass()  # repaired: nothing more
    assert len(drift_events(r)) == 1


async def test_each_kind_of_drift_is_counted_by_its_operation():
    """A weight edited, a stranger real server added, the scheduler changed: set_dest, del_dest,
    set_service; then the whole service deleted (``ipvsadm -D``): add_service and its add_dests."""
    kernel = MemoryKernel()
    health = {(WEB, RS1): "up", (WEB, RS2): "up"}
    r = recording(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)]))
    await r.full_pass()
    stranger = DestKey("10.0.0.99", 80)
    dests = dict(kernel.table[WEB].dests)
    dests[RS1] = KernelDest(DestAttrs(3, 7))
    dests[stranger] = KernelDest(DestAttrs(3, 1))
    tamper(kernel, WEB, dests, attrs=replace(kernel.table[WEB].attrs, scheduler="sh"))
    await r.full_pass()
    (event,) = drift_events(r)
    assert event.counts == (("set_service", 1), ("set_dest", 1), ("del_dest", 1))
    assert set(event.operations) == {"set_service", "set_dest 10.0.0.11:80", "del_dest 10.0.0.99:80"}
    assert kernel.table[WEB].attrs.scheduler == "rr" and set(kernel.table[WEB].dests) == {RS1, RS2}
    del kernel.table[WEB]  # ipvsadm -D -t 10.0.0.100:80
    await r.full_pass()
    assert drift_events(r)[1].counts == (("add_service", 1), ("add_dest", 2))
    assert set(kernel.table[WEB].dests) == {RS1, RS2}


async def test_drift_is_one_event_per_service_and_pass_and_names_at_most_ten_operations():
    from director.events import DRIFT_OPERATIONS_SHOWN

    servers = [RealServer(f"10.0.1.{i}", 80) for i in range(1, 26)]
    kernel = MemoryKernel()
    dns = VirtualService(name="dns", key=DNS, real_servers=(RealServer("10.0.0.11", 53),))
    health = {(WEB, rs.key): "up" for rs in servers} | {(DNS, DestKey("10.0.0.11", 53)): "up"}
    r = recording(kernel, health)
    r.set_config(config(servers, services_extra=(dns,)))
    await r.full_pass()
    tamper(kernel, WEB, {})  # every real server of web deleted by hand
    tamper(kernel, DNS, {})
    await r.full_pass()
    web, dns_event = drift_events(r)
    assert (web.service, web.counts, dns_event.service, dns_event.counts) == (
        "web",
        (("add_dest", 25),),
        "dns",
        (("add_dest", 1),),
    )
    assert len(web.operations) == DRIFT_OPERATIONS_SHOWN == 10
    assert str(web).endswith("and 15 more") and "25 operations nobody asked for" in str(web)


async def test_nothing_is_counted_without_a_table_known_before_the_dump():
    """The first full pass (a daemon started on a table someone else programmed) and the first
    after the table could not be read apply the difference without counting it as drift; a
    repair the kernel refuses is not counted either."""
    kernel = MemoryKernel()
    kernel.table[WEB] = KernelService(ServiceAttrs("sh"), {RS2: KernelDest(DestAttrs(3, 9))})
    health = {(WEB, RS1): "up"}
    r = recording(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.full_pass()
    assert set(kernel.table[WEB].dests) == {RS1} and drift_events(r) == []

    class Unreadable(MemoryKernel):
        broken = False

        async def dump(self):
            if self.broken:
                raise IPVSError("ip_vs missing")
            return await super().dump()

    kernel = Unreadable()
    r = recording(kernel, health)
    r.set_config(config([RealServer("10.0.0.11", 80)]))
    await r.full_pass()
    kernel.broken = True
    await r.full_pass()
    del kernel.table[WEB]
    kernel.broken = False
    await r.full_pass()
    assert WEB in kernel.table and drift_events(r) == []
    kernel.fail[("add_dest", RS1)] = errno.ENOMEM
    tamper(kernel, WEB, {})
    await r.full_pass()
    assert RS1 not in kernel.table[WEB].dests and drift_events(r) == []


def test_is_drift_repair_compares_the_operation_with_the_table_known_before():
    from director.reconciler import is_drift_repair

    attrs = ServiceAttrs("rr")
    known = {WEB: KernelService(replace(attrs, flags=attrs.flags | 0x2), {RS1: KernelDest(DestAttrs(3, 1), 5, 2)})}
    # the table directord knew already held these: someone undid them
    assert is_drift_repair(Op("add_service", WEB, service_attrs=attrs), known)  # kernel's HASHED bit aside
    assert is_drift_repair(Op("set_dest", WEB, dest=RS1, dest_attrs=DestAttrs(3, 1)), known)  # counters aside
    assert is_drift_repair(Op("add_dest", WEB, dest=RS1, dest_attrs=DestAttrs(3, 1)), known)
    assert is_drift_repair(Op("del_dest", WEB, dest=RS2), known)
    assert is_drift_repair(Op("del_dest", DNS, dest=RS2), known)
    assert is_drift_repair(Op("del_service", DNS), known)
    # changes directord asks for, even where someone also changed the entry meanwhile
    assert not is_drift_repair(Op("set_service", WEB, service_attrs=ServiceAttrs("wlc")), known)
    assert not is_drift_repair(Op("add_service", DNS, service_attrs=attrs), known)
    assert not is_drift_repair(Op("set_dest", WEB, dest=RS1, dest_attrs=DestAttrs(3, 0)), known)
    assert not is_drift_repair(Op("add_dest", WEB, dest=RS2, dest_attrs=DestAttrs(3, 1)), known)
    assert not is_drift_repair(Op("add_dest", DNS, dest=RS2, dest_attrs=DestAttrs(3, 1)), known)
    assert not is_drift_repair(Op("del_dest", WEB, dest=RS1), known)
    assert not is_drift_repair(Op("del_service", WEB), known)
