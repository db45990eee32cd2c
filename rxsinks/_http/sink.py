"""The HTTP sink: POST each block of events to a webhook endpoint, and say what the answer means.

A :class:`WebhookSink` is a sink for :func:`~rxsinks.deliver`: its :meth:`~WebhookSink.deliver`
turns a block (a sequence of :class:`~rxsinks.Event`) into one POST of ``{"events": [...]}``
with every event written exactly as received, and raises when the receiver did not take it. It
is the policy; sending one request is its :class:`~rxsinks._http.transport.Transport`'s job (the
endpoint's own connection pool), following redirects :mod:`rxsinks._http.redirects`'.

What counts as success, like the registry: a *final* status of 200..399; see
:mod:`rxsinks._http.redirects` for the 3xx answers that are failures (a 301/302/303 with a
``Location``, a redirect from https to http).

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

URLs in errors and logs have their user info and query values hidden
(:func:`~rxsinks._redact.redact_url`).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

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
from rxsinks._http.redirects import MAX_REDIRECTS, follow
from rxsinks._http.signing import message_id, signature_headers
from rxsinks._http.transport import MAX_RESPONSE_BYTES, Answer, NoAnswer, Transport
from rxsinks._options import RedirectPolicy, WebhookOptions, check_url
from rxsinks._redact import redact_url

__all__ = [
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "Attempt",
    "RedirectPolicy",
    "WebhookSink",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_DELTA_SECONDS = re.compile(r"[0-9]+")
# A Retry-After beyond this many seconds (about 31 years) is read as this many: the caller caps
# it anyway, and a float of a 400-digit number overflows.
MAX_RETRY_AFTER: Final = 1_000_000_000.0
# Characters a header value may not hold: aiohttp refuses them (header injection) and would
# raise while building the request, which no retry can fix.
_FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00\r\n]")


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


class WebhookSink:
    """Deliver a block of events with one HTTP POST: a sink for :func:`~rxsinks.deliver`.

    :meth:`deliver` follows the sink contract: a coroutine that returns the :class:`Attempt`
    when the receiver took the block, and raises the reason when it did not, so
    ``deliver(webhook.deliver, retry=retry_with_breaker())`` retries it. Deliveries may run
    concurrently (the stage decides how many). After :meth:`aclose`, every block fails with
    :data:`~rxsinks.SINK_CLOSED`, which a delivery stage treats as terminal.

    Each sink has its own connection pool (keep-alive; see
    :class:`~rxsinks._http.transport.Transport`), made on first use and closed by
    :meth:`aclose`: sinks never wait for each other's connections.

    The options are one :class:`~rxsinks.WebhookOptions`, validated when it was built, so the
    same object serves a configuration file, an :class:`~rxsinks.Endpoint` and this sink alike.
    (The registry-shaped shortcuts, ``timeout=``, ``headers=``..., are the endpoint's: one
    spelling per level keeps "which one wins" out of the question.)

    Args:
        url: the endpoint, ``http://`` or ``https://``.
        options: how to POST (default: the registry's: 1 s timeout, no extra headers).
        name: the endpoint's name in errors and logs (default: the URL, user info redacted).
        on_attempt: called with an :class:`Attempt` after every HTTP attempt (for metrics).
            Exceptions it raises are logged and ignored.
        connections: connections open at most; give the number of deliveries the stage runs
            at once (``None``: no limit).

    Raises:
        TypeError: an argument has the wrong type (the message names it).
        ValueError: a URL that is not http(s), or carries credentials as well as an
            ``Authorization`` header.

    Example:
        >>> sink = WebhookSink("https://hooks.example.com/registry",
        ...                    WebhookOptions(headers={"Authorization": "Bearer s3cr3t"}))
        >>> sink
        WebhookSink('https://hooks.example.com/registry', headers={'Authorization': '<redacted>'})
    """

    def __init__(
        self,
        url: str | URL,
        options: WebhookOptions | None = None,
        *,
        name: str | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
        connections: int | None = None,
    ) -> None:
        options = WebhookOptions() if options is None else options
        if not isinstance(options, WebhookOptions):
            raise TypeError(
                f"options must be an rxsinks.WebhookOptions, got {type(options).__name__}"
            )
        self._url = URL(check_url(str(url) if isinstance(url, URL) else url, options.headers))
        self._display_url = redact_url(self._url)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._name = name or self._display_url
        if on_attempt is not None and not callable(on_attempt):
            raise TypeError(f"on_attempt must be callable, got {type(on_attempt).__name__}")
        self._on_attempt = on_attempt
        self.options = options
        """The options it was built with."""
        self._headers: CIMultiDict[str] = CIMultiDict(options.headers.items)
        self._headers["Content-Type"] = options.content_type
        self._key = None if options.secret is None else options.secret.key
        self._transport = Transport(options.tls.context, connections)
        self._in_flight = 0  # events in deliveries not finished
        self._idle: asyncio.Event | None = None  # set while no delivery runs (for aclose)
        self._stopped = False  # closing: no new block is taken
        self._close_task: asyncio.Task[None] | None = None
        self._disabled_reason: str | None = None
        if not options.tls.verify:
            logger.warning(
                "webhook %s: TLS certificate verification is disabled (verify=False)", self._name
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

    @property
    def connections(self) -> int | None:
        """Connections its pool opens at most (``None``: no limit)."""
        return self._transport.connections

    def __repr__(self) -> str:
        options = self.options
        parts = [repr(self._display_url)]
        if self._name != self._display_url:
            parts.append(f"name={self._name!r}")
        if options.headers:
            shown = {
                name: values[0] if len(values) == 1 else values
                for name, values in options.headers.redacted().items()
            }
            parts.append(f"headers={shown!r}")
        if options.content_type != MEDIA_TYPE_V1:
            parts.append(f"content_type={options.content_type!r}")
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

    def _shown(self, url: URL) -> str:
        """``url`` as logs and errors show it (the endpoint's own is worked out once)."""
        return self._display_url if url is self._url else redact_url(url)

    def _request_headers(self, events: Sequence[Event], body: bytes) -> CIMultiDict[str]:
        if self._key is None:
            return self._headers
        headers = self._headers.copy()
        msg_id = message_id((event.id for event in events), body)
        headers.extend(signature_headers(self._key, msg_id, body))
        return headers

    def _permanent(self, message: str, events: tuple[Event, ...]) -> PermanentDeliveryError:
        return PermanentDeliveryError(
            f"webhook {self._name}: {message}", endpoint=self._name, events=events
        )

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
            raise self._permanent(f"the block cannot be encoded: {exc}", events) from exc
        try:
            headers = self._request_headers(events, body)
        except Exception as exc:
            raise self._permanent(f"the request cannot be built: {exc}", events) from exc
        # configured headers were checked when the options were built; the signature's are
        # derived from the events (message_id hashes an unsafe id), and checked here once more
        problem = None if self._key is None else _header_problem(headers)
        if problem is not None:
            # the same block builds the same headers on every attempt: retrying cannot help
            raise self._permanent(f"the request cannot be built: {problem}", events)
        timeout = self.options.timeout
        name = self._name

        async def post(target: URL, hop_headers: CIMultiDict[str], left: float) -> Any:
            return await self._transport.post(name, target, body, hop_headers, left, timeout)

        started = time.perf_counter()
        answer = await follow(
            post,
            self._url,
            headers,
            policy=self.options.redirects,
            timeout=timeout,
            secret_names=self.options.headers.secret_names,
        )
        duration = time.perf_counter() - started
        url = self._shown(answer.url)
        if isinstance(answer, NoAnswer):
            error = self._no_answer_error(answer, events)
            attempt = Attempt(len(events), None, "", error, duration, url)
            logger.debug("webhook %s: %s", self._name, error)
            self._report(attempt)
            raise error
        failure = None
        if answer.problem is not None or not 200 <= answer.status < 400:
            failure = self._status_error(answer, events)
        attempt = Attempt(len(events), answer.status, answer.reason, failure, duration, url)
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
        if failure is not None:
            raise failure
        return attempt

    def _report(self, attempt: Attempt) -> None:
        if self._on_attempt is None:
            return
        try:
            self._on_attempt(attempt)
        except Exception:
            logger.exception("webhook %s: on_attempt callback raised", self._name)

    def _no_answer_error(self, answer: NoAnswer, events: tuple[Event, ...]) -> DeliveryError:
        shown = redact_url(answer.url)
        error: DeliveryError
        if answer.unbuildable:
            # raised while the request was being written: the same block fails the same way
            # on every attempt, so it must not be retried (it would block the endpoint)
            error = PermanentDeliveryError(
                f"POST {shown}: the request cannot be built: {answer.cause}",
                endpoint=self._name,
                events=events,
            )
        else:
            error = DeliveryError(
                f"POST {shown} failed: {answer.cause}", endpoint=self._name, events=events
            )
        error.__cause__ = answer.error  # as `raise ... from exc` would: the original stays visible
        return error

    def _status_error(self, answer: Answer, events: tuple[Event, ...]) -> DeliveryError:
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
        elif answer.status in self.options.permanent_statuses:
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
                    retry_after = min(retry_after, self.options.retry_after_cap)
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
        """Close the sink: wait for the deliveries running, then close its connection pool.

        Later blocks fail with :data:`~rxsinks.SINK_CLOSED`. Idempotent.
        """
        self._stopped = True
        if self._close_task is None:
            if not self._in_flight and not self._transport.open:
                return
            self._close_task = asyncio.get_running_loop().create_task(self._close())
        # shielded: a caller that gives up waiting must not leave the pool half closed
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        if self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()
        await self._transport.aclose()


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
