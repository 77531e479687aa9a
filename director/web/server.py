"""The daemon's HTTP listener (``global.http``): metrics and the live status page.

Routes:

* ``GET /metrics``: Prometheus' text format (0.0.4), `director.web.metrics`;
* ``GET /api/status``: the status document (``directord status --json``) with the last
  `PAGE_EVENTS` events, which the page polls;
* ``GET /``, ``/page.js``, ``/page.css``: the status page (`director/web/static/`: plain HTML,
  CSS and a little JavaScript, no build step), which holds no data of its own.

Served by aiohttp on the event loop of the daemon. Read-only: GET and HEAD only, no request
body (``client_max_size`` 1 KiB), request line and headers bounded by aiohttp's parser
(8 KiB each; such malformed requests are counted, not logged), at most `MAX_CONNECTIONS`
connections at once and `MAX_PER_CLIENT` from one address, idle connections (before their
first request too) closed after `KEEPALIVE_TIMEOUT` seconds. When the configuration gives a
token (required on any address but loopback, `director.config`), ``/metrics`` and ``/api/``
require ``Authorization: Bearer TOKEN``
(RFC 6750; Prometheus' ``authorization: {credentials_file: ...}``; the page sends the
token it was opened with as ``#token=...``), compared in constant time; others get 401 with
``WWW-Authenticate: Bearer``. Every answer carries headers that keep the page from being
framed or its scripts from being replaced (``Content-Security-Policy``, ``nosniff``).

A scrape dumps the IPVS table with its counters and asks the checker for its snapshot, which
takes seconds for tens of thousands of real servers on a slow machine: scrapes that arrive
while one is being built share its result (`_Shared`), so a burst of them costs one dump
(and so do the pages' ``/api/status`` polls, each kind on its own);
the text is written in a worker thread, off the loop that sends the heartbeats.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_server import Server
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from director.model import HTTPSettings
from director.web.metrics import Scrape, families

__all__ = ["HTTPServer", "render_metrics"]

log = logging.getLogger("directord.web")

#: Largest request body accepted, bytes (no endpoint takes one).
MAX_BODY = 1024
#: Seconds an idle keep-alive connection stays open.
KEEPALIVE_TIMEOUT = 15.0
#: Seconds a stop waits for requests in flight.
SHUTDOWN_TIMEOUT = 2.0
#: Most connections open at once (a scraper or two and a few pages); more are closed at once,
#: so idle or slow clients cannot pile up sockets in the daemon.
MAX_CONNECTIONS = 64
#: Most connections open at once from one client address: one client (a slowloris opening
#: connections that never finish a request) cannot take all `MAX_CONNECTIONS`.
MAX_PER_CLIENT = 8
#: Events the page's status document carries.
PAGE_EVENTS = 30
#: The page's files (`director/web/static/`) and their content types.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
#: Headers of every answer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Families(Collector):
    """A registry of one scrape's families, as `generate_latest` reads one."""

    def __init__(self, scrape: Scrape) -> None:
        self._scrape = scrape

    def collect(self) -> Any:
        return families(self._scrape)


def render_metrics(scrape: Scrape) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of ``scrape``'s metric families."""
    return generate_latest(_Families(scrape))


def _peer_host(transport: asyncio.BaseTransport | None) -> str | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[0] if isinstance(peer, tuple) and peer else None


class _Gate(asyncio.Protocol):
    """Admits a new connection or closes it at once: at most `MAX_CONNECTIONS` open, at most
    `MAX_PER_CLIENT` of them from one address. An admitted one is handed to aiohttp's handler
    (``transport.set_protocol``) before any byte is read."""

    def __init__(self, server: HTTPServer, handlers: Server) -> None:
        self._server = server
        self._handlers = handlers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        open_now = self._handlers.connections
        host = _peer_host(transport)
        if len(open_now) >= MAX_CONNECTIONS or (
            host is not None and sum(1 for h in open_now if _peer_host(h.transport) == host) >= MAX_PER_CLIENT
        ):
            self._server.turned_away += 1
            transport.close()
            return
        handler = self._handlers()
        transport.set_protocol(handler)
        handler.connection_made(transport)


class _ClientErrors(logging.Filter):
    """Drops aiohttp's report of a request the client got wrong (a header too long, not HTTP, an
    unparsable line: `aiohttp.http_exceptions.HttpProcessingError`), which aiohttp logs with a
    traceback at ERROR: anyone who can connect could fill the log with them (and format every
    traceback on the loop that sends the heartbeats). They are counted (``count``) instead.
    Errors of the server's own code still pass."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and not isinstance(exc, web.HTTPException):
            self.count += 1
            return False
        return True


class _Shared:
    """One computation at a time: callers arriving while it runs get its result."""

    def __init__(self, compute: Callable[[], Coroutine[Any, Any, bytes]]) -> None:
        self._compute = compute
        self._running: asyncio.Task[bytes] | None = None

    async def get(self) -> bytes:
        task = self._running
        if task is None or task.done():
            task = self._running = asyncio.get_running_loop().create_task(self._compute(), name="metrics-scrape")
        return await asyncio.shield(task)


class HTTPServer:
    """The listener of ``settings`` (`director.model.HTTPSettings`), serving ``/metrics`` from
    ``scrape`` (a coroutine function returning the daemon's `Scrape`) and ``/api/status`` from
    ``status`` (a coroutine function of the number of recent events wanted, returning the
    status document; None: 404).

    `start` binds (raises OSError when it cannot); `stop` closes. `set_token` swaps the token
    (a reload that changed the token file) without closing connections.
    """

    def __init__(
        self,
        settings: HTTPSettings,
        scrape: Callable[[], Awaitable[Scrape]],
        status: Callable[[int], Awaitable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self._token = settings.token
        self._scrape = scrape
        self._status = status
        files = resources.files("director.web") / "static"
        self._static = {path: (files.joinpath(name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}
        self._shared = _Shared(self._metrics_text)
        self._shared_status = _Shared(self._status_json)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.scrapes = 0  # /metrics answers sent
        self.refused = 0  # requests refused for a missing or wrong token
        self.turned_away = 0  # connections closed at once: MAX_CONNECTIONS open, or MAX_PER_CLIENT from its address
        self._client_errors = _ClientErrors()
        self._server_log = logging.getLogger("directord.web.server")

    @property
    def bad_requests(self) -> int:
        """Requests refused as malformed (aiohttp's 400: a line or header too long, not HTTP), not logged."""
        return self._client_errors.count

    def set_token(self, token: str | None) -> None:
        """Require ``token`` from now on (None: no token)."""
        self._token = token

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/status", self._api_status)
        for path in STATIC:
            app.router.add_get(path, self._file)
        return app

    async def start(self) -> None:
        """Bind ``settings.host:settings.port`` and serve.

        Raises:
            OSError: the address cannot be bound (in use, not on this host, no permission).
        """
        runner = web.AppRunner(
            self._app(),
            access_log=None,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            logger=self._server_log,
        )
        await runner.setup()
        self._server_log.addFilter(self._client_errors)
        handlers = runner.server
        assert handlers is not None

        def protocol() -> asyncio.BaseProtocol:
            return _Gate(self, handlers)

        try:
            self._listener = await asyncio.get_running_loop().create_server(
                protocol, self.settings.host, self.settings.port, reuse_address=True
            )
        except BaseException:
            self._server_log.removeFilter(self._client_errors)
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("metrics on http://%s/metrics, status page on http://%s/", self.settings.listen, self.settings.listen)

    async def stop(self) -> None:
        """Stop listening and close every connection (idempotent)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            self._server_log.removeFilter(self._client_errors)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], headers=SECURITY_HEADERS)
        token = self._token
        if token is not None and request.path not in STATIC:
            given = request.headers.get("Authorization", "")
            scheme, _, credentials = given.partition(" ")
            # the header's bytes as they came (aiohttp decodes them with surrogateescape): a value
            # that is not UTF-8 is a wrong token, not an error of the server
            offered = credentials.strip().encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not hmac.compare_digest(offered, token.encode()):
                self.refused += 1
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="directord"', **SECURITY_HEADERS})
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        body, kind = self._static[request.path]
        return web.Response(body=body, headers={"Content-Type": kind})

    async def _api_status(self, request: web.Request) -> web.StreamResponse:
        if self._status is None:
            raise web.HTTPNotFound()
        body = await self._shared_status.get()
        return web.Response(body=body, headers={"Content-Type": "application/json"})

    async def _status_json(self) -> bytes:
        assert self._status is not None
        doc = await self._status(PAGE_EVENTS)
        return json.dumps(doc, separators=(",", ":")).encode()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body = await self._shared.get()
        self.scrapes += 1
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _metrics_text(self) -> bytes:
        scrape = await self._scrape()
        return await asyncio.to_thread(render_metrics, scrape)
