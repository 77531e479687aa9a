"""The IPVS layer: the kernel's IPVS table over generic netlink, in layers that import only downwards.

1. `director.ipvs.uapi`: kernel numbers (netlink, generic netlink, ``ip_vs.h``);
2. `director.ipvs.errors`: `IPVSError`, `IPVSUnavailable`;
3. `director.ipvs.netlink`: message framing, the attribute codec, the one
   reader of answers and acknowledgements, the family lookup messages (pure);
4. `director.ipvs.codec` (virtual services, destinations, commands) and
   `director.ipvs.sync` (sync daemons and `plan_sync`): the IPVS payloads (pure);
5. `director.ipvs.transport`: the sockets (family lookup, dumps, batched commands);
6. `director.ipvs.kernel`: `KernelIPVS`, what the rest of directord uses.

Below all of them: `director.model` (the table's shapes, interface names) and
`director.planner` (`Op`). This package exports the names the rest of the
project uses; tests and benchmarks import the layers themselves.
"""

from .errors import IPVSError, IPVSUnavailable
from .kernel import ApplyResult, KernelIPVS
from .sync import SyncDaemon, plan_sync, sync_daemons_for

__all__ = [
    "ApplyResult",
    "IPVSError",
    "IPVSUnavailable",
    "KernelIPVS",
    "SyncDaemon",
    "plan_sync",
    "sync_daemons_for",
]
