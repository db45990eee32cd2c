"""What the operator's page shows over time, kept in memory from the endpoints' streams.

Per endpoint (by name, so it survives a Redis lease moving the endpoint to a new object): the
last :data:`ATTEMPTS` HTTP attempts, the times of the last success and failure with the
failure's reason, since when the breaker is open or the endpoint disabled, and
:data:`HISTORY` seconds of samples at :data:`RESOLUTION` seconds each (pending events at the
sample's end, events delivered and failed during it, a latency histogram). Rates and
percentiles are over the samples kept, maintained as running sums: the sampler does a constant
amount of work per endpoint, however many events went through.

Latency percentiles come from a histogram of quarter-octave bins (each bin's upper bound is
2^(1/4), about 19 %, above its lower one): a percentile is reported as its bin's geometric
middle, within 10 % of the exact figure.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reactivex import abc

from ..._endpoint import Endpoint
from ..._http.sink import Attempt
from ..._outcome import Outcome, OutcomeKind

__all__ = ["ATTEMPTS", "HISTORY", "RESOLUTION", "AttemptRecord", "EndpointHistory", "History"]

RESOLUTION = 2.0
"""Seconds per sample."""
HISTORY = 300.0
"""Seconds of samples kept (sparklines, rates, percentiles)."""
ATTEMPTS = 50
"""Attempts kept per endpoint for its detail view."""

_SAMPLES = round(HISTORY / RESOLUTION)
_BIN_FLOOR = 1e-4  # bin 0 holds everything up to 100 µs
_BINS_PER_OCTAVE = 4
_BINS = 4 * 22  # up to 100 µs * 2**22, about 7 minutes; longer lands in the last bin


def latency_bin(seconds: float) -> int:
    """The histogram bin of a latency."""
    if not seconds > _BIN_FLOOR:  # (NaN lands here too)
        return 0
    index = math.ceil(math.log2(seconds / _BIN_FLOOR) * _BINS_PER_OCTAVE)
    return min(_BINS - 1, max(1, index))


def bin_value(index: int) -> float:
    """The value a bin stands for: the geometric middle of its bounds."""
    if index == 0:
        return _BIN_FLOOR / 2
    return _BIN_FLOOR * 2 ** ((index - 0.5) / _BINS_PER_OCTAVE)


def percentile(bins: Sequence[int], quantile: float) -> float | None:
    """The ``quantile`` (0..1) of a histogram, or ``None`` when it is empty."""
    total = sum(bins)
    if total == 0:
        return None
    rank = max(1, math.ceil(quantile * total))
    seen = 0
    for index, count in enumerate(bins):
        seen += count
        if seen >= rank:
            return bin_value(index)
    return bin_value(len(bins) - 1)  # not reached: the counts add up to total


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP attempt as the detail view lists it.

    Attributes:
        time: when it ended (unix seconds).
        events: the block's size.
        status: the HTTP status (``None``: no answer).
        result: ``"200 OK"``, ``"503 Service Unavailable"``, or the transport error (redacted).
        ok: whether the block was delivered.
        duration: seconds, from the first byte sent to the end of the answer.
    """

    time: float
    events: int
    status: int | None
    result: str
    ok: bool
    duration: float

    def to_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return {
            "time": self.time,
            "events": self.events,
            "status": self.status,
            "result": self.result,
            "ok": self.ok,
            "duration": self.duration,
        }


@dataclass(slots=True)
class EndpointHistory:
    """Everything kept over time for one endpoint (see the module docstring).

    Attributes:
        name: the endpoint's name.
        attempts: the last attempts, oldest first.
        last_success: when a block was last delivered (unix seconds).
        last_failure: when an attempt last failed or a block was given up on.
        last_failure_reason: what that failure said (redacted).
        open_since: when the breaker opened (``None`` while it is closed).
        disabled_since: when the receiver answered 410 Gone.
    """

    name: str
    scrub: Callable[[str], str]
    attempts: deque[AttemptRecord] = field(default_factory=lambda: deque(maxlen=ATTEMPTS))
    last_success: float | None = None
    last_failure: float | None = None
    last_failure_reason: str = ""
    open_since: float | None = None
    disabled_since: float | None = None
    # the samples, one deque per figure (a list of each is then one C-level copy)
    _pending_samples: deque[int | None] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    _delivered_samples: deque[int] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    _failed_samples: deque[int] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    _bin_samples: deque[dict[int, int]] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    _delivered: int = 0
    _failed: int = 0
    _bins: dict[int, int] = field(default_factory=dict)
    _window_delivered: int = 0
    _window_bins: list[int] = field(default_factory=lambda: [0] * _BINS)

    # -- what the streams say ------------------------------------------------------------------

    def outcome(self, outcome: Outcome, now: float) -> None:
        """Take one outcome of the endpoint's stream."""
        kind = outcome.kind
        if kind is OutcomeKind.DELIVERED:
            self._delivered += len(outcome.events)
            index = latency_bin(outcome.latency or 0.0)
            self._bins[index] = self._bins.get(index, 0) + 1
            self.last_success = now
        elif kind is OutcomeKind.FAILED or kind is OutcomeKind.DEAD_LETTERED:
            if kind is OutcomeKind.FAILED:
                self._failed += len(outcome.events)
            self.last_failure = now
            reason = _reason(outcome)
            if kind is OutcomeKind.DEAD_LETTERED:
                reason = f"given up after {outcome.attempt} attempt(s): {reason}"
            self.last_failure_reason = self.scrub(reason)
        elif kind is OutcomeKind.BREAKER_OPENED:
            if self.open_since is None:  # a failed trial reopens it: still open since then
                self.open_since = now
        elif kind is OutcomeKind.BREAKER_CLOSED:
            self.open_since = None
        elif kind is OutcomeKind.DISABLED and self.disabled_since is None:
            self.disabled_since = now

    def attempt(self, attempt: Attempt, now: float) -> None:
        """Take one HTTP attempt of the endpoint's webhook."""
        if attempt.error is None or attempt.status is not None:
            # (the reason phrase is the receiver's text: it may echo what it was sent)
            result = self.scrub(attempt.status_text or "")
        else:
            result = self.scrub(_text(attempt.error))
        self.attempts.append(
            AttemptRecord(
                now, attempt.events, attempt.status, result, attempt.error is None, attempt.duration
            )
        )

    # -- samples -------------------------------------------------------------------------------

    def sample(self, pending: int | None) -> None:
        """Close the current sample with the endpoint's pending events now."""
        if len(self._delivered_samples) == _SAMPLES:
            # the oldest sample is about to fall out of the window
            self._window_delivered -= self._delivered_samples[0]
            for index, count in self._bin_samples[0].items():
                self._window_bins[index] -= count
        self._pending_samples.append(pending)
        self._delivered_samples.append(self._delivered)
        self._failed_samples.append(self._failed)
        self._bin_samples.append(self._bins)
        self._window_delivered += self._delivered
        for index, count in self._bins.items():
            self._window_bins[index] += count
        self._delivered = self._failed = 0
        self._bins = {}

    def rate(self) -> float:
        """Events delivered per second over the samples kept."""
        covered = len(self._delivered_samples) * RESOLUTION
        return self._window_delivered / covered if covered else 0.0

    def latency(self, quantile: float) -> float | None:
        """The ``quantile`` of the delivery latency (first attempt to delivery, per block) over
        the samples kept, or ``None`` when nothing was delivered."""
        return percentile(self._window_bins, quantile)

    def series(self) -> dict[str, list[int | None]]:
        """The samples, oldest first: ``pending`` (at each sample's end; ``None`` when unknown)
        and ``delivered`` and ``failed`` (events during each)."""
        return {
            "pending": list(self._pending_samples),
            "delivered": list(self._delivered_samples),
            "failed": list(self._failed_samples),
        }


def _text(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _reason(outcome: Outcome) -> str:
    if outcome.error is not None:
        return _text(outcome.error)
    if outcome.status is not None:
        return f"answered {outcome.status}"
    return "failed"


class _Listener(abc.ObserverBase[Any]):
    """Feeds one endpoint's outcome or attempt stream into its history."""

    def __init__(self, take: Callable[[Any, float], None], clock: Callable[[], float]) -> None:
        self._take = take
        self._clock = clock

    def on_next(self, value: Any) -> None:
        self._take(value, self._clock())

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass


class History:
    """The histories of a set of endpoints, fed by their streams.

    Call :meth:`watch` with the endpoints as they are now (a Redis relay makes a new
    :class:`~rxsinks.Endpoint` object each time it takes an endpoint's lease): each object is
    subscribed to once. Call :meth:`sample` every :data:`RESOLUTION` seconds.

    Args:
        names: the endpoints' names, in display order.
        scrub: applied to every free text kept (errors, reasons): redaction.
        clock: unix time (tests may pass another).
    """

    def __init__(
        self,
        names: Iterable[str],
        scrub: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.endpoints: dict[str, EndpointHistory] = {
            name: EndpointHistory(name, scrub) for name in names
        }
        self._watched: weakref.WeakSet[Endpoint] = weakref.WeakSet()
        self._accepted: deque[int] = deque(maxlen=_SAMPLES)
        self._accepted_last = 0  # (the ingest counts from 0 when the relay is built)
        self.samples = 0

    def watch(self, endpoints: Iterable[Endpoint]) -> None:
        """Subscribe to the streams of any endpoint object not seen before."""
        for endpoint in endpoints:
            if endpoint in self._watched:
                continue
            history = self.endpoints.get(endpoint.name)
            if history is None:
                continue
            self._watched.add(endpoint)
            endpoint.outcomes.subscribe(_Listener(history.outcome, self.clock))
            endpoint.attempts.subscribe(_Listener(history.attempt, self.clock))

    def sample(self, pending: dict[str, int | None], accepted: int) -> None:
        """Close the current samples.

        Args:
            pending: each endpoint's pending events now (``None``: not known here).
            accepted: the ingest's count of accepted events so far.
        """
        for name, history in self.endpoints.items():
            history.sample(pending.get(name))
        self._accepted.append(max(0, accepted - self._accepted_last))
        self._accepted_last = accepted
        self.samples += 1

    def accepted_rate(self) -> float:
        """Events accepted by the ingest per second, over the samples kept."""
        covered = len(self._accepted) * RESOLUTION
        return sum(self._accepted) / covered if covered else 0.0
