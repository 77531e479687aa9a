"""IPVS sync daemons: the netlink codec byte for byte, the planner, the reconciler's pass and
the configuration (the kernel side is tests/kernel/test_drill.py::test_sync_daemon...)."""

import errno
import logging
import struct

import pytest

from director.config import ConfigError, format_issues, parse_config
from director.ipvs import IPVSError
from director.ipvs.sync import (
    SyncDaemon,
    SyncOp,
    daemon_dump_request,
    encode_sync_op,
    parse_daemon_body,
    plan_sync,
    sync_daemons_for,
)
from director.model import Config, Settings, SyncSettings

FAMILY = 0x1E
MASTER, BACKUP = SyncDaemon("master", "eth1", 7), SyncDaemon("backup", "eth1", 7)


def nla(kind: int, payload: bytes) -> bytes:
    """struct nlattr: u16 length (header included), u16 type, payload padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


# --- codec ------------------------------------------------------------------------------------


def test_start_is_new_daemon_with_state_interface_and_syncid():
    got = encode_sync_op(FAMILY, 9, SyncOp("start", MASTER))
    inner = (
        struct.pack("=HHI", 8, 1, 1)  # IPVS_DAEMON_ATTR_STATE = IP_VS_STATE_MASTER
        + struct.pack("=HH", 9, 2)
        + b"eth1\0"
        + b"\0\0\0"  # IPVS_DAEMON_ATTR_MCAST_IFN, NUL-terminated
        + struct.pack("=HHI", 8, 3, 7)  # IPVS_DAEMON_ATTR_SYNC_ID
    )
    attrs = struct.pack("=HH", 4 + len(inner), 3) + inner  # IPVS_CMD_ATTR_DAEMON
    header = struct.pack("=IHHII", 20 + len(attrs), FAMILY, 0x1 | 0x4, 9, 0)  # NLM_F_REQUEST | NLM_F_ACK
    assert got == header + struct.pack("=BBH", 9, 1, 0) + attrs  # IPVS_CMD_NEW_DAEMON, version 1
    assert len(got) == 52


def test_stop_is_del_daemon_naming_the_state_only():
    got = encode_sync_op(FAMILY, 3, SyncOp("stop", BACKUP))
    attrs = struct.pack("=HH", 12, 3) + struct.pack("=HHI", 8, 1, 2)  # state IP_VS_STATE_BACKUP
    assert got == struct.pack("=IHHII", 32, FAMILY, 0x5, 3, 0) + struct.pack("=BBH", 10, 1, 0) + attrs


def test_dump_request_is_get_daemon_with_nlm_f_dump():
    assert daemon_dump_request(FAMILY, 5) == struct.pack("=IHHII", 20, FAMILY, 0x1 | 0x300, 5, 0) + bytes([11, 1, 0, 0])


@pytest.mark.parametrize(
    "daemon",
    [
        SyncDaemon("master", "", 0),
        SyncDaemon("master", "a-very-long-name0", 0),  # 17 bytes: the kernel takes 15
        SyncDaemon("master", "eth\0", 0),
        SyncDaemon("master", "eth1", 256),
        SyncDaemon("both", "eth1", 0),  # type: ignore[arg-type]
    ],
)
def test_start_refuses_what_the_kernel_would(daemon):
    with pytest.raises(ValueError):
        encode_sync_op(FAMILY, 1, SyncOp("start", daemon))


def test_dumped_daemon_is_decoded_with_the_attributes_the_kernel_adds():
    # ip_vs_genl_fill_daemon also sends SYNC_MAXLEN (u16), MCAST_PORT (u16), MCAST_TTL (u8)
    # and MCAST_GROUP (be32): they are skipped
    inner = (
        nla(1, struct.pack("=I", 2))
        + nla(2, b"hb0\0")
        + nla(3, struct.pack("=I", 200))
        + nla(4, struct.pack("=H", 1472))
        + nla(5, bytes([224, 0, 0, 81]))
        + nla(7, struct.pack("=H", 8848))
        + nla(8, b"\x01")
    )
    assert parse_daemon_body(nla(3 | 0x8000, inner)) == SyncDaemon("backup", "hb0", 200)


def test_dumped_daemon_of_unknown_state_is_an_ipvs_error():
    with pytest.raises(IPVSError, match="unknown state 3"):
        parse_daemon_body(nla(3, nla(1, struct.pack("=I", 3)) + nla(2, b"eth1\0")))
    with pytest.raises(IPVSError, match="without attribute 3"):
        parse_daemon_body(nla(1, b""))


# --- planner ----------------------------------------------------------------------------------


def test_unmanaged_leaves_any_daemon_alone():
    assert plan_sync(None, [SyncDaemon("master", "eth9", 3)]) == []


def test_nothing_running_starts_master_and_backup():
    assert plan_sync(sync_daemons_for("eth1", 7), []) == [SyncOp("start", MASTER), SyncOp("start", BACKUP)]


def test_the_same_daemons_running_need_nothing():
    assert plan_sync(sync_daemons_for("eth1", 7), [BACKUP, MASTER]) == []


def test_a_daemon_with_another_syncid_or_interface_is_restarted_stops_first():
    old = SyncDaemon("backup", "eth1", 1)
    other_if = SyncDaemon("master", "eth2", 7)
    assert plan_sync(sync_daemons_for("eth1", 7), [old, other_if]) == [
        SyncOp("stop", other_if),
        SyncOp("stop", old),
        SyncOp("start", MASTER),
        SyncOp("start", BACKUP),
    ]


def test_nothing_desired_stops_what_runs():
    assert plan_sync([], [MASTER]) == [SyncOp("stop", MASTER)]


# --- reconciler -------------------------------------------------------------------------------


class SyncKernel:
    """The sync-daemon half of KernelIPVS in memory (the table half is empty)."""

    def __init__(self, running=()):
        self.running = {d.state: d for d in running}
        self.commands: list[SyncOp] = []
        self.refuse: dict[str, int] = {}  # interface -> errno for starts

    async def open(self):
        pass

    async def dump(self):
        return {}

    async def apply_all(self, ops):
        from director.ipvs import ApplyResult

        return ApplyResult(list(ops), [])

    async def sync_daemons(self):
        return list(self.running.values())

    async def apply_sync(self, ops):
        results = []
        for op in ops:
            code = self.refuse.get(op.daemon.interface) if op.kind == "start" else None
            if code:
                results.append((op, IPVSError(f"{op}: refused", code=code)))
                continue
            self.commands.append(op)
            if op.kind == "start":
                self.running[op.daemon.state] = op.daemon
            else:
                del self.running[op.daemon.state]
            results.append((op, None))
        return results


def reconciler(kernel):
    from director.reconciler import Reconciler

    return Reconciler(kernel, lambda s, d: "up")


def cfg(sync):
    return Config(path="t.yaml", settings=Settings(sync_daemon=sync))


async def test_a_full_pass_starts_both_daemons_and_the_next_repairs_a_stopped_one():
    kernel = SyncKernel()
    r = reconciler(kernel)
    r.set_config(cfg(SyncSettings("eth1", 7)))
    await r.full_pass()
    assert kernel.running == {"master": MASTER, "backup": BACKUP}
    assert r.sync_daemons == [BACKUP, MASTER]
    del kernel.running["master"]  # ipvsadm --stop-daemon master
    kernel.commands.clear()
    await r.full_pass()
    assert kernel.commands == [SyncOp("start", MASTER)]


async def test_without_the_setting_foreign_daemons_are_left_alone():
    foreign = SyncDaemon("master", "eth9", 1)
    kernel = SyncKernel([foreign])
    r = reconciler(kernel)
    r.set_config(cfg(None))
    await r.full_pass()
    assert kernel.commands == [] and kernel.running == {"master": foreign}
    assert r.sync_daemons is None


async def test_a_reload_without_the_setting_stops_the_daemons_once_then_leaves_them_alone():
    kernel = SyncKernel()
    r = reconciler(kernel)
    r.set_config(cfg(SyncSettings("eth1", 7)))
    await r.full_pass()
    r.set_config(cfg(None))
    await r.full_pass()
    assert kernel.running == {}
    assert r.sync_daemons == []
    kernel.running["backup"] = SyncDaemon("backup", "eth1", 9)  # started by hand afterwards
    kernel.commands.clear()
    await r.full_pass()
    assert kernel.commands == [] and r.sync_daemons is None


async def test_a_refused_start_is_logged_and_retried_on_the_next_pass(caplog):
    kernel = SyncKernel()
    kernel.refuse["eth7"] = errno.ENODEV
    r = reconciler(kernel)
    r.set_config(cfg(SyncSettings("eth7", 0)))
    with caplog.at_level(logging.ERROR, logger="directord.reconciler"):
        await r.full_pass()
    assert "cannot start master sync daemon (interface eth7, syncid 0)" in caplog.text
    assert r.errors == 2 and kernel.running == {}
    del kernel.refuse["eth7"]
    await r.full_pass()
    assert set(kernel.running) == {"master", "backup"}


# --- configuration ----------------------------------------------------------------------------


def test_config_sync_daemon_defaults_syncid_0():
    conf = parse_config("global:\n  sync_daemon: {interface: eth1}\n", "d.yaml")
    assert conf.settings.sync_daemon == SyncSettings("eth1", 0)
    assert parse_config("global: {}\n", "d.yaml").settings.sync_daemon is None


def test_config_sync_daemon_errors_name_file_line_and_field():
    text = "global:\n  sync_daemon:\n    interface: eth/1\n    syncid: 256\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "d.yaml")
    out = format_issues(err.value)
    assert "d.yaml:3:16: global.sync_daemon.interface: not an interface name: 'eth/1'" in out
    assert "d.yaml:4:13: global.sync_daemon.syncid: must be 0-255, got 256" in out
