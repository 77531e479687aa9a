"""The errors of the IPVS layer: every failure of a request, an answer or the socket.

Each module of `director.ipvs` raises these (decoders for malformed answers,
the transport for kernel refusals and socket failures), so a caller catches
one exception type whatever layer failed.
"""

from __future__ import annotations

from director.planner import Op


class IPVSError(Exception):
    """A kernel IPVS request failed, or its answer could not be decoded.

    Attributes:
        op: the planner operation that failed (None for a dump or a decoding failure).
        errno: the kernel's error number (e.g. errno.EINVAL), 0 if unknown.
    """

    def __init__(self, message: str, op: Op | None = None, code: int = 0):
        super().__init__(message)
        self.op = op
        self.errno = code


class IPVSUnavailable(IPVSError):
    """The kernel has no IPVS generic-netlink family (the ip_vs module is not loaded)."""
