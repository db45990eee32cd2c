"""The HTTP sink: POST each block of events to a webhook endpoint with aiohttp.

This is the only module of rxsinks that imports aiohttp's client. A :class:`WebhookSink` is a
sink for :func:`~rxsinks.deliver`: its :meth:`~WebhookSink.deliver` turns a block (a sequence of
:class:`~rxsinks.Event`) into one POST of ``{"events": [...]}`` with every event written exactly
as received, and raises when the receiver did not take it.

What counts as success, like the registry: a *final* status of 200..399. Redirects are handled
without aiohttp's own redirect logic, because 301/302/303 turn a POST into a GET without its body;
``redirects=`` chooses:

``"safe"`` (the default)
    307 and 308 with a ``Location`` are followed, re-POSTing the same body and headers (the
    signature too: it covers the body, not the URL), up to :data:`MAX_REDIRECTS` hops within the
    one ``timeout``. When the new URL has another origin (scheme, host, port), the credential
    headers (those redacted in logs) are not sent there. 301, 302 and 303 *with* a ``Location``
    are failures: :class:`~rxsinks.WebhookStatusError` with a note saying to point the endpoint at
    the new URL; so is a 307/308 from ``https`` to ``http`` (the body and its signature would go
    in cleartext). Any 3xx *without* a ``Location`` is a success, as in the registry.
``"none"``
    No redirect is followed: every 3xx is a success.

Failures, all subclasses of :class:`~rxsinks.DeliveryError` naming the endpoint and the block:

* no response (DNS, refused, reset, TLS, timeout): :class:`~rxsinks.DeliveryError` whose
  message names the cause, chained to aiohttp's exception;
* ``410 Gone``: the endpoint asked never to be called again. The sink disables itself, logs one
  WARNING, and fails this and every later block with :class:`~rxsinks.EndpointDisabledError`
  without sending it;
* a status listed in ``permanent_statuses``: :class:`~rxsinks.PermanentDeliveryError`;
* a request that can never be sent (a block that cannot be encoded, a header value aiohttp
  refuses): :class:`~rxsinks.PermanentDeliveryError` too, at once, without retries;
* any other status: :class:`~rxsinks.WebhookStatusError`; for 429 and 503 its ``retry_after``
  holds the ``Retry-After`` delay in seconds (delta-seconds or HTTP-date), capped.

Connections: every sink on one event loop shares one :class:`aiohttp.ClientSession` (keep-alive,
connection reuse; reference counted, closed with its last sink; never through the environment's
proxies). Response bodies are read and released, so a connection goes back to the pool after
each request (the registry leaked them, distribution#473), but at most
:data:`MAX_RESPONSE_BYTES` of a body is read (past it the connection is closed), and no
compressed answer is asked for nor inflated. URLs in errors and logs have their user info and
query values hidden (:func:`~rxsinks._redact.redact_url`).
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.metadata
import logging
import math
import os
import re
import socket
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any, Final, Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from rxsinks._event import MEDIA_TYPE_V1, Event, encode_envelope
from rxsinks._exceptions import (
    SINK_CLOSED,
    DeliveryError,
    EndpointDisabledError,
    PermanentDeliveryError,
    WebhookStatusError,
)
from rxsinks._http.signing import message_id, parse_secret, signature_headers
from rxsinks._http.tls import PathArg, client_ssl
from rxsinks._metrics import status_phrase
from rxsinks._redact import redact_text, redact_url

__all__ = [
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "Attempt",
    "HeaderValues",
    "RedirectPolicy",
    "WebhookSink",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

RedirectPolicy = Literal["safe", "none"]
"""How a :class:`WebhookSink` treats 3xx answers; see the module docstring."""

HeaderValues = str | Iterable[str]
"""One header value, or several (each sent as its own header line, as the registry does)."""

MAX_REDIRECTS: Final = 10
"""How many 307/308 hops one attempt follows before it fails."""

_REDACTED: Final = "<redacted>"

# Always sensitive, whatever the configuration says: they carry credentials.
_SENSITIVE_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
_SIGNATURE_HEADERS: Final = ("webhook-id", "webhook-timestamp", "webhook-signature")
# Set by the sink itself; a configured value would clash with the body it sends.
_RESERVED_HEADERS: Final = frozenset({"content-type", "content-length", "transfer-encoding"})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DELTA_SECONDS = re.compile(r"[0-9]+")
# A Retry-After beyond this many seconds (about 31 years) is read as this many: the caller caps
# it anyway, and a float of a 400-digit number overflows.
MAX_RETRY_AFTER: Final = 1_000_000_000.0
# The start of a failed response's body goes into the error's notes, to show why it failed.
_BODY_NOTE_BYTES: Final = 200
_READ_CHUNK: Final = 65536
# The most bytes read from one response body: a receiver answers with a status, not a download.
# Past it the connection is closed instead of drained (a pool connection is cheaper than reading
# a hostile or runaway body to its end).
MAX_RESPONSE_BYTES: Final = 1024 * 1024
# Characters a header value may not hold: aiohttp refuses them (header injection) and would
# raise while building the request, which no retry can fix.
_FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00\r\n]")

try:
    _USER_AGENT = f"rxsinks/{importlib.metadata.version('rxsinks')}"
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _USER_AGENT = "rxsinks"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt at delivering a block, as reported to ``on_attempt``.

    Attributes:
        events: how many events the block held.
        status: the final HTTP status, or ``None`` when no response came (transport error).
        reason: the status text, e.g. ``"OK"``, ``"Temporary Redirect"`` (``""`` with no status).
        error: the failure, or ``None`` when the block was delivered.
        duration: seconds from the first byte sent to the end of the last response (all hops).
        url: the URL requested last (after redirects), with any user info redacted.
    """

    events: int
    status: int | None
    reason: str
    error: BaseException | None
    duration: float
    url: str

    @property
    def ok(self) -> bool:
        """Whether the block was delivered."""
        return self.error is None

    @property
    def status_text(self) -> str | None:
        """``"code text"`` as the registry's ``Statuses`` metric keys it (``"200 OK"``)."""
        if self.status is None:
            return None
        return f"{self.status} {self.reason}".rstrip()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 section 10.2.3).

    Args:
        value: the header value, or ``None`` when absent.
        now: the current unix time, for HTTP-dates; ``time.time()`` when ``None``.

    Returns:
        Seconds to wait (0 for a date in the past), or ``None`` when absent or unreadable.
        Never more than :data:`MAX_RETRY_AFTER`: a receiver may send any number of digits.

    Example:
        >>> parse_retry_after("120")
        120.0
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
        10.0
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        # int() of thousands of digits raises (Python's digit limit) and float() of hundreds
        # overflows: only the significant digits are read, and only up to the cap
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(int(MAX_RETRY_AFTER))):
            return MAX_RETRY_AFTER
        return min(float(int(digits)), MAX_RETRY_AFTER)
    if len(text) > 64:  # longer than any HTTP-date: not one
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:  # an HTTP-date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    current = time.time() if now is None else now
    return min(max(0.0, seconds - current), MAX_RETRY_AFTER)


def _phrase(status: int, fallback: str | None) -> str:
    # the registry's texts (Go's), so messages and Attempt.reason match the Statuses keys
    return status_phrase(status) or fallback or ""


# --------------------------------------------------------------------------- shared sessions


class _SharedSession:
    """One loop's client session and how many sinks use it."""

    __slots__ = ("session", "users")

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            # one session serves every endpoint: no cookie may travel from one to another
            cookie_jar=aiohttp.DummyCookieJar(),
            # no compressed answers: a small gzip body can inflate to gigabytes, and a receiver
            # has nothing to say that needs compressing (what a receiver sends compressed anyway
            # is read as it came, and bounded: MAX_RESPONSE_BYTES)
            headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
            auto_decompress=False,
            raise_for_status=False,
            # the environment's proxies are not for webhooks: an endpoint is reached directly
            trust_env=False,
        )
        self.users = 0


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedSession] = (
    weakref.WeakKeyDictionary()
)


def _acquire_session(loop: asyncio.AbstractEventLoop) -> _SharedSession:
    shared = _sessions.get(loop)
    if shared is None or shared.session.closed:
        shared = _sessions[loop] = _SharedSession()
    shared.users += 1
    return shared


async def _release_session(loop: asyncio.AbstractEventLoop, shared: _SharedSession) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    # a sink acquiring from now on gets a new session rather than this closing one
    if _sessions.get(loop) is shared:
        del _sessions[loop]
    await shared.session.close()


# --------------------------------------------------------------------------- argument checks


def _check_url(url: object) -> URL:
    if not isinstance(url, str | URL):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        shown = redact_url(str(url))
        raise ValueError(f"url {shown!r} is not a valid URL: {redact_text(str(exc))}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"url must start with http:// or https://, got {_display(parsed)!r}")
    if not parsed.host:
        raise ValueError(f"url has no host: {_display(parsed)!r}")
    return parsed


def _display(url: URL) -> str:
    # user info and query values may be credentials (a password, a token as the user name, an
    # ?api_key=): never shown, see rxsinks._redact
    return redact_url(url)


def _check_number(argument: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument} must be a number of seconds, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{argument} must be a finite number of seconds {bound}, got {value!r}")
    return number


def _check_header_value(argument: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{argument}[{name!r}] values must be str, got {type(value).__name__} "
            "(redacted, in case it is a credential)"
            if name.lower() in _SENSITIVE_HEADERS
            else f"{argument}[{name!r}] values must be str, got {value!r}"
        )
    if _BAD_VALUE_CHARS.search(value):
        raise ValueError(f"{argument}[{name!r}]: a header value may not contain control characters")
    return value


def _check_headers(headers: object) -> CIMultiDict[str]:
    result: CIMultiDict[str] = CIMultiDict()
    if headers is None:
        return result
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"headers must be a mapping of name -> value or list of values, "
            f"got {type(headers).__name__}"
        )
    items: Iterable[tuple[object, object]] = headers.items()
    for name, values in items:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            hint = " (use content_type=)" if name.lower() == "content-type" else ""
            raise ValueError(f"headers: {name!r} is set by the sink itself{hint}")
        if isinstance(values, str):
            values = [values]
        elif not isinstance(values, Iterable):
            raise TypeError(
                f"headers[{name!r}] must be a str or a list of str, got {type(values).__name__}"
            )
        for value in values:
            result.add(name, _check_header_value("headers", name, value))
    return result


def _check_statuses(statuses: object) -> frozenset[int]:
    if not isinstance(statuses, Iterable) or isinstance(statuses, str | bytes):
        raise TypeError(
            f"permanent_statuses must be a collection of ints, got {type(statuses).__name__}"
        )
    result = set()
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"permanent_statuses: {status!r} is not an int")
        if not 300 <= status <= 599:
            raise ValueError(
                f"permanent_statuses: {status} is not a failure status (expected 300..599; "
                "200..299 always succeed)"
            )
        result.add(status)
    return frozenset(result)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class _Answer:
    """The final response of one attempt (after any redirects it followed)."""

    status: int
    reason: str
    url: URL
    location: str | None
    retry_after: str | None
    body: bytes
    problem: str | None = None
    """Why a 3xx answer is a failure (a redirect that was not followed)."""


@dataclass(frozen=True, slots=True)
class _NoAnswer:
    """A request that got no response: DNS, connect, TLS, reset, timeout."""

    url: URL
    error: DeliveryError


class WebhookSink:
    """Deliver a block of events with one HTTP POST: a sink for :func:`~rxsinks.deliver`.

    :meth:`deliver` follows the sink contract: a coroutine that returns the :class:`Attempt`
    when the receiver took the block, and raises the reason when it did not, so
    ``deliver(webhook.deliver, retry=retry_with_breaker())`` retries it. Deliveries may run
    concurrently (the stage decides how many). After :meth:`aclose`, every block fails with
    :data:`~rxsinks.SINK_CLOSED`, which a delivery stage treats as terminal.

    Args:
        url: the endpoint, ``http://`` or ``https://``.
        name: the endpoint's name in errors and logs (default: the URL, user info redacted).
        headers: extra request headers, ``{"Authorization": ["Bearer x"]}`` or plain strings;
            every value is sent (appended, as the registry does).
        timeout: seconds for a whole attempt: connect, send, redirects, read the answer.
        content_type: the request's ``Content-Type`` (registry 2.x's by default;
            :data:`~rxsinks.MEDIA_TYPE_V2` for registry 3, or any string).
        secret: a Standard Webhooks secret ``whsec_<base64>``: each request then carries
            ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` over the body sent.
        secret_headers: more header names whose values are credentials (``Authorization``,
            ``Proxy-Authorization`` and ``Cookie`` always are): redacted in ``repr()``, logs and
            errors, and not forwarded to another origin on a redirect.
        ca_file: PEM bundle of CAs to trust instead of the system's.
        cert_file: PEM client certificate (mutual TLS); may also hold the key.
        key_file: PEM private key of the client certificate, if not in ``cert_file``.
        verify_tls: ``False`` skips server certificate checks (logged once at WARNING).
        redirects: ``"safe"`` or ``"none"``; see the module docstring.
        permanent_statuses: statuses (300..599) that fail with
            :class:`~rxsinks.PermanentDeliveryError`, which retry operators do not retry.
        retry_after_cap: the longest ``Retry-After`` honoured, in seconds.
        on_attempt: called with an :class:`Attempt` after every HTTP attempt (for metrics).
            Exceptions it raises are logged and ignored.

    Raises:
        TypeError: an argument has the wrong type (the message names it).
        ValueError: an argument has a wrong value, e.g. a URL that is not http(s), a secret
            without the ``whsec_`` prefix, a missing or invalid certificate file (named).

    Example:
        >>> sink = WebhookSink("https://hooks.example.com/registry",
        ...                    headers={"Authorization": "Bearer s3cr3t"}, timeout=2.0)
        >>> sink
        WebhookSink('https://hooks.example.com/registry', headers={'Authorization': '<redacted>'})
    """

    def __init__(
        self,
        url: str | URL,
        *,
        name: str | None = None,
        headers: Mapping[str, HeaderValues] | None = None,
        timeout: float = 1.0,
        content_type: str = MEDIA_TYPE_V1,
        secret: str | None = None,
        secret_headers: Iterable[str] = (),
        ca_file: PathArg | None = None,
        cert_file: PathArg | None = None,
        key_file: PathArg | None = None,
        verify_tls: bool = True,
        redirects: RedirectPolicy = "safe",
        permanent_statuses: Iterable[int] = (),
        retry_after_cap: float = 300.0,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self._url = _check_url(url)
        self._display_url = _display(self._url)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._name = name or self._display_url
        self._timeout = _check_number("timeout", timeout, positive=True)
        if not isinstance(content_type, str) or not content_type.strip():
            raise ValueError(f"content_type must be a non-empty str, got {content_type!r}")
        _check_header_value("content_type", "Content-Type", content_type)
        if isinstance(secret_headers, str):
            secret_headers = (secret_headers,)
        if not isinstance(secret_headers, Iterable):
            raise TypeError(
                f"secret_headers must be a collection of header names, "
                f"got {type(secret_headers).__name__}"
            )
        secret_names = set(_SENSITIVE_HEADERS)
        for header in secret_headers:
            if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"secret_headers: {header!r} is not a valid header name")
            secret_names.add(header.lower())
        self._secret_names = frozenset(secret_names)
        self._key = None if secret is None else parse_secret(secret)
        self._config_headers = _check_headers(headers)
        if self._key is not None:
            clash = [n for n in self._config_headers if n.lower() in _SIGNATURE_HEADERS]
            if clash:
                raise ValueError(f"headers: {clash[0]!r} is set by the signature (secret=)")
        if (self._url.user or self._url.password) and "Authorization" in self._config_headers:
            raise ValueError(
                "url carries credentials (user info) and headers has Authorization: keep one"
            )
        self._headers = CIMultiDict(self._config_headers)
        self._headers["Content-Type"] = content_type
        self._content_type = content_type
        if redirects not in ("safe", "none"):
            raise ValueError(f"redirects must be 'safe' or 'none', got {redirects!r}")
        self._redirects: RedirectPolicy = redirects
        self._permanent = _check_statuses(permanent_statuses)
        self._retry_after_cap = _check_number("retry_after_cap", retry_after_cap, positive=False)
        if on_attempt is not None and not callable(on_attempt):
            raise TypeError(f"on_attempt must be callable, got {type(on_attempt).__name__}")
        self._on_attempt = on_attempt
        # last: it reads files, so the cheap mistakes are reported first
        self._ssl = client_ssl(
            ca_file=ca_file, cert_file=cert_file, key_file=key_file, verify=verify_tls
        )

        self._loop: asyncio.AbstractEventLoop | None = None
        self._shared: _SharedSession | None = None
        self._in_flight = 0  # events in deliveries not finished
        self._idle: asyncio.Event | None = None  # set while no delivery runs (for aclose)
        self._stopped = False  # closing: no new block is taken
        self._close_task: asyncio.Task[None] | None = None
        self._disabled_reason: str | None = None
        if not verify_tls:
            logger.warning(
                "webhook %s: TLS certificate verification is disabled (verify_tls=False)",
                self._name,
            )

    # ------------------------------------------------------------------ introspection

    @property
    def name(self) -> str:
        """The endpoint's name in errors and logs."""
        return self._name

    @property
    def url(self) -> str:
        """The endpoint URL, with any user info (credentials) redacted."""
        return self._display_url

    @property
    def closed(self) -> bool:
        """Whether the sink was closed (blocks now fail with ``SINK_CLOSED``)."""
        return self._stopped

    @property
    def disabled(self) -> bool:
        """Whether the endpoint answered ``410 Gone`` (blocks now fail without a request)."""
        return self._disabled_reason is not None

    @property
    def disabled_reason(self) -> str | None:
        """Why the sink is disabled, or ``None``."""
        return self._disabled_reason

    @property
    def in_flight(self) -> int:
        """Events in blocks whose delivery has not finished."""
        return self._in_flight

    def _redacted_headers(self) -> dict[str, str | list[str]]:
        shown: dict[str, str | list[str]] = {}
        for name in self._config_headers:
            if name in shown:
                continue
            values = self._config_headers.getall(name)
            if name.lower() in self._secret_names:
                values = [_REDACTED] * len(values)
            shown[name] = values[0] if len(values) == 1 else values
        return shown

    def __repr__(self) -> str:
        parts = [repr(self._display_url)]
        if self._name != self._display_url:
            parts.append(f"name={self._name!r}")
        if self._config_headers:
            parts.append(f"headers={self._redacted_headers()!r}")
        if self._content_type != MEDIA_TYPE_V1:
            parts.append(f"content_type={self._content_type!r}")
        if self._key is not None:
            parts.append("secret=<redacted>")
        if self._disabled_reason is not None:
            parts.append("disabled=True")
        if self._stopped:
            parts.append("closed=True")
        return f"WebhookSink({', '.join(parts)})"

    # ------------------------------------------------------------------ one attempt

    async def deliver(self, block: Sequence[Event]) -> Attempt:
        """POST one block once (following redirects as configured): the sink contract.

        ``on_attempt`` is called before this returns or raises, whenever a request was made.
        :meth:`aclose` waits for every delivery running.

        Args:
            block: the events; an empty block is delivered at once, without a request.

        Returns:
            The successful :class:`Attempt` (its ``status`` goes on the delivery's outcome).

        Raises:
            SinkClosedError: the sink is closed (:data:`~rxsinks.SINK_CLOSED`).
            EndpointDisabledError: the endpoint answered 410 Gone, now or before.
            PermanentDeliveryError: a status in ``permanent_statuses``, or a block that is not
                a sequence of events or cannot be encoded.
            WebhookStatusError: another status outside 200..399, or a redirect not followed.
            DeliveryError: no response: the message names the cause.
        """
        if self._stopped:
            raise SINK_CLOSED
        events = _events(block, self._name)
        if not events:
            # nothing to deliver: delivered, without a request
            return Attempt(0, None, "", None, 0.0, self._display_url)
        self._in_flight += len(events)
        if self._idle is not None:
            self._idle.clear()
        try:
            return await self._send(events)
        finally:
            self._in_flight -= len(events)
            if not self._in_flight and self._idle is not None:
                self._idle.set()

    send = deliver
    """Same as :meth:`deliver` (one attempt at one block)."""

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._shared is None:
            self._loop = loop
            self._shared = _acquire_session(loop)
        elif loop is not self._loop:
            raise RuntimeError(
                f"webhook {self._name}: used on two event loops; create one sink per loop"
            )
        return self._shared.session

    def _shown(self, url: URL) -> str:
        """``url`` as logs and errors show it (the endpoint's own is worked out once)."""
        return self._display_url if url is self._url else _display(url)

    def _request_headers(self, events: Sequence[Event], body: bytes) -> CIMultiDict[str]:
        if self._key is None:
            return self._headers
        headers = self._headers.copy()
        msg_id = message_id((event.id for event in events), body)
        headers.extend(signature_headers(self._key, msg_id, body))
        return headers

    async def _send(self, events: tuple[Event, ...]) -> Attempt:
        if self._disabled_reason is not None:
            raise EndpointDisabledError(
                f"webhook {self._name} is disabled: {self._disabled_reason}",
                status=410,
                endpoint=self._name,
                events=events,
                answered=False,
            )
        try:
            body = encode_envelope(events)
        except Exception as exc:
            raise PermanentDeliveryError(
                f"webhook {self._name}: the block cannot be encoded: {exc}",
                endpoint=self._name,
                events=events,
            ) from exc
        session = self._session()
        try:
            headers = self._request_headers(events, body)
        except Exception as exc:
            raise PermanentDeliveryError(
                f"webhook {self._name}: the request cannot be built: {exc}",
                endpoint=self._name,
                events=events,
            ) from exc
        # configured headers were checked when the sink was built; the signature's are derived
        # from the events (message_id hashes an unsafe id), and checked here once more
        problem = None if self._key is None else _header_problem(headers)
        if problem is not None:
            # the same block builds the same headers on every attempt: retrying cannot help
            raise PermanentDeliveryError(
                f"webhook {self._name}: the request cannot be built: {problem}",
                endpoint=self._name,
                events=events,
            )
        started = time.perf_counter()
        answer = await self._exchange(session, body, headers, events)
        duration = time.perf_counter() - started
        url = self._shown(answer.url)
        if isinstance(answer, _NoAnswer):
            attempt = Attempt(len(events), None, "", answer.error, duration, url)
            logger.debug("webhook %s: %s", self._name, answer.error)
            self._report(attempt)
            raise answer.error
        error = None
        if answer.problem is not None or not 200 <= answer.status < 400:
            error = self._status_error(answer, events)
        attempt = Attempt(len(events), answer.status, answer.reason, error, duration, url)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "webhook %s: POST %s -> %s (%d events, %.3f s)",
                self._name,
                url,
                attempt.status_text,
                len(events),
                duration,
            )
        self._report(attempt)
        if error is not None:
            raise error
        return attempt

    def _report(self, attempt: Attempt) -> None:
        if self._on_attempt is None:
            return
        try:
            self._on_attempt(attempt)
        except Exception:
            logger.exception("webhook %s: on_attempt callback raised", self._name)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        body: bytes,
        headers: CIMultiDict[str],
        events: tuple[Event, ...],
    ) -> _Answer | _NoAnswer:
        """POST, following 307/308 under the "safe" policy."""
        deadline = time.monotonic() + self._timeout
        target = self._url
        hops = 0
        while True:
            answer = await self._post(session, target, body, headers, deadline, events)
            if (
                isinstance(answer, _NoAnswer)
                or self._redirects == "none"
                or not 300 <= answer.status < 400
                or answer.location is None
            ):
                return answer
            try:
                redirect: URL | None = answer.url.join(URL(answer.location))
            except (ValueError, TypeError):
                redirect = None
            # a Location may carry user info too: show it the way the endpoint URL is shown
            shown = repr(redact_url(answer.location if redirect is None else redirect))
            if answer.status not in (307, 308):
                return replace(
                    answer,
                    problem=f"redirect to {shown} not followed: a {answer.status} "
                    "would turn the POST into a GET without the events; point the endpoint at "
                    "the new URL",
                )
            if hops == MAX_REDIRECTS:
                return replace(answer, problem=f"stopped after {MAX_REDIRECTS} redirects")
            if redirect is None or redirect.scheme not in ("http", "https") or not redirect.host:
                return replace(answer, problem=f"redirect to {shown}: not an http(s) URL")
            if target.scheme == "https" and redirect.scheme != "https":
                # the body and a valid signature would cross the network in cleartext
                return replace(
                    answer,
                    problem=f"redirect to {shown} refused: it leaves https for http, which would "
                    "send the events and their signature in cleartext; point the endpoint at "
                    "the URL to use",
                )
            if redirect.origin() != target.origin():
                # credentials were given for the configured origin, not for wherever it points
                headers = headers.copy()
                for name in self._secret_names:
                    headers.popall(name, None)
            target = redirect
            hops += 1

    async def _post(
        self,
        session: aiohttp.ClientSession,
        target: URL,
        body: bytes,
        headers: CIMultiDict[str],
        deadline: float,
        events: tuple[Event, ...],
    ) -> _Answer | _NoAnswer:
        """One request; its body is read up to :data:`MAX_RESPONSE_BYTES` (the start of it kept
        only on failure)."""
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with session.post(
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                ssl=self._ssl if target.scheme == "https" else True,
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as response:
                keep = 0 if 200 <= response.status < 300 else _BODY_NOTE_BYTES
                # the body is read (the connection returns to the pool only then), but never
                # more of it than MAX_RESPONSE_BYTES, and only its start is kept
                length = response.content_length
                if length is not None and length <= _READ_CHUNK:
                    start = (await response.read())[:keep]  # small (the usual): at once
                else:
                    start = b""
                    read = 0
                    async for chunk in response.content.iter_chunked(_READ_CHUNK):
                        if len(start) < keep:
                            start += chunk[: keep - len(start)]
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            response.close()  # the rest is not read: this connection goes
                            break
                if keep and response.headers.get("Content-Encoding", "identity") != "identity":
                    # compressed although identity was asked for: the bytes say nothing legible
                    start = b""
                return _Answer(
                    status=response.status,
                    reason=_phrase(response.status, response.reason),
                    url=target,  # what was requested (redirects are followed here, not by aiohttp)
                    location=response.headers.get("Location"),
                    retry_after=response.headers.get("Retry-After"),
                    body=start,
                )
        except Exception as exc:
            cause = _describe_transport_error(exc, self._timeout)
            if _unbuildable(exc):
                # raised while the request was being written: the same block fails the same
                # way on every attempt, so it must not be retried (it would block the endpoint)
                permanent = PermanentDeliveryError(
                    f"POST {_display(target)}: the request cannot be built: {cause}",
                    endpoint=self._name,
                    events=events,
                )
                permanent.__cause__ = exc
                return _NoAnswer(target, permanent)
            error = DeliveryError(
                f"POST {_display(target)} failed: {cause}", endpoint=self._name, events=events
            )
            error.__cause__ = exc  # as `raise ... from exc` would: the original stays visible
            return _NoAnswer(target, error)

    def _status_error(self, answer: _Answer, events: tuple[Event, ...]) -> DeliveryError:
        url = self._shown(answer.url)
        text = f"{answer.status} {answer.reason}".rstrip()
        error: DeliveryError
        if answer.status == 410:
            reason = f"{url} answered {text}"
            if self._disabled_reason is None:
                self._disabled_reason = reason
                logger.warning(
                    "webhook %s: disabled: %s; every later block fails without a request",
                    self._name,
                    reason,
                )
            error = EndpointDisabledError(
                f"webhook {self._name} is disabled: {reason}",
                status=410,
                endpoint=self._name,
                events=events,
            )
        elif answer.status in self._permanent:
            error = PermanentDeliveryError(
                f"{url} answered {text} (a permanent status: not retried)",
                status=answer.status,
                endpoint=self._name,
                events=events,
            )
        else:
            retry_after = None
            if answer.status in _RETRY_AFTER_STATUSES:
                # parse_retry_after never raises: an unreadable value means no delay asked for,
                # and the status is reported all the same
                retry_after = parse_retry_after(answer.retry_after)
                if retry_after is not None:
                    retry_after = min(retry_after, self._retry_after_cap)
            error = WebhookStatusError(
                answer.status,
                url,
                reason=answer.reason,
                retry_after=retry_after,
                endpoint=self._name,
                events=events,
            )
        if answer.problem is not None:
            error.add_note(answer.problem)
        if answer.body:
            error.add_note(f"response body starts with {answer.body.decode('utf-8', 'replace')!r}")
        return error

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Close the sink: wait for the deliveries running, then release the shared session.

        Later blocks fail with :data:`~rxsinks.SINK_CLOSED`. Idempotent.
        """
        self._stopped = True
        if self._close_task is None:
            if not self._in_flight and self._shared is None:
                return
            self._close_task = asyncio.get_running_loop().create_task(self._close())
        # shielded: a caller that gives up waiting must not leave the session half released
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        if self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()
        shared, self._shared = self._shared, None
        if shared is not None and self._loop is not None:
            await _release_session(self._loop, shared)


def _events(block: object, name: str) -> tuple[Event, ...]:
    """The block as a tuple of events; anything else can never be delivered (permanent)."""
    events: tuple[Any, ...] | None = None
    if isinstance(block, tuple):
        events = block
    elif isinstance(block, Iterable) and not isinstance(block, str | bytes | Mapping):
        events = tuple(block)
    if events is None or not all(isinstance(event, Event) for event in events):
        raise PermanentDeliveryError(
            f"webhook {name}: expected a sequence of rxsinks.Event, got {type(block).__name__}",
            endpoint=name,
        )
    return events


def _header_problem(headers: CIMultiDict[str]) -> str | None:
    """What makes these headers unsendable (a value with CR, LF or NUL), or ``None``."""
    for name, value in headers.items():
        if _FORBIDDEN_HEADER_CHARS.search(value):
            return f"the value of header {name!r} contains a line break or NUL"
    return None


def _unbuildable(exc: BaseException) -> bool:
    """Whether aiohttp refused to build the request itself (a value it cannot encode or
    that fails its header checks), as opposed to a network failure."""
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return False
    return isinstance(exc, ValueError | TypeError)  # UnicodeEncodeError is a ValueError


def _describe_transport_error(exc: BaseException, timeout: float) -> str:
    """Name the cause of a request that got no response, in words a person can act on.

    Texts taken from an exception go through :func:`~rxsinks._redact.redact_text`: aiohttp
    quotes URLs in some of its messages.
    """
    return redact_text(_transport_cause(exc, timeout))


def _transport_cause(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {exc.host!r}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    if isinstance(exc, TimeoutError):
        return f"no response within the {timeout:g} s timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer was cut short: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"connection error ({type(exc).__name__}): {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _os_reason(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    # asyncio words a refused connect "Connect call failed (addr)"; the errno says why
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return str(error)
