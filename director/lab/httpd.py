"""A tiny HTTP/1.0 server for lab real servers.

``python -m director.lab.httpd --name rs1 --port 80`` answers every GET (and
HEAD) with ``200`` and the body ``"rs1\\n"``, and ``/healthz`` with ``200``
``"ok\\n"``, so a client can tell which real server answered. Failure modes
for drills and health-check tests:

* ``--status N``: answer every request, ``/healthz`` included, with status N
  (body still the name), e.g. 503 for a broken application;
* ``--hang``: accept connections, read the request, never answer (the
  connection stays open until the client gives up);
* at run time, ``SIGUSR1`` switches hang mode on and ``SIGUSR2`` off, without
  restarting the process (starting Python is slow in the test VM).

Only the standard library's threaded ``socketserver`` is used (one thread per
connection), to keep start-up cheap. An HTTP/1.0 request gets its answer and
``Connection: close``; an HTTP/1.1 request without ``Connection: close`` gets an
HTTP/1.1 answer and the connection stays open for the next request (persistent
connections, RFC 9112 section 9.3; at most `MAX_KEEPALIVE_REQUESTS` on one
connection, 30 s idle at most), so that a drill can hold long-lived connections.
IPv6: ``--bind ::`` (the default) listens dual-stack
(``IPV6_V6ONLY`` off) and falls back to ``0.0.0.0`` where IPv6 is disabled.
The server prints ``listening <addr> <port>`` on stdout once it accepts.
HTTP message syntax: RFC 9112.
"""

from __future__ import annotations

import argparse
import signal
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass, field

#: Reason phrases for the status codes a lab is likely to use (RFC 9110 section 15).
REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

MAX_HEAD_BYTES = 16384
#: Requests answered on one persistent connection before it is closed.
MAX_KEEPALIVE_REQUESTS = 1_000_000


@dataclass
class ServerState:
    """Behaviour of the server, changeable at run time (signals flip ``hang``)."""

    name: str
    status: int = 200
    hang: bool = False
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def build_response(state: ServerState, method: str, path: str, *, keep_alive: bool = False) -> bytes:
    """The complete HTTP response (bytes) for one request line.

    Pure function: ``method`` is the request method, ``path`` the request
    target. GET/HEAD on ``/healthz`` answer ``"ok\\n"`` (with ``state.status``),
    any other GET/HEAD ``"<name>\\n"``; other methods get 405. HTTP/1.0 with
    ``Connection: close``, or with ``keep_alive`` HTTP/1.1 with ``Connection: keep-alive``.
    """
    if method not in ("GET", "HEAD"):
        status, body = 405, b"method not allowed\n"
    elif path.split("?", 1)[0] == "/healthz":
        status, body = state.status, b"ok\n"
    else:
        status, body = state.status, (state.name + "\n").encode()
    reason = REASONS.get(status, "Status")
    version, connection = ("HTTP/1.1", "keep-alive") if keep_alive else ("HTTP/1.0", "close")
    head = (
        f"{version} {status} {reason}\r\n"
        f"Server: directord-lab\r\n"
        f"X-Real-Server: {state.name}\r\n"
        f"Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {connection}\r\n\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """``(method, target)`` from the start of a request head, or None if malformed."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        return None
    return parts[0].upper(), parts[1]


def wants_keep_alive(head: bytes) -> bool:
    """True when a request head asks for a persistent connection: an HTTP/1.1 request line
    without a ``Connection: close`` header (RFC 9112 section 9.3; HTTP/1.0 keep-alive is not
    offered)."""
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    if not lines[0].rstrip().endswith("HTTP/1.1"):
        return False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "connection" and "close" in value.lower():
            return False
    return True


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30.0)
        buf = b""
        for _ in range(MAX_KEEPALIVE_REQUESTS):
            try:
                while b"\r\n\r\n" not in buf and b"\n\n" not in buf and len(buf) < MAX_HEAD_BYTES:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
            except OSError:
                return
            if not buf:
                return
            end = buf.find(b"\r\n\r\n")
            end = end + 4 if end >= 0 else (buf.find(b"\n\n") + 2 if b"\n\n" in buf else len(buf))
            head, buf = buf[:end], buf[end:]
            if not self._answer(sock, head):
                return

    def _answer(self, sock: socket.socket, head: bytes) -> bool:
        """Answer one request head; True when the connection stays open for another."""
        state = self.server.state
        if state.hang:
            # Keep the connection open and silent until the client closes it.
            sock.settimeout(None)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            return False
        req = parse_request_line(head)
        keep = req is not None and wants_keep_alive(head)
        if req is None:
            payload = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        else:
            payload = build_response(state, *req, keep_alive=keep)
        with state.lock:
            state.served += 1
        try:
            sock.sendall(payload)
        except OSError:
            return False
        return keep


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], state: ServerState, family: int) -> None:
        self.address_family = family
        self.state = state
        super().__init__(addr, _Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise


def make_server(bind: str, port: int, state: ServerState) -> _Server:
    """Bind and listen; ``bind`` ``"::"`` falls back to ``"0.0.0.0"`` without IPv6.

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    try:
        return _Server((bind, port), state, family)
    except OSError:
        if bind != "::":
            raise
        return _Server(("0.0.0.0", port), state, socket.AF_INET)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; serves until SIGTERM/SIGINT, returns 0."""
    ap = argparse.ArgumentParser(prog="python -m director.lab.httpd", description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="answered as the body of every GET")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bind", default="::", help="listen address (default :: = dual-stack)")
    ap.add_argument("--hang", action="store_true", help="accept but never answer")
    ap.add_argument("--status", type=int, default=200, help="HTTP status of every answer")
    args = ap.parse_args(argv)

    state = ServerState(name=args.name, status=args.status, hang=args.hang)
    server = make_server(args.bind, args.port, state)

    def _set_hang(on: bool):
        def handler(_signum, _frame):
            state.hang = on

        return handler

    signal.signal(signal.SIGUSR1, _set_hang(True))
    signal.signal(signal.SIGUSR2, _set_hang(False))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())

    host, port = server.server_address[:2]
    print(f"listening {host} {port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
