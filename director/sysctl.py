"""Reading and writing sysctls through ``/proc/sys``, in the calling thread's network namespace.

The one place that turns a sysctl key into a ``/proc/sys`` path and reads or
writes it: `directord realserver` (`director.realserver.kernel`, the keys
of the table in `director.realserver.sysctl`) and the lab
(`director.lab.netns`) both use it. ``/proc/sys/net`` resolves against the
network namespace of the thread that opens the file, so a thread that has
entered a namespace (``setns(2)``) reads and writes that namespace's values.

Keys are in path form, relative to ``/proc/sys``: ``net/ipv4/conf/eth0.100/arp_ignore``
(slashes, so interface names with dots stay unambiguous); the ``sysctl(8)``
dotted form is converted by the callers (`director.realserver.sysctl.path_key`,
`director.lab.netns.sysctl_path`).

Why here: its users are tools of `director` (realserver, lab); this module is
not a tool and imports nothing from the project, so the daemon may use it too
without breaking the contract "the daemon imports none of the tools".
"""

from __future__ import annotations

__all__ = ["PROC_SYS", "proc_path", "read_sysctl", "write_sysctl"]

#: Where the kernel shows its sysctls (procfs).
PROC_SYS = "/proc/sys"


def proc_path(key: str) -> str:
    """The ``/proc/sys`` path of a path-form key: ``net/ipv4/ip_forward`` -> ``/proc/sys/net/ipv4/ip_forward``.

    Raises:
        ValueError: the key has a ``..`` component (it would leave ``/proc/sys``).
    """
    if ".." in key.split("/"):
        raise ValueError(f"invalid sysctl key {key!r}")
    return f"{PROC_SYS}/{key}"


def read_sysctl(key: str) -> str:
    """The value of the sysctl ``key`` (path form), as text without surrounding white space.

    Raises:
        FileNotFoundError: no such key (e.g. an interface that does not exist here).
        OSError: it cannot be read.
        ValueError: a ``..`` in the key (`proc_path`).
    """
    with open(proc_path(key)) as f:
        return f.read().strip()


def write_sysctl(key: str, value: object) -> None:
    """Set the sysctl ``key`` (path form) to ``value`` (written as ``f"{value}\\n"``).

    Raises:
        FileNotFoundError: no such key.
        OSError: the kernel refused the value (``EINVAL``) or the write (``EPERM``, ``EACCES``).
        ValueError: a ``..`` in the key (`proc_path`).
    """
    with open(proc_path(key), "w") as f:
        f.write(f"{value}\n")
