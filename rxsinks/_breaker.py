"""The registry's circuit breaker, as one small object that delivery stages consult."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

__all__ = ["Breaker", "BreakerState"]

log = logging.getLogger("rxsinks.breaker")


class BreakerState(enum.StrEnum):
    """Where a :class:`Breaker` stands."""

    CLOSED = "closed"
    """Attempts proceed at once (fewer than ``threshold`` failures in a row)."""
    OPEN = "open"
    """``threshold`` failures in a row: no attempt until ``backoff`` has passed since the last."""
    HALF_OPEN = "half_open"
    """``backoff`` has passed: one trial attempt is in flight; success closes, failure reopens."""


class Breaker:
    """The Docker registry's breaker, plus a single trial when half open.

    State is the number of consecutive failures and the time of the last one. An attempt may
    proceed when fewer than ``threshold`` failures happened back to back, or when ``backoff``
    seconds have passed since the last failure. So the first ``threshold`` failures are retried at
    once, then one attempt per ``backoff``; one success resets everything. It never gives up by
    itself (bound retries with a tenacity ``stop=`` on the retry policy).

    Unlike the registry (2015), a waiting caller waits only the remaining part of the backoff, as
    go-events does. When the backoff has passed, exactly one attempt goes through as the trial
    (the breaker is *half open*); other attempts wait for its result, as resilience4j's breakers
    do, so a breaker shared by several stages (all endpoints of one receiver host, say) or a
    stage delivering several blocks at once sends one trial, not one per block. Time comes from
    the caller (a scheduler's clock), so virtual-time tests see exact timings.

    Args:
        threshold: consecutive failures before the breaker opens (> 0).
        backoff: seconds between attempts while open (>= 0).
        on_change: called with the new state on every transition (see also :meth:`listen`).
    """

    __slots__ = ("_last", "_listeners", "_recent", "_state", "_trial", "backoff", "threshold")

    def __init__(
        self,
        threshold: int = 10,
        backoff: float = 1.0,
        *,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
            raise ValueError(f"threshold must be a positive int, got {threshold!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        self.threshold = threshold
        self.backoff = float(backoff)
        self._recent = 0
        self._last = 0.0
        self._trial = False
        self._state = BreakerState.CLOSED
        self._listeners: list[Callable[[BreakerState], None]] = []
        if on_change is not None:
            self._listeners.append(on_change)

    def __repr__(self) -> str:
        return (
            f"Breaker(threshold={self.threshold}, backoff={self.backoff}, "
            f"state={self._state.value}, failures={self._recent})"
        )

    @property
    def state(self) -> BreakerState:
        """The state after the last recorded attempt."""
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures so far."""
        return self._recent

    @property
    def last_failure(self) -> float | None:
        """When the last of the consecutive failures happened (the caller's clock), if any."""
        return self._last if self._recent else None

    def delay(self, now: float) -> float:
        """Seconds to wait before the next attempt may proceed (0 when it may go now)."""
        if self._recent < self.threshold:
            return 0.0
        return max(0.0, self._last + self.backoff - now)

    def permit(self, now: float) -> float:
        """Ask to attempt at ``now``: 0 when the attempt may go (and it is noted), else the
        seconds to wait before asking again.

        An open breaker whose backoff has passed lets this attempt through as its trial and
        turns half open; until that trial's result is recorded, every other attempt waits.
        """
        if self._recent < self.threshold:
            return 0.0
        if self._trial:
            return self.backoff or 0.001
        wait = self._last + self.backoff - now
        if wait > 0:
            return wait
        self._trial = True
        if self._state is not BreakerState.HALF_OPEN:
            self._set(BreakerState.HALF_OPEN)
        return 0.0

    def before_attempt(self, now: float) -> None:
        """Note an attempt starting at ``now`` (see :meth:`permit`, which also says when)."""
        self.permit(now)

    def abandon(self) -> None:
        """The attempt :meth:`permit` let through will not report (its stage was disposed):
        let the next one be the trial."""
        self._trial = False

    def record_success(self) -> None:
        """One success resets everything."""
        self._recent = 0
        self._last = 0.0
        self._trial = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self, now: float) -> None:
        """Count a failed attempt at ``now``."""
        self._recent += 1
        self._last = now
        self._trial = False
        if self._recent >= self.threshold and self._state is not BreakerState.OPEN:
            self._set(BreakerState.OPEN)

    def listen(self, callback: Callable[[BreakerState], None]) -> Callable[[], None]:
        """Call ``callback`` on every transition; returns a function that stops it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _set(self, state: BreakerState) -> None:
        self._state = state
        log.debug("breaker %s", state.value)
        for callback in tuple(self._listeners):
            # a raising listener must neither skip the others nor break the attempt recording
            # the transition (a delivery stage records failures mid-bookkeeping)
            try:
                callback(state)
            except Exception:
                log.exception("breaker listener %r raised; ignored", callback)
