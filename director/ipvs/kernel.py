"""`KernelIPVS`: the IPVS table of the current network namespace, for the rest of directord.

It dumps the table into the model's `KernelTable` shape (`DumpSocket` and
the decoders of `director.ipvs.codec`: pyroute2's generic parser costs tens
of seconds of CPU on a large table), applies planner operations as one
netlink command each, sent in batches (`CommandSocket`), and keeps the
kernel's sync daemons (`director.ipvs.sync`). The IPVS family id is asked of
the generic-netlink controller (`resolve_family`). Everything else in
directord is kernel-agnostic.

Kernel facts this module relies on (``net/netfilter/ipvs/ip_vs_ctl.c``):

* the service key is (af, protocol, addr, port) or (af, fwmark);
* IPVS_CMD_SET_DEST replaces every field of the destination, so an edit
  carries the complete entry (`DestAttrs`);
* IPVS_SVC_ATTR_FLAGS is a (flags, mask) pair; we send mask 0xffffffff so a
  cleared bit (e.g. persistence turned off) is cleared in the kernel;
* the IPVS generic-netlink family exists only while ip_vs is loaded: the
  lookup of ``IPVS`` fails with ENOENT otherwise.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from director.model import DestKey, KernelDest, KernelService, ServiceKey
from director.planner import Op

from .codec import encode_op
from .errors import IPVSError, IPVSUnavailable
from .sync import SyncDaemon, SyncOp, daemon_dump_request, encode_sync_op, parse_daemon_body
from .transport import CommandSocket, DumpSocket, resolve_family
from .uapi import IPVS_GENL_NAME

_HINTS = {
    errno.EINVAL: "invalid argument (is the real server's address routable from this director?)",
    errno.ESRCH: "no such service or destination",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such scheduler or entry (is the scheduler module available?)",
    errno.EPERM: "permission denied (directord needs CAP_NET_ADMIN)",
}


#: Kernel answers to sync daemon commands (ip_vs_genl_new_daemon / start_sync_thread).
_SYNC_HINTS = {
    errno.ENODEV: "no such interface in this namespace",
    errno.EEXIST: "a daemon of that state already runs",
    errno.ESRCH: "no daemon of that state runs",
    errno.EINVAL: "invalid argument (IPVS refuses synchronisation while a service has real servers of the "
    "other address family)",
}


def describe_errno(code: int) -> str:
    """Human text for a kernel error number, with a hint for the usual IPVS causes."""
    return _HINTS.get(code, os.strerror(code) if code else "unknown error")


def _dump_error(what: str, exc: IPVSError) -> IPVSError:
    reason = describe_errno(exc.errno) if exc.errno else str(exc)
    return IPVSError(f"{what} failed: {reason}", code=exc.errno)


@dataclass
class ApplyResult:
    """Outcome of applying a list of operations: the ones done and the failures."""

    done: list[Op]
    failed: list[tuple[Op, IPVSError]]


class KernelIPVS:
    """Async access to the IPVS table of the current network namespace.

    Use as ``async with KernelIPVS() as ipvs:`` or call `open` / `close`.

    Raises:
        IPVSUnavailable: from `open` when the kernel has no IPVS family.
    """

    def __init__(self) -> None:
        self._dumper: DumpSocket | None = None
        self._commands: CommandSocket | None = None

    async def open(self) -> None:
        """Resolve the IPVS family id and open the dump and command sockets (idempotent).

        Raises:
            IPVSUnavailable: the kernel has no IPVS family (ip_vs not loaded).
            IPVSError: the lookup or a socket failed.
        """
        if self._dumper is not None:
            return
        try:
            family_id = await resolve_family(IPVS_GENL_NAME)
        except IPVSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTSUP):
                raise IPVSUnavailable(
                    "ip_vs is not loaded: the kernel has no IPVS netlink family (modprobe ip_vs)",
                    code=exc.errno,
                ) from None
            reason = describe_errno(exc.errno) if exc.errno else str(exc)
            raise IPVSError(f"cannot open IPVS netlink: {reason}", code=exc.errno) from None
        dumper: DumpSocket | None = None
        try:
            dumper = DumpSocket(family_id)
            commands = CommandSocket(family_id)
        except OSError as exc:
            if dumper is not None:
                dumper.close()
            raise IPVSError(f"cannot open IPVS netlink: {exc}", code=exc.errno or 0) from None
        self._dumper, self._commands = dumper, commands

    async def close(self) -> None:
        """Close the sockets (idempotent)."""
        if self._dumper is not None:
            self._dumper.close()
            self._dumper = None
        if self._commands is not None:
            self._commands.close()
            self._commands = None

    @property
    def commands_sent(self) -> int:
        """IPVS commands (netlink messages) sent through this object since `open`."""
        return self._commands.sent if self._commands is not None else 0

    async def __aenter__(self) -> KernelIPVS:
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _require_dumper(self) -> DumpSocket:
        if self._dumper is None:
            raise IPVSError("IPVS socket is not open")
        return self._dumper

    async def dump(self, *, stats: bool = False) -> dict[ServiceKey, KernelService]:
        """Dump the whole IPVS table: every service with its destinations and connection
        counters; with ``stats``, also the traffic counters of each (`director.model.IPVSStats`,
        ``stats`` of `KernelService` and `KernelDest`; None without).

        Raises:
            IPVSError: the kernel refused the dump.
        """
        dumper = self._require_dumper()
        table: dict[ServiceKey, KernelService] = {}
        try:
            if stats:
                services = await dumper.services_with_stats()
            else:
                services = [(key, attrs, None) for key, attrs in await dumper.services()]
        except IPVSError as exc:
            raise _dump_error("IPVS dump", exc) from None
        for key, attrs, svc_stats in services:
            try:
                dests = await dumper.dests(key, stats=stats)
            except IPVSError as exc:
                raise _dump_error(f"IPVS dump of {key}", exc) from None
            table[key] = KernelService(attrs=attrs, dests=dests, stats=svc_stats)
        return table

    async def dump_dests(self, key: ServiceKey) -> dict[DestKey, KernelDest]:
        """Dump the destinations (with connection counters) of one service.

        Raises:
            IPVSError: the kernel refused (ESRCH when the service is gone).
        """
        dumper = self._require_dumper()
        try:
            return await dumper.dests(key)
        except IPVSError as exc:
            raise _dump_error(f"IPVS dump of {key}", exc) from None

    async def apply(self, op: Op) -> None:
        """Send the one netlink command that carries out ``op`` and wait for its answer.

        Raises:
            IPVSError: the kernel refused it; the message names the service and
                destination and the errno's meaning.
        """
        result = await self.apply_all([op])
        if result.failed:
            raise result.failed[0][1]

    async def apply_all(self, ops: list[Op]) -> ApplyResult:
        """Apply operations in order, in batches; a failure is recorded and the rest still applied.

        Operations on the destinations of a service whose ``add_service``
        failed are recorded as failed with the same error.

        Raises:
            IPVSError: the socket is not open or failed (then nothing is
                known of the operations not yet acknowledged).
        """
        if self._commands is None:
            raise IPVSError("IPVS socket is not open")
        result = ApplyResult(done=[], failed=[])
        messages: list[bytes] = []
        sent_ops: list[Op] = []
        bad: dict[int, IPVSError] = {}
        for i, op in enumerate(ops):
            try:
                messages.append(encode_op(self._commands.family_id, 0, op))
                sent_ops.append(op)
            except ValueError as exc:
                bad[i] = IPVSError(f"{op}: {exc}", op=op, code=errno.EINVAL)
        try:
            codes = await self._commands.run(messages)
        except OSError as exc:
            raise IPVSError(f"IPVS command I/O failed: {exc}", code=exc.errno or 0) from None
        answers = iter(zip(sent_ops, codes))
        broken: dict[ServiceKey, IPVSError] = {}
        for i, op in enumerate(ops):
            error = bad.get(i)
            if error is None:
                _, code = next(answers)
                if code:
                    error = IPVSError(f"{op}: {describe_errno(code)}", op=op, code=code)
            if error is None and op.service not in broken:
                result.done.append(op)
                continue
            if op.service in broken and op.kind != "add_service":
                error = broken[op.service]
            result.failed.append((op, error))
            if op.kind == "add_service":
                broken[op.service] = error
        return result

    async def sync_daemons(self) -> list[SyncDaemon]:
        """The IPVS sync daemons running in this namespace (IPVS_CMD_GET_DAEMON), as
        `director.ipvs.sync.parse_daemon_body` decodes them: none, a master, a backup or both.

        Raises:
            IPVSError: the kernel refused the dump, or its answer is malformed.
        """
        dumper = self._require_dumper()
        try:
            bodies = await dumper.bodies(lambda seq: daemon_dump_request(dumper.family_id, seq))
            return [parse_daemon_body(b) for b in bodies]
        except IPVSError as exc:
            raise _dump_error("IPVS sync daemon dump", exc) from None

    async def apply_sync(self, ops: list[SyncOp]) -> list[tuple[SyncOp, IPVSError | None]]:
        """Start and stop sync daemons, one netlink command each, in order; returns every
        operation with None when the kernel carried it out, else its error.

        Raises:
            IPVSError: the socket is not open or failed.
        """
        if self._commands is None:
            raise IPVSError("IPVS socket is not open")
        results: dict[int, IPVSError | None] = {}
        messages: list[bytes] = []
        for i, op in enumerate(ops):
            try:
                messages.append(encode_sync_op(self._commands.family_id, 0, op))
                results[i] = None
            except ValueError as exc:
                results[i] = IPVSError(f"{op}: {exc}", code=errno.EINVAL)
        try:
            codes = await self._commands.run(messages)
        except OSError as exc:
            raise IPVSError(f"IPVS command I/O failed: {exc}", code=exc.errno or 0) from None
        sent = [i for i, error in results.items() if error is None]
        for i, code in zip(sent, codes):
            if code:
                results[i] = IPVSError(f"{ops[i]}: {_SYNC_HINTS.get(code) or describe_errno(code)}", code=code)
        return [(op, results[i]) for i, op in enumerate(ops)]
