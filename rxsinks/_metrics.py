"""Per-endpoint metrics, kept by an observer of the endpoint's outcome stream.

The Docker registry's endpoint counters (its ``notifications`` metrics) with their exact
semantics (every counter counts events, not requests; failures and errors count every failed
attempt; ignored events are never counted), plus rxsinks' own: dead letters, drops, breaker
state, last error, delivery latency.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from reactivex import abc

from ._breaker import BreakerState
from ._outcome import Outcome, OutcomeKind

__all__ = [
    "LATENCY_BUCKETS",
    "EndpointMetrics",
    "MetricsSnapshot",
    "status_phrase",
    "status_text",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the delivery-latency histogram (``rxsinks_delivery_seconds``)."""

_BREAKER_STATES = {
    OutcomeKind.BREAKER_OPENED: BreakerState.OPEN,
    OutcomeKind.BREAKER_HALF_OPEN: BreakerState.HALF_OPEN,
    OutcomeKind.BREAKER_CLOSED: BreakerState.CLOSED,
}


# Go's http.StatusText, which keys the registry's Statuses. Python's http.HTTPStatus phrases
# differ ("414 Request-URI Too Long", "418 I'm a Teapot"; Python 3.13 renamed 413, 416 and
# 422), and dashboards must see the registry's keys.
_GO_STATUS_TEXT: dict[int, str] = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Request Entity Too Large",
    414: "Request URI Too Long", 415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a teapot",
    421: "Misdirected Request", 422: "Unprocessable Entity", 423: "Locked",
    424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required",
    428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # fmt: skip


def status_phrase(code: int) -> str:
    """Go's ``http.StatusText`` for ``code`` (``""`` when Go has none)."""
    return _GO_STATUS_TEXT.get(code, "")


def status_text(code: int) -> str:
    """The registry's status key: ``"200 OK"``, ``"307 Temporary Redirect"``, with Go's
    ``http.StatusText`` texts exactly; unknown codes keep just the number and a space, as Go
    gives them an empty text (``"599 "``)."""
    return f"{code} {status_phrase(code)}"


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A consistent copy of one endpoint's metrics.

    Attributes:
        pending: events accepted by the queue and not yet through their attempt.
        events: events accepted by the queue (ignored events are never counted).
        successes: events in attempts answered 2xx/3xx.
        failures: events in attempts answered with another status (each retry counts again).
        errors: events in attempts that got no answer (DNS, refused, reset, timeout, TLS).
        statuses: ``"code text"`` -> events, for example ``{"200 OK": 10}``.
        dead_letters: events given up on.
        dropped: events dropped by a bounded queue.
        breaker: the breaker's state.
        disabled: whether the endpoint disabled itself (410 Gone).
        last_error: the last failure, as text ("" when none).
        delivered_blocks: blocks delivered.
        latency_sum: total seconds from first attempt to delivery over delivered blocks.
        latency_max: the longest such delay.
        latency_buckets: cumulative counts of delivered blocks per :data:`LATENCY_BUCKETS` bound.
    """

    pending: int = 0
    events: int = 0
    successes: int = 0
    failures: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dropped: int = 0
    breaker: str = BreakerState.CLOSED.value
    disabled: bool = False
    last_error: str = ""
    delivered_blocks: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    latency_buckets: tuple[int, ...] = ()

    def registry_dict(self) -> dict[str, Any]:
        """The registry's ``/debug/vars`` shape: Pending, Events, Successes, Failures, Errors,
        Statuses."""
        return {
            "Pending": self.pending,
            "Events": self.events,
            "Successes": self.successes,
            "Failures": self.failures,
            "Errors": self.errors,
            "Statuses": dict(self.statuses),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain data (for JSON)."""
        return {
            "pending": self.pending,
            "events": self.events,
            "successes": self.successes,
            "failures": self.failures,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "dead_letters": self.dead_letters,
            "dropped": self.dropped,
            "breaker": self.breaker,
            "disabled": self.disabled,
            "last_error": self.last_error,
            "delivered_blocks": self.delivered_blocks,
            "latency_mean": (self.latency_sum / self.delivered_blocks)
            if self.delivered_blocks
            else None,
            "latency_max": self.latency_max,
        }


class EndpointMetrics(abc.ObserverBase[Outcome]):
    """Counts an endpoint's outcomes; subscribe it to ``endpoint.outcomes`` (Endpoint does).

    Queue-side figures (``events``, ``pending``, ``dropped``) are fed by the endpoint's queue
    hooks through :meth:`accepted`, :meth:`finished` and :meth:`dropped`.
    """

    def __init__(self) -> None:
        self._pending = 0
        self._events = 0
        self._successes = 0
        self._failures = 0
        self._errors = 0
        self._statuses: dict[str, int] = {}
        self._dead_letters = 0
        self._dropped = 0
        self._breaker = BreakerState.CLOSED
        self._disabled = False
        self._last_error = ""
        self._delivered_blocks = 0
        self._latency_sum = 0.0
        self._latency_max = 0.0
        self._buckets = [0] * len(LATENCY_BUCKETS)

    # -- queue hooks ---------------------------------------------------------------------------

    def accepted(self, events: int) -> None:
        """The queue accepted ``events`` events (ingress)."""
        self._events += events
        self._pending += events

    def finished(self, events: int) -> None:
        """The attempt on ``events`` queued events is over (egress)."""
        self._pending -= events

    def dropped(self, events: int) -> None:
        """A bounded queue dropped ``events`` events."""
        self._dropped += events

    # -- the outcome stream --------------------------------------------------------------------

    def on_next(self, value: Outcome) -> None:
        kind = value.kind
        size = len(value.events)
        if kind is OutcomeKind.DELIVERED:
            self._successes += size
            if value.status is not None:
                self._count_status(value.status, size)
            latency = value.latency or 0.0
            self._delivered_blocks += 1
            self._latency_sum += latency
            self._latency_max = max(self._latency_max, latency)
            index = bisect.bisect_left(LATENCY_BUCKETS, latency)
            if index < len(self._buckets):
                self._buckets[index] += 1
        elif kind is OutcomeKind.FAILED:
            if value.status is not None:
                self._failures += size
                self._count_status(value.status, size)
            else:
                self._errors += size
            self._last_error = str(value.error) if value.error is not None else ""
        elif kind is OutcomeKind.DEAD_LETTERED:
            self._dead_letters += size
            if value.error is not None:
                self._last_error = str(value.error)
        elif kind is OutcomeKind.DROPPED:
            self._dropped += size
        elif kind is OutcomeKind.DISABLED:
            self._disabled = True
        elif kind in _BREAKER_STATES:
            self._breaker = _BREAKER_STATES[kind]

    def _count_status(self, status: int, size: int) -> None:
        key = status_text(status)
        self._statuses[key] = self._statuses.get(key, 0) + size

    def on_error(self, error: Exception) -> None:
        self._last_error = str(error)

    def on_completed(self) -> None:
        pass

    def snapshot(self) -> MetricsSnapshot:
        """A consistent copy of the figures."""
        cumulative, total = [], 0
        for count in self._buckets:
            total += count
            cumulative.append(total)
        return MetricsSnapshot(
            pending=self._pending,
            events=self._events,
            successes=self._successes,
            failures=self._failures,
            errors=self._errors,
            statuses=dict(self._statuses),
            dead_letters=self._dead_letters,
            dropped=self._dropped,
            breaker=self._breaker.value,
            disabled=self._disabled,
            last_error=self._last_error,
            delivered_blocks=self._delivered_blocks,
            latency_sum=self._latency_sum,
            latency_max=self._latency_max,
            latency_buckets=tuple(cumulative),
        )
