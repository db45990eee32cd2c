"""The ingest protocol: the ``aiohttp.web`` app the registry posts to, and a client for it.

Routes of :func:`ingest_app`:

``POST /events``
    A registry envelope ``{"events": [...]}`` with the content type
    ``application/vnd.docker.distribution.events.v1+json``, ``...v2+json`` or
    ``application/json`` (a ``charset`` parameter, if any, must be UTF-8). Answers, in this order
    of checks: 503 while the relay stops; 401 without ``Authorization: Bearer <token>`` (when a
    token is configured; compared in constant time); 415 for another content type; 413 for a
    body over ``ingest.max_body`` (announced or streamed); 400 for malformed JSON or an envelope
    that is not ``{"events": [objects]}``; otherwise 200 ``{"accepted": n}``, sent only after
    :meth:`~rxsinks._relay.Relay.accept` returned. Errors are JSON: ``{"error": "..."}``, the
    message naming what is wrong. Bad input never gets a 5xx.
``GET /healthz``
    200 ``ok`` while accepting, 503 ``stopping`` once the relay stops.
``GET /metrics``
    Prometheus text (:func:`rxsinks._prometheus.exposition`: the registry's metric names per
    endpoint and rxsinks' own), plus the ingest's request and event counters.
``GET /debug/vars``
    The registry's expvar JSON: ``{"registry": {"notifications": {"endpoints": [...]}}}``, each
    endpoint with ``name``, ``url`` (credentials stripped), ``EndpointConfig`` (secrets
    redacted) and ``Metrics`` (the registry's counters, then rxsinks' in the same style).
``GET /dead-letters?endpoint=N&since=UNIX`` and ``POST /dead-letters/replay?endpoint=N&since=UNIX``
    The durable store's dead letters, and replaying them into their endpoints' queues (what
    ``rxsinks dead-letters`` uses while the relay runs); token-protected like ``/events``;
    409 when the relay has no durable store.

:func:`post_events` is the client side (``rxsinks send`` and the demo): it posts events in
envelopes through the library's own :class:`~rxsinks.WebhookSink`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from ._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event, decode_envelope
from ._exceptions import DeliveryError, EnvelopeError, SinkClosedError
from ._store import StoreError
from ._webhook import WebhookSink

if TYPE_CHECKING:
    from ._relay import Relay

__all__ = ["INGEST_MEDIA_TYPES", "METRICS_CONTENT_TYPE", "ingest_app", "post_events"]

log = logging.getLogger("rxsinks.ingest")

INGEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_V1, MEDIA_TYPE_V2, "application/json"})
"""Content types ``POST /events`` accepts."""

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's content type."""

_UTF8 = frozenset({"utf-8", "utf8"})

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


class _Ingest:
    """The handlers, bound to one relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        ingest = relay.config.ingest
        self.token = None if ingest.token is None else ingest.token.encode("utf-8")
        self.max_body = ingest.max_body
        self.requests: Counter[int] = Counter()
        self.accepted_events = 0

    async def post_events(self, request: web.Request) -> web.Response:
        response = await self._post_events(request)
        self.requests[response.status] += 1
        return response

    async def _post_events(self, request: web.Request) -> web.Response:
        if not self.relay.accepting:
            return _error(503, "the relay is stopping; retry later", **{"Retry-After": "5"})
        if self.token is not None and not self._authorized(request):
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
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # a chunked body (no Content-Length) that grew past client_max_size
            return self._too_large(None)
        except HttpProcessingError as exc:
            return _error(400, f"malformed request body: {exc.message}")
        try:
            events = decode_envelope(body)
        except EnvelopeError as exc:
            return _error(400, str(exc))
        except RecursionError:
            return _error(400, "envelope is not valid JSON: nested too deeply")
        try:
            await self.relay.accept(events)
        except SinkClosedError:
            return _error(503, "the relay is stopping; retry later", **{"Retry-After": "5"})
        except StoreError as exc:
            # nothing of this request was committed: the registry retries it
            log.error("store refused %d event(s): %s", len(events), exc)
            return _error(503, f"cannot store the events: {exc}", **{"Retry-After": "5"})
        self.accepted_events += len(events)
        return web.json_response({"accepted": len(events)})

    def _authorized(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        # header values come decoded as UTF-8 with surrogateescape: this gives the bytes back
        given = credentials.strip().encode("utf-8", "surrogateescape")
        # compared even when the scheme is wrong, so timing says nothing about which part failed
        same = hmac.compare_digest(given, self.token)
        return same and scheme.lower() == "bearer"

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
        if self.token is not None and not self._authorized(request):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        endpoint = request.query.get("endpoint") or None
        try:
            since = float(request.query["since"]) if "since" in request.query else None
            records = await self.relay.dead_letters(endpoint, since)
        except ValueError:
            return _error(400, "since must be unix seconds")
        except RuntimeError as exc:
            return _error(409, str(exc))
        return web.json_response(
            {"dead_letters": [record.to_dict() for record in records]}, dumps=_dumps
        )

    async def replay_dead_letters(self, request: web.Request) -> web.Response:
        if self.token is not None and not self._authorized(request):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        endpoint = request.query.get("endpoint") or None
        try:
            since = float(request.query["since"]) if "since" in request.query else None
            replayed = await self.relay.replay(endpoint, since)
        except ValueError:
            return _error(400, "since must be unix seconds")
        except RuntimeError as exc:
            return _error(409, str(exc))
        return web.json_response({"replayed": replayed})

    async def healthz(self, _: web.Request) -> web.Response:
        if self.relay.accepting:
            return web.Response(text="ok")
        return web.Response(status=503, text="stopping")

    async def metrics(self, _: web.Request) -> web.Response:
        try:
            from ._prometheus import exposition
        except ImportError as exc:
            return web.Response(status=501, text=f"{exc}\n")
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
        ]
        body = exposition(self.relay.endpoints) + ("\n".join(lines) + "\n").encode()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def debug_vars(self, _: web.Request) -> web.Response:
        entries: list[dict[str, Any]] = []
        for config, endpoint in zip(self.relay.endpoint_configs, self.relay.endpoints, strict=True):
            snapshot = endpoint.metrics()
            metrics = snapshot.registry_dict()
            metrics.update(
                DeadLetters=snapshot.dead_letters,
                Dropped=snapshot.dropped,
                Breaker=snapshot.breaker,
                Disabled=snapshot.disabled,
                LastError=snapshot.last_error,
                DeliveredBlocks=snapshot.delivered_blocks,
                LatencyMax=snapshot.latency_max,
            )
            entries.append(
                {
                    "name": config.name,
                    "url": _without_credentials(config.url),
                    "EndpointConfig": config.redacted(),
                    "Metrics": metrics,
                }
            )
        document = {"registry": {"notifications": {"endpoints": entries}}}
        return web.json_response(document, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _without_credentials(url: str) -> str:
    try:
        return str(URL(url).with_user(None))
    except (ValueError, TypeError):
        return url


def ingest_app(relay: Relay) -> web.Application:
    """The ``aiohttp.web`` application of a relay's ingest (see the module docstring).

    Args:
        relay: where accepted events go, and whose endpoints are reported.
    """
    # client_max_size makes aiohttp refuse a longer body however it is sent (chunked too)
    app = web.Application(client_max_size=relay.config.ingest.max_body, middlewares=[_json_errors])
    ingest = _Ingest(relay)
    app.router.add_post("/events", ingest.post_events)
    app.router.add_get("/healthz", ingest.healthz)
    app.router.add_get("/metrics", ingest.metrics)
    app.router.add_get("/debug/vars", ingest.debug_vars)
    app.router.add_get("/dead-letters", ingest.list_dead_letters)
    app.router.add_post("/dead-letters/replay", ingest.replay_dead_letters)
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
    sink = WebhookSink(
        url,
        name="ingest",
        headers=headers,
        timeout=timeout,
        content_type=content_type,
        redirects="none",
    )
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
