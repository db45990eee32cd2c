"""The operator's page and its JSON API, served by the relay's ingest app.

Routes (auth: see :mod:`rxsinks._service.ui._auth`; every JSON error is ``{"error": "..."}``):

``GET /`` and ``GET /ui``
    ``/`` redirects to ``/ui``, the overview: the ingest panel and one row per endpoint,
    refreshed every 2 s from the API by a small script. Without credentials: the login form
    (401).
``GET /ui/endpoints/{name}``
    One endpoint: its figures, last attempts, dead letters with replay, effective configuration.
``POST /ui/login``, ``POST /ui/logout``
    The login form posts ``token``; a right one sets the session cookie and redirects to the
    page. Logout is a JSON POST with the CSRF header; it clears the cookie.
``GET /ui/static/{file}``
    The page's script and style sheet (no secret in them; open).
``GET /api/endpoints``
    A JSON list, one object per endpoint in configuration order (see :meth:`OperatorUI.row`).
    ``?series=0`` leaves the sparkline samples out.
``GET /api/endpoints/{name}``
    One object: the row's fields plus ``attempts`` (the last ones, newest first), ``config``
    (the effective configuration, redacted) and ``dead_letters_available`` with
    ``dead_letters_note``.
``GET /api/endpoints/{name}/dead-letters?limit=N``
    The store's dead letters of the endpoint, oldest first (at most ``limit``, default 500,
    at most 10,000): ``{"endpoint", "replayable", "truncated", "dead_letters": [...]}``. Holds
    event data: needs the token even when the page is open (403), like ``/dead-letters``.
``POST /api/endpoints/{name}/replay``
    Body ``{"all": true}`` or ``{"ids": [1, 2]}`` (ids from the dead-letters list), as
    ``application/json``; answers ``{"replayed": n}``; 409 without a durable store. Needs the
    token, and the CSRF header when authenticated by the cookie.
``GET /api/ingest``
    The ingest panel: version, instance, uptime, accepted events and rate, requests by status,
    store kind, place and size; with Redis, the live instances and the endpoints each holds.

Nothing leaves without redaction: URLs through :func:`~rxsinks._redact.redact_url`, the
configuration through its ``redacted()`` view, every free text (errors, reasons) through
:func:`~rxsinks._redact.redact_text` and then a scrubber that masks any configured secret
value (token, signing secrets, secret header values, URL credentials) should a receiver have
echoed one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from html import escape
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qsl, quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

from ..._endpoint import Endpoint
from ..._exceptions import StoreError
from ..._redact import redact_text, redact_url
from ..._version import __version__
from ..config import REDACTED, EndpointConfig, RelayConfig
from ._auth import COOKIE, SESSION_SECONDS, Access, Auth, same_origin_problem
from ._history import HISTORY, RESOLUTION, History

if TYPE_CHECKING:
    from ..ingest import ConnectionGuard, Relay

__all__ = ["OPERATOR_UI", "IngestCounters", "OperatorUI", "setup_ui"]

log = logging.getLogger("rxsinks.ui")

REFRESH_MS: Final = 2000
"""How often the page asks the API for fresh figures."""
DEAD_LETTER_LIMIT: Final = 500
"""Dead letters listed by default."""
MAX_DEAD_LETTERS: Final = 10_000
"""The most dead letters one request lists, and ids one replay takes."""

_MAX_BODY = 256 * 1024  # a replay of 10,000 ids is about 70 KB of JSON
_MIN_SECRET = 4  # shorter configured values are not masked in free text (they would mask words)
_LOGIN_FAILED_DELAY = 0.25  # seconds, slowing a guesser on one connection down
_REDIS_TIMEOUT = 1.5
_ASSETS = frozenset({"ui.js", "ui.css"})
_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # (no-referrer would make Origin "null")
    "Cache-Control": "no-store",
}
_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class IngestCounters(Protocol):
    """What the page reads of the ingest: its counters and connection guard."""

    requests: Counter[int]
    accepted_events: int
    guard: ConnectionGuard


class Secrets:
    """Every secret value of a configuration, to mask in free text (see the module docstring).

    Args:
        config: the relay's configuration.
    """

    def __init__(self, config: RelayConfig) -> None:
        values: set[str] = set()
        if config.ingest.token is not None:
            values.add(config.ingest.token)
        if config.store.url is not None:
            values |= _url_secrets(config.store.url)
        for endpoint in config.endpoints:
            values |= _url_secrets(endpoint.url)
            secret = endpoint.webhook.secret
            if secret is not None:
                values.add(secret.text)
            headers = endpoint.webhook.headers
            for name, value in headers.items:
                if headers.is_secret(name):
                    values.add(value)
                    # "Bearer abc": the credential alone may be echoed too
                    values.update(part for part in value.split() if len(part) >= 8)
        # longest first: a secret that contains another is masked whole
        self._values = sorted((v for v in values if len(v) >= _MIN_SECRET), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with URLs redacted and every configured secret value masked."""
        text = redact_text(text)
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


def _url_secrets(url: str) -> set[str]:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return set()
    found = {part for part in (parsed.raw_user, parsed.raw_password, parsed.user) if part}
    if parsed.password:
        found.add(parsed.password)
    for _, value in parse_qsl(parsed.raw_query_string, keep_blank_values=False):
        found.add(value)
    return found


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


class OperatorUI:
    """The page's state and handlers, bound to one relay (see the module docstring).

    Args:
        relay: the relay whose endpoints are shown.
        ingest: the ingest's counters.
        bearer: the ingest's token check of a request (``Authorization: Bearer``).
    """

    def __init__(
        self, relay: Relay, ingest: IngestCounters, bearer: Callable[[web.Request], bool]
    ) -> None:
        self.relay = relay
        self.ingest = ingest
        self.auth = Auth(relay.config.ingest.token, bearer)
        self.secrets = Secrets(relay.config)
        self.configs: dict[str, EndpointConfig] = {c.name: c for c in relay.endpoint_configs}
        self.history = History(self.configs, self.secrets.scrub)
        self.history.watch(relay.endpoints)
        self.started = time.time()
        self.sampled_at: float | None = None
        self._sampler: asyncio.Task[None] | None = None
        # with Redis: who holds which lease and each endpoint's backlog, read by the sampler
        self.redis_view: dict[str, Any] | None = None
        self._store_backlogs: dict[str, int] = {}

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, _: web.Application) -> None:
        """Start sampling (the ingest app's startup)."""
        self.started = time.time()
        self._sampler = asyncio.ensure_future(self._sample_regularly())

    async def stop(self, _: web.Application) -> None:
        """Stop sampling (the ingest app's cleanup)."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None

    async def _sample_regularly(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            # on a fixed grid, so samples stay RESOLUTION apart however long one takes
            next_at += RESOLUTION
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                await self.sample()
            except Exception:  # a failed sample leaves a gap; the page goes on
                log.exception("operator page: sampling failed")

    async def sample(self) -> None:
        """Close the current samples (the sampler calls this every :data:`RESOLUTION` s)."""
        if self.relay.leases is not None:
            await self._read_redis()
        endpoints = self.relay.endpoints
        self.history.watch(endpoints)
        held = set(self.relay.delivering)
        pending: dict[str, int | None] = {
            e.name: e.pending if e.name in held else self._store_backlogs.get(e.name)
            for e in endpoints
        }
        self.history.sample(pending, self.ingest.accepted_events)
        self.sampled_at = time.time()

    async def _read_redis(self) -> None:
        leases = self.relay.leases
        store = self.relay.store
        assert leases is not None
        try:
            instances, holders = await leases.holders()
            backlogs = []
            if store is not None and hasattr(store, "backlogs"):
                async with asyncio.timeout(_REDIS_TIMEOUT):
                    backlogs = await store.backlogs()
        except Exception as exc:  # Redis away: the panel says so, the page goes on
            view = dict(self.redis_view or {})
            view["error"] = self.secrets.scrub(f"cannot read the leases: {exc}")
            self.redis_view = view
            return
        self._store_backlogs = {backlog.endpoint: backlog.pending for backlog in backlogs}
        held: dict[str, list[str]] = {instance: [] for instance in instances}
        free: list[str] = []
        for name, holder in holders.items():
            if holder is None:
                free.append(name)
            else:
                held.setdefault(holder, []).append(name)
        self.redis_view = {
            "instances": [
                {"id": instance, "self": instance == self.relay.instance_id, "endpoints": names}
                for instance, names in sorted(held.items())
            ],
            "free": free,
            "holders": holders,
            "error": None,
            "as_of": time.time(),
        }

    # -- views ---------------------------------------------------------------------------------

    def _pairs(self) -> Iterator[tuple[EndpointConfig, Endpoint]]:
        endpoints = self.relay.endpoints
        self.history.watch(endpoints)  # (an endpoint leased since the last sample)
        yield from zip(self.relay.endpoint_configs, endpoints, strict=True)

    def _find(self, name: str) -> tuple[EndpointConfig, Endpoint] | None:
        for config, endpoint in self._pairs():
            if config.name == name:
                return config, endpoint
        return None

    def row(
        self,
        config: EndpointConfig,
        endpoint: Endpoint,
        held: frozenset[str] | set[str],
        *,
        series: bool = True,
    ) -> dict[str, Any]:
        """One endpoint as ``GET /api/endpoints`` lists it.

        Fields: ``name``, ``url`` (redacted); ``state`` (``delivering``, ``breaker_open``,
        ``breaker_half_open``, ``disabled``, ``not_held``), ``state_text`` and ``since``
        (unix seconds, ``null`` when not known), ``held_by`` (Redis: the instance delivering
        for it); ``pending``; the registry's counters ``events``, ``successes``, ``failures``,
        ``errors``, ``statuses``, and ``dead_letters``, ``dropped``, ``breaker``, ``disabled``;
        ``last_success``, ``last_failure`` (unix seconds) and ``last_failure_reason``; over the
        last ``window`` seconds: ``rate`` (events delivered per second), ``p50`` and ``p99``
        (seconds from a block's first attempt to its delivery); and ``series``: ``step``
        seconds per sample, ``end`` (the last sample's time), ``pending``, ``delivered`` and
        ``failed`` per sample, oldest first.
        """
        name = config.name
        history = self.history.endpoints[name]
        snapshot = endpoint.metrics()
        is_held = name in held
        holder = None
        if self.redis_view is not None:
            holder = self.redis_view.get("holders", {}).get(name)
        if not is_held:
            state, since = "not_held", None
            text = "not held by this instance" + (f" (held by {holder})" if holder else "")
            pending: int | None = self._store_backlogs.get(name)
        else:
            pending = endpoint.pending
            if endpoint.disabled or snapshot.disabled:
                state, since = "disabled", history.disabled_since
                text = "disabled by 410 Gone"
            elif snapshot.breaker == "open":
                state, since = "breaker_open", history.open_since
                text = "breaker open"
            elif snapshot.breaker == "half_open":
                state, since = "breaker_half_open", history.open_since
                text = "breaker open, trial attempt in flight"
            else:
                state, since, text = "delivering", None, "delivering"
            if since is not None:
                text += f" since {_iso(since)}"
        row: dict[str, Any] = {
            "name": name,
            "url": redact_url(config.url),
            "state": state,
            "state_text": text,
            "since": since,
            "held_by": holder if self.relay.leases is not None else None,
            "pending": pending,
            "events": snapshot.events,
            "successes": snapshot.successes,
            "failures": snapshot.failures,
            "errors": snapshot.errors,
            "statuses": snapshot.statuses,
            "dead_letters": snapshot.dead_letters,
            "dropped": snapshot.dropped,
            "breaker": snapshot.breaker,
            "disabled": snapshot.disabled,
            "last_success": history.last_success,
            "last_failure": history.last_failure,
            "last_failure_reason": history.last_failure_reason or None,
            "window": HISTORY,
            "rate": round(history.rate(), 3),
            "p50": _round(history.latency(0.5)),
            "p99": _round(history.latency(0.99)),
        }
        if series:
            row["series"] = {"step": RESOLUTION, "end": self.sampled_at, **history.series()}
        return row

    def detail(self, config: EndpointConfig, endpoint: Endpoint) -> dict[str, Any]:
        """One endpoint as ``GET /api/endpoints/{name}`` gives it: the row, plus ``attempts``
        (newest first: ``time``, ``events``, ``status``, ``result``, ``ok``, ``duration``),
        ``config`` (redacted) and ``dead_letters_available`` / ``dead_letters_note``."""
        view = self.row(config, endpoint, set(self.relay.delivering))
        history = self.history.endpoints[config.name]
        view["attempts"] = [record.to_dict() for record in reversed(history.attempts)]
        view["config"] = config.redacted()
        available, note = self._dead_letter_access()
        view["dead_letters_available"] = available
        view["dead_letters_note"] = note
        return view

    def _dead_letter_access(self) -> tuple[bool, str | None]:
        if self.auth.open:
            return False, (
                "dead letters hold event data: listing and replaying them needs ingest.token "
                "(configure one), as the admin routes do"
            )
        if self.relay.store is None:
            return True, (
                "the memory store keeps no dead letters to replay: these are the last ones "
                "given up on in this process (configure a durable store to replay them)"
            )
        return True, None

    def ingest_view(self) -> dict[str, Any]:
        """The ingest panel as ``GET /api/ingest`` gives it."""
        now = time.time()
        relay = self.relay
        endpoints = relay.endpoints
        held = set(relay.delivering)
        requests = self.ingest.requests
        return {
            "version": __version__,
            "instance": relay.instance_id,
            "started": self.started,
            "uptime": now - self.started,
            "access": "open on loopback (no ingest.token)" if self.auth.open else "token",
            "accepted_events": self.ingest.accepted_events,
            "accepted_rate": round(self.history.accepted_rate(), 3),
            "window": HISTORY,
            "requests": {str(code): count for code, count in sorted(requests.items())},
            "rejected": {str(code): n for code, n in sorted(requests.items()) if code >= 400},
            "connections": self.ingest.guard.open,
            "endpoints": len(endpoints),
            "delivering": len(held),
            "pending": sum(e.pending for e in endpoints if e.name in held),
            "store": self._store_view(relay.config),
            "redis": None
            if relay.leases is None
            else (self.redis_view or {"instances": [], "free": [], "error": "not read yet"}),
        }

    def _store_view(self, config: RelayConfig) -> dict[str, Any]:
        store = config.store
        view: dict[str, Any] = {"kind": store.kind, "where": None, "size_bytes": None}
        if store.kind == "sqlite" and store.path is not None:
            view["where"] = store.path
            size = 0
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):  # (no -wal file between checkpoints)
                    size += os.stat(store.path + suffix).st_size
            view["size_bytes"] = size
        elif store.kind == "redis":
            view["where"] = redact_url(store.url or "")
            view["pending"] = sum(self._store_backlogs.values())
        else:
            held = self.relay.memory_held
            view["where"] = "memory"
            if held is not None:
                view["held_events"], view["size_bytes"] = held
            view["max_events"] = store.memory_max_events
            view["max_bytes"] = store.memory_max_bytes
        return view

    # -- API handlers --------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> tuple[Access | None, web.Response | None]:
        access = self.auth.check(request)
        if access is not None:
            return access, None
        if self.auth.open:
            return None, _error(
                403,
                "the operator page is open without ingest.token only to loopback clients "
                "addressing the relay by a loopback name (127.0.0.1, [::1], localhost)",
            )
        return None, _error(
            401,
            "missing or wrong token: send 'Authorization: Bearer <token>' or log in at /ui",
            **{"WWW-Authenticate": 'Bearer realm="rxsinks"'},
        )

    async def api_endpoints(self, request: web.Request) -> web.Response:
        _, refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        series = request.query.get("series", "1") not in ("0", "false", "no")
        held = set(self.relay.delivering)
        rows = [self.row(c, e, held, series=series) for c, e in self._pairs()]
        return _json(rows)

    async def api_endpoint(self, request: web.Request) -> web.Response:
        _, refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        found = self._find(request.match_info["name"])
        if found is None:
            return _no_endpoint(request.match_info["name"])
        return _json(self.detail(*found))

    async def api_ingest(self, request: web.Request) -> web.Response:
        _, refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return _json(self.ingest_view())

    async def api_dead_letters(self, request: web.Request) -> web.Response:
        access, refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        name = request.match_info["name"]
        found = self._find(name)
        if found is None:
            return _no_endpoint(name)
        available, note = self._dead_letter_access()
        if not available or access is Access.OPEN:
            return _error(403, note or "dead letters need ingest.token")
        limit = _limit(request.query.get("limit"))
        if isinstance(limit, web.Response):
            return limit
        store = self.relay.store
        if store is None:
            letters = found[1].recent_dead_letters
            rows = [
                self._letter_row(None, None, event, str(letter.error), letter.attempts, None)
                for letter in letters
                for event in letter.events
            ]
            return _json(
                {
                    "endpoint": name,
                    "replayable": False,
                    "note": note,
                    "truncated": len(rows) > limit,
                    "dead_letters": rows[-limit:],
                }
            )
        try:
            records = await store.dead_letters(name, None, limit + 1)
        except StoreError as exc:
            return _error(503, self.secrets.scrub(f"cannot read the dead letters: {exc}"))
        rows = [
            self._letter_row(r.id, r.seq, r.event, r.error, r.attempts, r.time)
            for r in records[:limit]
        ]
        return _json(
            {
                "endpoint": name,
                "replayable": True,
                "note": None,
                "truncated": len(records) > limit,
                "dead_letters": rows,
            }
        )

    def _letter_row(
        self,
        ident: int | None,
        seq: int | None,
        event: Any,
        error: str,
        attempts: int,
        moment: float | None,
    ) -> dict[str, Any]:
        target = event.target
        return {
            "id": ident,
            "seq": seq,
            "event_id": event.id,
            "action": event.action,
            "repository": target.repository,
            "tag": target.tag,
            "reason": self.secrets.scrub(error),
            "attempts": attempts,
            "time": moment,
        }

    async def api_replay(self, request: web.Request) -> web.Response:
        access, refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        assert access is not None
        if access is Access.OPEN:
            return _error(403, "replay needs ingest.token (configure one), as the admin routes do")
        problem = self.auth.write_refusal(request, access)
        if problem is not None:
            return _error(415 if "Content-Type" in problem else 403, problem)
        name = request.match_info["name"]
        if self._find(name) is None:
            return _no_endpoint(name)
        body = await _read(request, self.relay.config.ingest.body_timeout)
        if isinstance(body, web.Response):
            return body
        ids = _replay_ids(body)
        if isinstance(ids, web.Response):
            return ids
        try:
            replayed = await self.relay.replay(name, ids=ids)
        except RuntimeError as exc:
            return _error(409, str(exc))
        except StoreError as exc:
            return _error(503, self.secrets.scrub(f"cannot replay: {exc}"))
        log.info(
            "operator page: replayed %d dead letter(s) of endpoint %s",
            replayed,
            name,
            extra={"endpoint": name},
        )
        return _json({"replayed": replayed})

    # -- page handlers -------------------------------------------------------------------------

    async def root(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/ui")

    async def page_overview(self, request: web.Request) -> web.Response:
        return self._page(request, "overview", None)

    async def page_endpoint(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return self._page(request, "endpoint", name)

    def _page(self, request: web.Request, view: str, name: str | None) -> web.Response:
        access = self.auth.check(request)
        if access is None:
            if self.auth.open:
                return _html(
                    _render(
                        "message.html",
                        title="Refused",
                        message="Without ingest.token, this page is open only to clients on "
                        "this machine that address the relay as 127.0.0.1, [::1] or localhost.",
                    ),
                    403,
                )
            return self._login(request.path_qs, None, 401)
        if name is not None and name not in self.configs:
            return _html(
                _render("message.html", title="No such endpoint", message=f"No endpoint {name!r}."),
                404,
            )
        session = self.auth.session(request) if access is Access.SESSION else None
        notice = ""
        if access is Access.OPEN:
            notice = (
                "No ingest.token is configured: this page is open to anyone on this machine "
                "(the relay listens on loopback only). Dead letters and replay need a token."
            )
        return _html(
            _render(
                f"{view}.html",
                title="rxsinks" if name is None else f"{name} · rxsinks",
                name=name or "",
                csrf="" if session is None else self.auth.csrf(session),
                access=access.value,
                notice=notice,
                version=__version__,
                refresh=str(REFRESH_MS),
            )
        )

    def _login(self, after: str, message: str | None, status: int) -> web.Response:
        return _html(
            _render("login.html", title="Log in · rxsinks", next=after, message=message or ""),
            status,
        )

    async def login(self, request: web.Request) -> web.Response:
        if self.auth.open:
            raise web.HTTPSeeOther("/ui")
        cross = same_origin_problem(request)
        if cross is not None:
            return _html(_render("message.html", title="Refused", message=cross), 403)
        body = await _read(request, self.relay.config.ingest.body_timeout, limit=8192)
        if isinstance(body, web.Response):
            return body
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        after = form.get("next", "/ui")
        if not (after == "/ui" or after.startswith("/ui/")) or "//" in after or "\\" in after:
            after = "/ui"  # only a page of ours: never an open redirect
        if not self.auth.token_matches(form.get("token", "")):
            await asyncio.sleep(_LOGIN_FAILED_DELAY)
            return self._login(after, "Wrong token.", 401)
        response = web.Response(status=303, headers={**_PAGE_HEADERS, "Location": after})
        response.set_cookie(
            COOKIE,
            self.auth.new_session(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        access, refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        assert access is not None
        problem = self.auth.write_refusal(request, access)
        if problem is not None:
            return _error(415 if "Content-Type" in problem else 403, problem)
        response = _json({"logged_out": True})
        response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in _ASSETS:
            return _error(404, "Not Found")
        body = _asset(name)
        headers = {
            "Content-Type": _ASSET_TYPES[os.path.splitext(name)[1]] + "; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        return web.Response(body=body, headers=headers)


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("assets", name).read_bytes()


def _render(template: str, **values: str) -> str:
    """An HTML template of the package with every value escaped."""
    text = _asset(template).decode("utf-8")
    return Template(text).substitute({k: escape(v, quote=True) for k, v in values.items()})


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps, headers=_API_HEADERS)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, dumps=_dumps, headers={**_API_HEADERS, **headers}
    )


def _no_endpoint(name: str) -> web.Response:
    return _error(404, f"no endpoint named {name!r}")


def _limit(value: str | None) -> int | web.Response:
    if value is None:
        return DEAD_LETTER_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_DEAD_LETTERS:
        return _error(400, f"limit must be a whole number from 1 to {MAX_DEAD_LETTERS}")
    return limit


async def _read(
    request: web.Request, timeout: float, limit: int = _MAX_BODY
) -> bytes | web.Response:
    """A small request body, or the error answer."""
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"body over the limit of {limit} bytes")
    try:
        async with asyncio.timeout(timeout):
            body = await request.content.read(limit + 1)
    except TimeoutError:
        return _error(408, f"the body did not arrive within {timeout:g} s")
    except (RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
        # a bad Content-Encoding, a broken chunk, a cut upload: the client's fault
        return _error(400, f"the body cannot be read: {type(exc).__name__}")
    if len(body) > limit:
        return _error(413, f"body over the limit of {limit} bytes")
    return body


def _replay_ids(body: bytes) -> list[int] | web.Response | None:
    """The ids a replay body asks for (``None``: all), or the 400 answer."""
    usage = 'expected {"all": true} or {"ids": [dead letter ids]}'
    try:
        parameters = json.loads(body or b"null")
    except (ValueError, RecursionError):
        return _error(400, f"the body is not JSON; {usage}")
    if not isinstance(parameters, dict) or len(parameters) != 1:
        return _error(400, usage)
    if "all" in parameters:
        if parameters["all"] is not True:
            return _error(400, usage)
        return None
    ids = parameters.get("ids")
    if not isinstance(ids, list) or not ids:
        return _error(400, f"ids must be a non-empty list; {usage}")
    if len(ids) > MAX_DEAD_LETTERS:
        return _error(400, f"at most {MAX_DEAD_LETTERS} ids at once")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids):
        return _error(400, "ids must be positive whole numbers (from the dead-letters list)")
    return ids


OPERATOR_UI: Final = web.AppKey("rxsinks_operator_ui", OperatorUI)
"""Where :func:`setup_ui` keeps the page's :class:`OperatorUI` in the ingest app."""


def setup_ui(
    app: web.Application,
    relay: Relay,
    ingest: IngestCounters,
    bearer: Callable[[web.Request], bool],
) -> OperatorUI:
    """Add the operator's page and its API to a relay's ingest app (see the module docstring).

    Args:
        app: the ingest app, not yet started.
        relay: the relay.
        ingest: the ingest's counters.
        bearer: the ingest's check of ``Authorization: Bearer <token>``.
    """
    ui = OperatorUI(relay, ingest, bearer)
    app[OPERATOR_UI] = ui
    app.on_startup.append(ui.start)
    app.on_cleanup.append(ui.stop)
    router = app.router
    router.add_get("/", ui.root)
    router.add_get("/ui", ui.page_overview)
    router.add_get("/ui/endpoints/{name}", ui.page_endpoint)
    router.add_post("/ui/login", ui.login)
    router.add_post("/ui/logout", ui.logout)
    router.add_get("/ui/static/{file}", ui.static)
    router.add_get("/api/endpoints", ui.api_endpoints)
    router.add_get("/api/endpoints/{name}", ui.api_endpoint)
    router.add_get("/api/endpoints/{name}/dead-letters", ui.api_dead_letters)
    router.add_post("/api/endpoints/{name}/replay", ui.api_replay)
    router.add_get("/api/ingest", ui.api_ingest)
    return ui


def page_url(ingest_url: str) -> str:
    """The page's URL from the ingest's ``.../events`` URL."""
    base = ingest_url.rsplit("/events", 1)[0]
    return f"{base}/ui"


def endpoint_path(name: str) -> str:
    """The detail page's path of an endpoint (its name quoted, ``/`` included)."""
    return "/ui/endpoints/" + quote(name, safe="")
