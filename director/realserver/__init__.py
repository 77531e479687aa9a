"""`directord realserver prep|undo|status`: preparing a host to be an LVS real server.

What each forwarding method needs on the real server (LVS documentation,
"LVS-DR" and "LVS-Tun"; the sysctls are the table of
:mod:`director.realserver.sysctl`):

* ``dr``: the director forwards frames unchanged to the real server's MAC, so
  the real server must accept packets for the VIP: each VIP on ``lo`` as
  /32 (/128), and it must never answer ARP for the VIP (``arp_ignore=1``,
  ``arp_announce=2``). IPv6 VIPs go on ``lo`` with ``IFA_F_NODAD``; IPv6
  neighbour solicitations are only answered for addresses of the receiving
  interface, so no sysctl is needed for them.
* ``tun``: the director wraps packets in IP-in-IP (RFC 2003); the ``ipip``
  module's ``tunl0`` decapsulates them, the VIP sits on ``tunl0``, and
  reverse-path filtering must be relaxed on ``tunl0`` and ``all``. ARP is
  handled as for dr (the VIP is still a local address). IPv4 only.
* ``nat``: nothing to add; replies must go back through the director, so the
  default route must point at it (checked with ``--director DIP``).

Design: :func:`gather` reads the host (pyroute2 for links, addresses and
routes; ``/proc/sys`` for sysctls, which resolves per network namespace of
the calling thread) into a :class:`HostState`; :func:`plan` (pure) turns a
:class:`Request` and a :class:`HostState` into a :class:`Plan` of items
(present or missing) and the :class:`Change` list that makes the missing
ones present; :func:`apply` runs the changes through a :class:`Backend`,
recording each one's previous state, and rolls back what it did in that run
when one fails. The records go to a JSON state file (written after every
change) that ``undo`` replays backwards.

Ownership: addresses are added the way :mod:`ha.vip` marks directord's own
(IPv4 label ``<ifname>:dd``, IPv6 ``IFA_PROTO``), and ``undo`` removes only
addresses recorded as added by ``prep``.

Modules, each importing only ones listed before it:

* :mod:`~director.realserver.sysctl`: the sysctl table (pure data);
* :mod:`~director.realserver.model`: the request, the host snapshot, the
  plan's items and changes, :class:`RealServerError` (pure);
* :mod:`~director.realserver.planner`: :func:`plan` (pure);
* :mod:`~director.realserver.persist`: the ``--persist`` files (:func:`plan_persist`);
* :mod:`~director.realserver.changes`: :func:`apply` with rollback,
  :func:`revert`, the :class:`Backend` protocol (no I/O of its own);
* :mod:`~director.realserver.statefile`: the state file (:func:`load_state`,
  :func:`save_state`, :func:`default_state_file`);
* :mod:`~director.realserver.kernel`: :func:`gather` and :class:`KernelBackend`
  (rtnetlink, ``/proc/sys``, ``modprobe``);
* :mod:`~director.realserver.commands`: ``prep``, ``undo`` and ``status``;
* :mod:`~director.realserver.cli`: their arguments and :func:`add_commands`,
  which ``director.cli`` calls, and their entry points (``cmd_prep``...),
  which import :mod:`~director.realserver.commands` when they run.

This module offers their public names, each imported from its module on first
use (PEP 562 ``__getattr__``, made by :func:`director.lazy.lazy_package`):
every ``directord`` command imports this package to build its parser, and most
never touch a real server.
"""

from __future__ import annotations

from ..lazy import lazy_package

__all__ = [
    "ENV_FILE",
    "ENV_VAR",
    "IFF_LOOPBACK",
    "IFF_NOARP",
    "KERNEL_LACKS_IPIP",
    "MAX_PERSIST_FILE_BYTES",
    "MAX_STATE_BYTES",
    "STATE_DIR",
    "SYSCTL_CONF",
    "UNIT_FALLBACK",
    "UNIT_FILE",
    "UNIT_LINK",
    "UNIT_NAME",
    "Address",
    "ApplyError",
    "Backend",
    "Change",
    "HostState",
    "IPAddress",
    "Item",
    "KernelBackend",
    "Link",
    "Mode",
    "PersistPaths",
    "Plan",
    "RealServerError",
    "Request",
    "add_commands",
    "apply",
    "apply_one",
    "arp_interfaces",
    "cmd_prep",
    "cmd_status",
    "cmd_undo",
    "current_netns_name",
    "default_state_file",
    "describe_record",
    "env_file_text",
    "explain_error",
    "gather",
    "ipip_available",
    "is_ours",
    "load_state",
    "merge_records",
    "parse_vip",
    "plan",
    "plan_persist",
    "prep",
    "read_text_file",
    "request_from_args",
    "revert",
    "save_state",
    "status",
    "sysctl",
    "sysctl_conf_text",
    "undo",
    "unit_text",
    "vip_device",
]

#: The module of each name of `__all__`, imported when the name is first asked for
#: (``sysctl`` is the module itself).
_SOURCES = {
    "sysctl": ("sysctl",),
    "changes": ("ApplyError", "Backend", "apply", "apply_one", "describe_record", "merge_records", "revert"),
    "cli": ("add_commands", "cmd_prep", "cmd_status", "cmd_undo"),
    "commands": ("prep", "request_from_args", "status", "undo"),
    "kernel": ("IFF_LOOPBACK", "IFF_NOARP", "MAX_PERSIST_FILE_BYTES", "KernelBackend", "gather", "ipip_available"),
    "model": (
        "KERNEL_LACKS_IPIP",
        "Address",
        "Change",
        "HostState",
        "IPAddress",
        "Item",
        "Link",
        "Mode",
        "Plan",
        "RealServerError",
        "Request",
        "explain_error",
        "parse_vip",
    ),
    "persist": (
        "ENV_FILE",
        "ENV_VAR",
        "SYSCTL_CONF",
        "UNIT_FALLBACK",
        "UNIT_FILE",
        "UNIT_LINK",
        "UNIT_NAME",
        "PersistPaths",
        "env_file_text",
        "plan_persist",
        "sysctl_conf_text",
        "unit_text",
    ),
    "planner": ("arp_interfaces", "is_ours", "plan", "vip_device"),
    "statefile": (
        "MAX_STATE_BYTES",
        "STATE_DIR",
        "current_netns_name",
        "default_state_file",
        "load_state",
        "read_text_file",
        "save_state",
    ),
}
__getattr__, __dir__ = lazy_package(__name__, _SOURCES)
