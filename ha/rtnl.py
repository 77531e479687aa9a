"""The one way into rtnetlink: pyroute2's sockets, its error class, named namespaces, a worker thread.

Every module of the project that reads or changes links, addresses or routes
(`ha.vip`, `ha.announce`, `ha.media`, `ha.probe`, `ha.environment`,
`director.realserver.kernel`, `director.lab`) opens its rtnetlink socket here
and nowhere else; the import contract "only ha.rtnl imports pyroute2"
(pyproject.toml) keeps it so.

Why in `ha`: both the heartbeat side (`ha`) and the director's tools use
rtnetlink, and `ha` must not import `director`; this module imports nothing
from the project, so any package may use it.

pyroute2 is imported once, lazily, by `_pyroute2` (see the comment there):
each function below takes the module from it. That is a call and a global
lookup, about 0.1 us, less than the ``from pyroute2 import ...`` inside a
function it replaces (about 0.6 us: importlib's ``_handle_fromlist`` runs for
a package), so the takeover path (`ha.vip`, `ha.announce`) does no more work.
The sockets returned are pyroute2's own objects, used exactly as before
(context managers; ``get_links``, ``get_addr``, ``addr``, ``link``, ...); their
errors are pyroute2's ``NetlinkError`` (`netlink_error`), whose ``code`` is an
errno value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

__all__ = [
    "NLM_F_REQUEST",
    "RTM_GETLINK",
    "async_iproute",
    "in_thread",
    "iproute",
    "netlink_error",
    "netns_create",
    "netns_remove",
]

T = TypeVar("T")

#: include/uapi/linux/netlink.h: the message is a request.
NLM_F_REQUEST = 0x1
#: include/uapi/linux/rtnetlink.h: get one link (or, with NLM_F_DUMP, all of them).
RTM_GETLINK = 18

_module: ModuleType | None = None


def _pyroute2() -> ModuleType:
    """The ``pyroute2`` package, imported on first use (with ``pyroute2.netns``, which it loads)."""
    global _module
    if _module is None:
        # Imported lazily: pyroute2 takes 0.1-0.2 s to import, and many modules that use it
        # are loaded by commands that never touch netlink (``check``, the daemon's start-up
        # before it programs anything, ...).
        import pyroute2

        _module = pyroute2
    return _module


def iproute(netns: str | None = None) -> Any:
    """A new synchronous rtnetlink socket (pyroute2 ``IPRoute``), to be used as a context manager.

    Args:
        netns: None for the network namespace of the calling thread; else the
            name of a namespace (``ip netns`` name, ``/run/netns/<name>``) that
            must exist (pyroute2 is asked not to create it: ``flags=0``).

    Must not be used on a thread whose asyncio event loop is running
    (pyroute2's synchronous classes refuse to): use `in_thread`, or
    `async_iproute`.

    Raises:
        OSError: the socket cannot be opened, or ``netns`` does not exist.
    """
    if netns is None:
        return _pyroute2().IPRoute()
    return _pyroute2().IPRoute(netns=netns, flags=0)


def async_iproute() -> Any:
    """A new asynchronous rtnetlink socket (pyroute2 ``AsyncIPRoute``) in the calling thread's namespace.

    Use as ``async with async_iproute() as ipr:``, or keep it and ``close()`` it.

    Raises:
        OSError: the socket cannot be opened.
    """
    return _pyroute2().AsyncIPRoute()


def netlink_error() -> type[Exception]:
    """pyroute2's ``NetlinkError``: a kernel refusal, its ``code`` an errno value (e.g. 17, EEXIST).

    A function, not a name, so that pyroute2 is imported only when needed:
    ``except netlink_error() as e:`` evaluates it only when an exception
    reaches that clause.
    """
    return _pyroute2().NetlinkError


def netns_create(name: str) -> None:
    """Create the named network namespace (``pyroute2.netns.create``: bind mount at ``/run/netns/<name>``).

    The same scheme as ``ip netns add``, so ``ip netns exec`` sees it.

    Raises:
        OSError: the kernel refused (not root, no namespace support), or the name is taken.
    """
    _pyroute2().netns.create(name)


def netns_remove(name: str) -> None:
    """Remove the named network namespace's bind mount and file (``pyroute2.netns.remove``).

    The namespace itself lives on while a process or socket holds it.

    Raises:
        OSError: it does not exist or cannot be unmounted.
    """
    _pyroute2().netns.remove(name)


def in_thread(fn: Callable[[], T], *, name: str) -> T:
    """Run ``fn()`` in a new thread named ``name``, wait for it, return its result or re-raise its exception.

    For pyroute2's synchronous API from code that may run on an event-loop
    thread: the new thread has no running event loop, and it starts in the
    network namespace of the thread creating it (``fn`` may move it to
    another one: the thread ends with ``fn``, so no thread stays there).
    The thread is a daemon thread; the caller blocks until ``fn`` returns.

    Raises:
        BaseException: whatever ``fn`` raised.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller
            error.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
