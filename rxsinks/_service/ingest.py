"""The ingest protocol: the ``aiohttp.web`` app the registry posts to, and a client for it.

Routes of :func:`ingest_app`:

``POST /events``
    A registry envelope ``{"events": [...]}`` with the content type
    ``application/vnd.docker.distribution.events.v1+json``, ``...v2+json`` or
    ``application/json`` (a ``charset`` parameter, if any, must be UTF-8). Answers, in this order
    of checks: 503 while the relay stops; 401 without ``Authorization: Bearer <token>`` (when a
    token is configured; compared in constant time); 415 for another content type; 413 for a
    body over ``ingest.max_body`` (announced or streamed); 408 for a body not received within
    ``ingest.body_timeout``; 400 for a body that cannot be read (a bad ``Content-Encoding``),
    malformed JSON, an envelope that is not ``{"events": [objects]}``, or an event whose ``id``
    is not a printable string of at most :data:`MAX_EVENT_ID` characters (it becomes a header);
    503 with ``Retry-After`` when the store cannot take them (full, failing); otherwise 200
    ``{"accepted": n}``, sent only after :meth:`~rxsinks._service.relay.Relay.accept` returned.
    Errors are JSON: ``{"error": "..."}``, the message naming what is wrong. Bad input never gets a
    5xx.
``GET /healthz``
    200 ``ok`` while accepting; 503 ``stopping`` once the relay stops, 503 ``store cannot
    write: ...`` while the store refuses writes (a full disk). Never needs the token.
``GET /metrics``
    Prometheus text (:func:`rxsinks._service.prometheus.exposition`: the registry's metric names per
    endpoint and rxsinks' own), plus the ingest's request, event and connection counters.
    Needs the token when one is configured, unless ``ingest.open_metrics``.
``GET /debug/vars``
    The registry's expvar JSON: ``{"registry": {"notifications": {"endpoints": [...]}}}``, each
    endpoint with ``name``, ``url`` and ``EndpointConfig`` (secrets, user info and query values
    redacted) and ``Metrics`` (the registry's counters, then rxsinks' in the same style). Needs
    the token like ``/metrics``.
``GET /dead-letters?endpoint=N&since=UNIX`` and ``POST /dead-letters/replay``
    The admin routes: the durable store's dead letters (event payloads), and replaying them into
    their endpoints' queues (what ``rxsinks dead-letters`` uses while the relay runs). They
    always need the token: without ``ingest.token`` they answer 403. Replay takes its
    parameters as a JSON body ``{"endpoint": "N", "since": UNIX}`` (``{}`` for all) with
    ``Content-Type: application/json``, which no HTML form can send. 409 when the relay has no
    durable store.

``GET /ui``, ``GET /api/endpoints`` ...
    The operator's page and its JSON API (:mod:`rxsinks._service.ui`): the token, or the
    page's login.

Connections are guarded (:class:`ConnectionGuard`): a request's head must arrive within
``ingest.header_timeout``, at most ``ingest.max_connections`` are open at once (an idle one, or
one still sending its head, gives way to a newcomer), idle keep-alive connections close after
``ingest.idle_timeout``. A client's mistakes and disconnects are logged on one line at DEBUG,
never as a traceback.

:func:`post_events` is the client side (``rxsinks send`` and the demo): it posts events in
envelopes through the library's own :class:`~rxsinks.WebhookSink`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import resource
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event, decode_envelope
from .._exceptions import DeliveryError, EnvelopeError, SinkClosedError, StoreError, StoreFullError
from .._http.sink import WebhookSink
from .._options import WebhookOptions
from .._redact import redact_text, redact_url
from .._throttle import LogThrottle

if TYPE_CHECKING:
    from .._endpoint import Endpoint
    from .._store.lease import LeaseManager
    from .._store.protocol import Store
    from .._store.sqlite import DeadLetterRecord
    from .config import EndpointConfig, IngestConfig, RelayConfig

__all__ = [
    "INGEST_MEDIA_TYPES",
    "MAX_EVENT_ID",
    "METRICS_CONTENT_TYPE",
    "ConnectionGuard",
    "GuardedSite",
    "Relay",
    "ingest_app",
    "ingest_runner",
    "post_events",
]

log = logging.getLogger("rxsinks.ingest")

INGEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_V1, MEDIA_TYPE_V2, "application/json"})
"""Content types ``POST /events`` accepts."""

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's content type."""

MAX_EVENT_ID: Final = 255
"""The longest event ``id`` accepted (the registry's are 36-character UUIDs)."""


class Relay(Protocol):
    """What the ingest needs of the relay behind it (:class:`rxsinks.Relay` is one).

    The ingest only hands events over and reports; knowing no more of the relay than this keeps
    the two modules apart (the relay builds its ingest, never the other way round).
    """

    @property
    def config(self) -> RelayConfig:
        """The configuration (its ``ingest`` section is the ingest's)."""

    @property
    def accepting(self) -> bool:
        """Whether events are taken (``False`` while stopping)."""

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints, for metrics."""

    @property
    def endpoint_configs(self) -> tuple[EndpointConfig, ...]:
        """Their configurations, in the same order."""

    async def accept(self, events: Sequence[Event], *, size: int | None = None) -> None:
        """Take accepted events in; return once they are committed."""

    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None
    ) -> list[DeadLetterRecord]:
        """The dead letters kept in the store."""

    async def replay(
        self,
        endpoint: str | None = None,
        since: float | None = None,
        *,
        ids: Collection[int] | None = None,
    ) -> int:
        """Put dead letters back on their endpoints' queues (only ``ids``, if given); how
        many."""

    @property
    def store(self) -> Store | None:
        """The durable store, or ``None`` in memory."""

    @property
    def leases(self) -> LeaseManager | None:
        """With Redis, who delivers for which endpoint."""

    @property
    def delivering(self) -> tuple[str, ...]:
        """The endpoints this instance delivers for."""

    @property
    def instance_id(self) -> str:
        """This instance's name."""

    @property
    def memory_held(self) -> tuple[int, int] | None:
        """The memory store's events and bytes held now, or ``None``."""

    async def store_problem(self) -> str | None:
        """Why the store cannot write, or ``None``."""


_UTF8 = frozenset({"utf-8", "utf8"})
# the parameters of a replay request are a small JSON object
_MAX_ADMIN_BODY = 4096
# refusals (a store that cannot write, a connection cap reached) repeat with every request:
# one line a minute
_LOG_EVERY = 60.0
# file descriptors kept aside from the connection cap (store, journal, outgoing connections)
_SPARE_FDS = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer aiohttp's own errors (404, 405, 413 ...) in the same JSON shape as ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {key: value for key, value in exc.headers.items() if key.lower() == "allow"}
        return _error(exc.status, exc.reason, **headers)


async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response``, then close the connection without reading the rest of the body.

    For a body that cannot be read (undecodable, too slow): aiohttp would otherwise go on
    reading it after the answer (its "lingering close"), and fail again doing so.
    """
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client is gone already
    request.protocol.force_close()
    return response


class _ClientErrors(logging.Filter):
    """Turns aiohttp's tracebacks for a client's fault into one DEBUG line.

    aiohttp logs a malformed request (a header line too long, a bad chunk) and a client that
    disconnects at the wrong moment at ERROR, with a traceback: anyone could fill the log.
    Other errors (rxsinks' own bugs) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError | RequestPayloadError | ConnectionError):
            log.debug("bad request or disconnect: %s", _one_line(error))
            return False
        return True


_server_log = logging.getLogger("rxsinks.ingest.http")
_server_log.addFilter(_ClientErrors())


def _one_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return redact_text(" ".join(str(message).split()))


# --------------------------------------------------------------------------- connections


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol behind the guard's admission and head timer."""

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self._make = make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a request's head arrived and its handler runs
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard._admit(self):
            transport.abort()
            return
        self.inner = self._make()
        self.inner.connection_made(transport)
        self._arm()  # the first request's head is due within header_timeout

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.busy and self._timer is None:
            self._arm()  # the first byte after an idle wait: the head is due
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.inner is None else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard._forget(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def close(self, reason: str) -> None:
        """Close at once (a slow head, or room for a newcomer)."""
        self.guard.closed[reason] += 1
        if self.transport is not None:
            self.transport.abort()

    def started(self) -> None:
        self.busy = True
        self._disarm()

    def finished(self) -> None:
        self.busy = False
        self.guard._idle(self)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if not self.busy:
            log.debug("closing a connection whose request head took over the header timeout")
            self.close("header_timeout")


class ConnectionGuard:
    """The ingest's connections: a cap, a head timeout, and idle connections giving way.

    A slow client (one byte every few seconds) must not hold a connection for long, nor many of
    them starve ``/healthz``: a request's head must arrive within ``header_timeout`` of the
    connection opening (or of its first byte after an idle keep-alive wait), else the connection
    is closed; at ``max_connections``, the connection idle (or sending its head) for longest is
    closed to make room, and only when every connection is in the middle of a request is the
    newcomer refused. Bodies have their own bound (``body_timeout``, in the handlers).

    Args:
        config: the ingest settings (``header_timeout``, ``max_connections``).
    """

    def __init__(self, config: IngestConfig) -> None:
        self.header_timeout = config.header_timeout
        self.wanted = config.max_connections
        self.limit = config.max_connections
        # admitted connections, those that became idle most recently last
        self._open: dict[_Guarded, None] = {}
        self._by_transport: dict[asyncio.BaseTransport, _Guarded] = {}
        self.closed: Counter[str] = Counter()
        self._refusals = LogThrottle(log, logging.WARNING, _LOG_EVERY)

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for ``loop.create_server``, wrapping aiohttp's.

        The cap is fitted to the process's open-file limit here, when the server starts.
        """
        self.limit = _connection_limit(self.wanted)
        return lambda: _Guarded(self, make)

    def _admit(self, connection: _Guarded) -> bool:
        if len(self._open) >= self.limit:
            victim = next((other for other in self._open if not other.busy), None)
            if victim is None:
                self.closed["refused"] += 1
                self._refusals.failed(
                    "ingest: %d connections are busy (ingest.max_connections): refusing new ones",
                    self.limit,
                )
                return False
            self._open.pop(victim)
            victim.close("evicted")
        self._open[connection] = None
        assert connection.transport is not None
        self._by_transport[connection.transport] = connection
        return True

    def _forget(self, connection: _Guarded) -> None:
        self._open.pop(connection, None)
        if connection.transport is not None:
            self._by_transport.pop(connection.transport, None)

    def _idle(self, connection: _Guarded) -> None:
        if connection in self._open:
            # idle from now: the last to give way
            self._open.pop(connection)
            self._open[connection] = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks a connection busy while one of its requests is handled."""
        transport = request.transport
        connection = None if transport is None else self._by_transport.get(transport)
        if connection is None:
            return await handler(request)
        connection.started()
        try:
            return await handler(request)
        finally:
            connection.finished()


def _connection_limit(wanted: int) -> int:
    """``wanted``, or fewer when the process may not open that many files.

    Every connection is a file descriptor: past the process's limit, accepting fails (EMFILE)
    and so does everything else that opens a file. The soft limit is raised toward the hard one
    when needed, as servers do; what still does not fit is cut, with a WARNING.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + _SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = max(1, soft - _SPARE_FDS)
        log.warning(
            "ingest.max_connections %d is more than the open-file limit allows (%d): using %d",
            wanted,
            soft,
            limit,
        )
        return limit
    return wanted


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`.

    Args:
        runner: the app's runner, set up.
        host: the interface (``None`` or ``""``: every interface).
        port: the port (0: a free one).
        guard: the guard of the app's connections.
    """

    def __init__(
        self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host = host or None
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        """``http://host:port`` as configured."""
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        """Bind and listen."""
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog
        )


def ingest_runner(app: web.Application, config: IngestConfig, shutdown: float) -> web.AppRunner:
    """The runner of an ingest app: no access log, the idle timeout, quiet client errors."""
    return web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown,
        keepalive_timeout=config.idle_timeout,
        logger=_server_log,
    )


GUARD: Final = web.AppKey("rxsinks_guard", ConnectionGuard)
"""Where :func:`ingest_app` keeps the app's :class:`ConnectionGuard`."""


# --------------------------------------------------------------------------- handlers


class _Ingest:
    """The handlers, bound to one relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        ingest = relay.config.ingest
        self.token = None if ingest.token is None else ingest.token.encode("utf-8")
        self.max_body = ingest.max_body
        self.body_timeout = ingest.body_timeout
        self.open_metrics = ingest.open_metrics
        self.guard = ConnectionGuard(ingest)
        self.requests: Counter[int] = Counter()
        self.accepted_events = 0
        self._store_errors = LogThrottle(log, logging.ERROR, _LOG_EVERY)
        self._store_full = LogThrottle(log, logging.WARNING, _LOG_EVERY)

    async def post_events(self, request: web.Request) -> web.Response:
        response = await self._post_events(request)
        self.requests[response.status] += 1
        return response

    async def _post_events(self, request: web.Request) -> web.Response:
        if not self.relay.accepting:
            return _error(503, "the relay is stopping; retry later", **{"Retry-After": "5"})
        if self.token is not None and not self.authorized(request):
            return _error(
                401,
                "missing or wrong token: send 'Authorization: Bearer <token>'",
                **{"WWW-Authenticate": 'Bearer realm="rxsinks"'},
            )
        problem = self._content_type_problem(request)
        if problem is not None:
            return _error(415, problem)
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._too_large(length)
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        try:
            events = decode_envelope(body)
        except EnvelopeError as exc:
            return _error(400, str(exc))
        except RecursionError:
            return _error(400, "envelope is not valid JSON: nested too deeply")
        problem = _id_problem(events)
        if problem is not None:
            return _error(400, problem)
        try:
            await self.relay.accept(events, size=len(body))
        except SinkClosedError:
            return _error(503, "the relay is stopping; retry later", **{"Retry-After": "5"})
        except StoreFullError as exc:
            if not exc.fits:
                return _error(413, str(exc))
            # backpressure, not a failure: the registry keeps the events and retries
            self._store_full.failed("ingest: refusing events (503): %s", exc)
            return _error(503, str(exc), **{"Retry-After": "5"})
        except StoreError as exc:
            # nothing of this request was committed: the registry retries it
            self._store_errors.failed("store refused %d event(s): %s", len(events), exc)
            return _error(503, f"cannot store the events: {exc}", **{"Retry-After": "5"})
        self._store_errors.succeeded("store accepts events again")
        self._store_full.succeeded("ingest: accepting events again")
        self.accepted_events += len(events)
        return web.json_response({"accepted": len(events)})

    async def _read(self, request: web.Request, limit: int | None = None) -> bytes | web.Response:
        """The request's body, or the error answer when it cannot be read."""
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # a chunked body (no Content-Length) that grew past client_max_size
            return self._too_large(None)
        except TimeoutError:
            log.debug("closing a request whose body took over the body timeout")
            self.guard.closed["body_timeout"] += 1
            return await _answer_and_close(
                request,
                _error(
                    408,
                    f"the body did not arrive within {self.body_timeout:g} s (ingest.body_timeout)",
                ),
            )
        except (RequestPayloadError, HttpProcessingError) as exc:
            # a body that cannot be decoded (a bad Content-Encoding, a broken chunk)
            cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
            return await _answer_and_close(
                request, _error(400, f"malformed request body: {_one_line(cause)}")
            )
        except ConnectionError as exc:
            # the client went away mid-body: nobody reads this answer
            log.debug("client disconnected before its body arrived: %s", _one_line(exc))
            return _error(400, "the client disconnected before its body arrived")
        if limit is not None and len(body) > limit:
            return _error(413, f"body over the limit of {limit} bytes")
        return body

    def authorized(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        # header values come decoded as UTF-8 with surrogateescape: this gives the bytes back
        given = credentials.strip().encode("utf-8", "surrogateescape")
        # compared even when the scheme is wrong, so timing says nothing about which part failed
        same = hmac.compare_digest(given, self.token)
        return same and scheme.lower() == "bearer"

    def _admin_refusal(self, request: web.Request) -> web.Response | None:
        """Why an admin request is refused (no token configured, or not given), or ``None``."""
        if self.token is None:
            return _error(
                403,
                "the admin routes (dead letters, replay) need ingest.token: configure one "
                "(rxsinks dead-letters sends it from the same configuration)",
            )
        if not self.authorized(request):
            return _unauthorized()
        return None

    def _reader_refusal(self, request: web.Request) -> web.Response | None:
        """Why a read of /metrics or /debug/vars is refused, or ``None``."""
        if self.token is None or self.open_metrics or self.authorized(request):
            return None
        return _unauthorized()

    @staticmethod
    def _content_type_problem(request: web.Request) -> str | None:
        expected = ", ".join(sorted(INGEST_MEDIA_TYPES))
        if "Content-Type" not in request.headers:
            return f"no Content-Type; expected one of {expected}"
        if request.content_type not in INGEST_MEDIA_TYPES:
            given = request.headers["Content-Type"]
            return f"unsupported Content-Type {given!r}; expected one of {expected}"
        charset = request.charset
        if charset is not None and charset.lower() not in _UTF8:
            return f"unsupported charset {charset!r}: envelopes are UTF-8 JSON"
        return None

    def _too_large(self, length: int | None) -> web.Response:
        size = "" if length is None else f" of {length} bytes"
        return _error(
            413, f"body{size} is over the limit of {self.max_body} bytes (ingest.max_body)"
        )

    async def list_dead_letters(self, request: web.Request) -> web.Response:
        refusal = self._admin_refusal(request)
        if refusal is not None:
            return refusal
        endpoint = request.query.get("endpoint") or None
        since = _since(request.query.get("since"))
        if isinstance(since, web.Response):
            return since
        try:
            records = await self.relay.dead_letters(endpoint, since)
        except RuntimeError as exc:
            return _error(409, str(exc))
        rows = []
        for record in records:
            row = record.to_dict()
            row["error"] = redact_text(row["error"])  # kept by an older version, perhaps
            rows.append(row)
        return web.json_response({"dead_letters": rows}, dumps=_dumps)

    async def replay_dead_letters(self, request: web.Request) -> web.Response:
        refusal = self._admin_refusal(request)
        if refusal is not None:
            return refusal
        if request.content_type != "application/json":
            # an HTML form cannot send application/json: a page in a browser cannot replay
            return _error(
                415,
                "send the parameters as a JSON body with Content-Type: application/json: "
                '{"endpoint": "name", "since": unix seconds} ({} for every dead letter)',
            )
        body = await self._read(request, limit=_MAX_ADMIN_BODY)
        if isinstance(body, web.Response):
            return body
        try:
            parameters = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            return _error(400, "the body is not JSON")
        if not isinstance(parameters, dict) or not set(parameters) <= {"endpoint", "since"}:
            return _error(400, 'expected a JSON object with "endpoint" and/or "since"')
        endpoint = parameters.get("endpoint") or None
        if endpoint is not None and not isinstance(endpoint, str):
            return _error(400, "endpoint must be a string")
        since = _since(parameters.get("since"))
        if isinstance(since, web.Response):
            return since
        try:
            replayed = await self.relay.replay(endpoint, since)
        except RuntimeError as exc:
            return _error(409, str(exc))
        return web.json_response({"replayed": replayed})

    async def healthz(self, _: web.Request) -> web.Response:
        if not self.relay.accepting:
            return web.Response(status=503, text="stopping")
        problem = await self.relay.store_problem()
        if problem is not None:
            return web.Response(status=503, text=f"store cannot write: {problem}")
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        refusal = self._reader_refusal(request)
        if refusal is not None:
            return refusal
        try:
            from .prometheus import exposition
        except ImportError as exc:
            return web.Response(status=501, text=f"{exc}\n")
        guard = self.guard
        lines = [
            "# HELP rxsinks_ingest_requests_total Requests to POST /events, by status code.",
            "# TYPE rxsinks_ingest_requests_total counter",
            *(
                f'rxsinks_ingest_requests_total{{code="{code}"}} {count}'
                for code, count in sorted(self.requests.items())
            ),
            "# HELP rxsinks_ingest_events_total Events accepted by POST /events.",
            "# TYPE rxsinks_ingest_events_total counter",
            f"rxsinks_ingest_events_total {self.accepted_events}",
            "# HELP rxsinks_ingest_connections Connections open to the ingest.",
            "# TYPE rxsinks_ingest_connections gauge",
            f"rxsinks_ingest_connections {guard.open}",
            "# HELP rxsinks_ingest_connections_closed_total Connections the ingest closed or "
            "refused, by reason.",
            "# TYPE rxsinks_ingest_connections_closed_total counter",
            *(
                f'rxsinks_ingest_connections_closed_total{{reason="{reason}"}} {count}'
                for reason, count in sorted(guard.closed.items())
            ),
        ]
        body = exposition(self.relay.endpoints) + ("\n".join(lines) + "\n").encode()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def debug_vars(self, request: web.Request) -> web.Response:
        refusal = self._reader_refusal(request)
        if refusal is not None:
            return refusal
        entries: list[dict[str, Any]] = []
        for config, endpoint in zip(self.relay.endpoint_configs, self.relay.endpoints, strict=True):
            snapshot = endpoint.metrics()
            metrics = snapshot.registry_dict()
            metrics.update(
                DeadLetters=snapshot.dead_letters,
                Dropped=snapshot.dropped,
                Breaker=snapshot.breaker,
                Disabled=snapshot.disabled,
                LastError=redact_text(snapshot.last_error),
                DeliveredBlocks=snapshot.delivered_blocks,
                LatencyMax=snapshot.latency_max,
            )
            entries.append(
                {
                    "name": config.name,
                    "url": redact_url(config.url),
                    "EndpointConfig": config.redacted(),
                    "Metrics": metrics,
                }
            )
        document = {"registry": {"notifications": {"endpoints": entries}}}
        return web.json_response(document, dumps=_dumps)


def _unauthorized() -> web.Response:
    return _error(
        401,
        "missing or wrong token: send 'Authorization: Bearer <token>'",
        **{"WWW-Authenticate": 'Bearer realm="rxsinks"'},
    )


def _since(value: object) -> float | web.Response | None:
    """A ``since`` parameter as unix seconds, or the 400 answer."""
    if value is None:
        return None
    try:
        seconds = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds):
        return _error(400, "since must be unix seconds")
    return seconds


def _id_problem(events: Sequence[Event]) -> str | None:
    """Why an event of the envelope is refused for its ``id``, or ``None``.

    The id is forwarded as the ``webhook-id`` header of a signed endpoint (when it is safe to)
    and shown in logs and the CLI: a line break or NUL in it, or kilobytes of it, is refused
    here rather than carried into the store.
    """
    for index, event in enumerate(events):
        value = event.raw.get("id")
        if value is None:
            continue
        if not isinstance(value, str):
            return f"events[{index}].id must be a string, got {type(value).__name__}"
        if len(value) > MAX_EVENT_ID:
            return (
                f"events[{index}].id is {len(value)} characters long; "
                f"at most {MAX_EVENT_ID} are accepted"
            )
        if not value.isprintable():
            return f"events[{index}].id holds control or separator characters (line breaks...)"
    return None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


INGEST: Final = web.AppKey("rxsinks_ingest", _Ingest)
"""The app's ingest: its counters and its token check (what the operator's page builds on)."""


def ingest_app(relay: Relay) -> web.Application:
    """The ``aiohttp.web`` application of a relay's ingest (see the module docstring).

    Its :class:`ConnectionGuard` is ``app[GUARD]``: serve the app through a
    :class:`GuardedSite` with it.

    Args:
        relay: where accepted events go, and whose endpoints are reported.
    """
    ingest = _Ingest(relay)
    # client_max_size makes aiohttp refuse a longer body however it is sent (chunked too)
    app = web.Application(
        client_max_size=relay.config.ingest.max_body,
        middlewares=[ingest.guard.middleware, _json_errors],
    )
    app[GUARD] = ingest.guard
    app.router.add_post("/events", ingest.post_events)
    app.router.add_get("/healthz", ingest.healthz)
    app.router.add_get("/metrics", ingest.metrics)
    app.router.add_get("/debug/vars", ingest.debug_vars)
    app.router.add_get("/dead-letters", ingest.list_dead_letters)
    app.router.add_post("/dead-letters/replay", ingest.replay_dead_letters)
    app[INGEST] = ingest
    return app


async def post_events(
    url: str,
    events: Sequence[Event],
    *,
    token: str | None = None,
    batch: int = 1,
    content_type: str = MEDIA_TYPE_V1,
    timeout: float = 10.0,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """POST events to an ingest in envelopes of at most ``batch`` events, in order.

    Each envelope is sent once, after the previous one was answered: the order is kept and
    nothing is sent twice.

    Args:
        url: the ingest's ``/events`` URL.
        events: what to send.
        token: sent as ``Authorization: Bearer <token>`` when given.
        batch: events per request (1: one per request, as the registry sends them).
        content_type: the envelopes' media type.
        timeout: seconds for each request.
        rate: at most this many events per second (``None``: as fast as answers come).
        on_progress: called with the number of events of each accepted envelope.

    Returns:
        How many events were accepted (all of them).

    Raises:
        DeliveryError: a request failed (no answer, or a status other than 2xx/3xx); the
            message says why, and a note says how many events were accepted before.
        ValueError: ``batch`` < 1, ``rate`` <= 0, or a bad URL or token.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be a positive number of events per second, got {rate}")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    options = WebhookOptions(
        headers=headers, timeout=timeout, content_type=content_type, redirects="none"
    )
    sink = WebhookSink(url, options, name="ingest")
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for start in range(0, len(events), batch):
            block = events[start : start + batch]
            if rate is not None:
                # paced against the start, not per request, so slow answers do not add up
                ahead = started + sent / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            try:
                await sink.send(block)
            except DeliveryError as exc:
                exc.add_note(f"{sent} of {len(events)} events were accepted before this request")
                raise
            sent += len(block)
            if on_progress is not None:
                on_progress(len(block))
    finally:
        await sink.aclose()
    return sent
