"""A kernel condition that lasts (ip_vs not loaded, a sync daemon the kernel refuses) is logged when
it starts, changes and ends, not at every pass; ip_vs missing is an error only when the
configuration needs IPVS.

The real `KernelIPVS` is used where the host kernel lacks ip_vs (skipped where it has it); the
repairs use a kernel in memory.
"""

import asyncio
import errno
import logging

import pytest

from director.config import parse_config
from director.ipvs import ApplyResult, IPVSError, IPVSUnavailable, KernelIPVS
from director.model import Config, Settings, SyncSettings
from director.reconciler import Reconciler

SERVICE = """\
virtual_services:
  - name: web
    address: 10.0.0.100
    port: 80
    check: {type: none}
    real_servers:
      - {address: 10.0.0.11}
"""
PASSES = 5


def ip_vs_loaded() -> bool:
    async def probe():
        try:
            async with KernelIPVS():
                return True
        except IPVSError:
            return False

    return asyncio.run(probe())


needs_no_ip_vs = pytest.mark.skipif(ip_vs_loaded(), reason="the kernel has ip_vs: the condition cannot arise")


def records(caplog, level, text="ip_vs is not loaded"):
    return [r for r in caplog.records if r.levelno == level and text in r.getMessage()]


@needs_no_ip_vs
async def test_without_services_a_missing_ip_vs_is_one_info_line(caplog):
    r = Reconciler(KernelIPVS(), lambda s, d: "up")
    r.set_config(Config(path="d.yaml", settings=Settings()))
    with caplog.at_level(logging.DEBUG, logger="directord.reconciler"):
        for _ in range(PASSES):
            await r.full_pass()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(records(caplog, logging.INFO)) == 1
    assert len(records(caplog, logging.DEBUG)) == PASSES - 1


@needs_no_ip_vs
async def test_with_services_a_missing_ip_vs_is_one_error_until_it_changes(caplog):
    r = Reconciler(KernelIPVS(), lambda s, d: "up")
    r.set_config(parse_config(SERVICE, "d.yaml"))
    with caplog.at_level(logging.INFO, logger="directord.reconciler"):
        for _ in range(PASSES):
            await r.full_pass()
    assert len(records(caplog, logging.ERROR)) == 1
    # the configuration's need changes: a reload drops the services (INFO), then brings them back (ERROR)
    r.set_config(Config(path="d.yaml", settings=Settings()))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="directord.reconciler"):
        for _ in range(PASSES):
            await r.full_pass()
        assert len(records(caplog, logging.INFO)) == 1 and not records(caplog, logging.ERROR)
        r.set_config(parse_config(SERVICE, "d.yaml"))
        for _ in range(PASSES):
            await r.full_pass()
    assert len(records(caplog, logging.ERROR)) == 1


@needs_no_ip_vs
async def test_a_sync_daemon_alone_needs_ip_vs(caplog):
    r = Reconciler(KernelIPVS(), lambda s, d: "up")
    r.set_config(Config(path="d.yaml", settings=Settings(sync_daemon=SyncSettings("eth1", 0))))
    with caplog.at_level(logging.INFO, logger="directord.reconciler"):
        for _ in range(PASSES):
            await r.full_pass()
    assert len(records(caplog, logging.ERROR)) == 1


class FlakyKernel:
    """A kernel whose ip_vs comes and goes (``loaded``), whose table stays empty (commands are
    accepted and forgotten), and which refuses sync daemons on the interfaces in ``refuse``."""

    def __init__(self):
        self.loaded = False
        self.refuse: set[str] = set()

    async def open(self):
        if not self.loaded:
            raise IPVSUnavailable("ip_vs is not loaded: the kernel has no IPVS netlink family (modprobe ip_vs)")

    async def dump(self):
        return {}

    async def apply_all(self, ops):
        return ApplyResult(list(ops), [])

    async def sync_daemons(self):
        return []

    async def apply_sync(self, ops):
        if any(op.daemon.interface in self.refuse for op in ops):
            return [(op, IPVSError(f"{op}: no such interface in this namespace", code=errno.ENODEV)) for op in ops]
        return [(op, None) for op in ops]


async def test_the_start_and_the_repair_of_the_condition_are_logged_once_each(caplog):
    kernel = FlakyKernel()
    r = Reconciler(kernel, lambda s, d: "up")
    r.set_config(parse_config(SERVICE, "d.yaml"))
    with caplog.at_level(logging.INFO, logger="directord.reconciler"):
        for _ in range(PASSES):
            await r.full_pass()
        kernel.loaded = True  # modprobe ip_vs
        for _ in range(PASSES):
            await r.full_pass()
        kernel.loaded = False  # rmmod ip_vs
        for _ in range(PASSES):
            await r.full_pass()
    assert len(records(caplog, logging.ERROR)) == 2
    assert len(records(caplog, logging.INFO, "the IPVS table can be read again")) == 1


async def test_a_refused_sync_daemon_is_one_error_until_it_is_repaired(caplog):
    kernel = FlakyKernel()
    kernel.loaded = True
    kernel.refuse.add("eth7")
    r = Reconciler(kernel, lambda s, d: "up")
    r.set_config(Config(path="d.yaml", settings=Settings(sync_daemon=SyncSettings("eth7", 0))))
    with caplog.at_level(logging.INFO, logger="directord.reconciler"):
        for _ in range(PASSES):
            await r.full_pass()
        assert r.errors == 2 * PASSES  # retried and counted at each pass (master and backup)
        assert len(records(caplog, logging.ERROR, "cannot start master sync daemon")) == 1
        assert len(records(caplog, logging.ERROR, "cannot start backup sync daemon")) == 1
        kernel.refuse.clear()  # the interface appears
        await r.full_pass()
    assert r.sync_daemons is not None and len(r.sync_daemons) == 2
    assert len(records(caplog, logging.INFO, "IPVS sync daemons: as configured again")) == 1


@needs_no_ip_vs
async def test_a_daemon_without_services_logs_no_error_pass_after_pass(tmp_path, caplog):
    """A director configured for HA only (here: with nothing at all) on a kernel without ip_vs:
    no error at any reconcile pass; the kernel error is still in its status."""
    from test_daemon import wait_status

    from director.daemon import Daemon

    cfg = tmp_path / "directord.yaml"
    cfg.write_text("global:\n  reconcile_interval: 0.1\n")
    sock = str(tmp_path / "run" / "directord.sock")
    daemon = Daemon(str(cfg), control_socket=sock)
    with caplog.at_level(logging.DEBUG, logger="directord"):
        task = asyncio.create_task(daemon.run())
        try:
            doc = await wait_status(sock, lambda d: True)
            for _ in range(100):  # a pass every 0.1 s
                if sum(len(records(caplog, level)) for level in (logging.DEBUG, logging.INFO, logging.ERROR)) >= PASSES:
                    break
                await asyncio.sleep(0.1)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(records(caplog, logging.INFO)) == 1
    assert "ip_vs is not loaded" in doc["kernel_error"]
