"""Retrying the delivery of each block: the registry's breaker, plus tenacity policies."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from ._breaker import Breaker, BreakerState
from ._exceptions import SINK_CLOSED, PermanentDeliveryError, SinkClosedError, WebhookStatusError
from ._flow import FlushToken, SettleCallback, direct_emitter, flush_scope, hold, join_flush
from ._outcome import DeadLetter, Outcome, OutcomeKind
from ._queue import clock_of, default_scheduler, weight_of

__all__ = ["retry_with_breaker"]

log = logging.getLogger("rxsinks.retry")

_B = TypeVar("_B")
Policy = Callable[[tenacity.RetryCallState], Any]
Report = abc.ObserverBase[Any] | Callable[[Any], None]

_CLOSED = BreakerState.CLOSED

_BREAKER_KINDS = {
    BreakerState.OPEN: OutcomeKind.BREAKER_OPENED,
    BreakerState.HALF_OPEN: OutcomeKind.BREAKER_HALF_OPEN,
    BreakerState.CLOSED: OutcomeKind.BREAKER_CLOSED,
}


def retry_with_breaker(
    threshold: int = 10,
    backoff: float = 1.0,
    *,
    breaker: Breaker | None = None,
    stop: Policy | None = None,
    wait: Policy | None = None,
    retry: Policy | None = None,
    dead_letters: Report | None = None,
    outcomes: Report | None = None,
    endpoint: str = "",
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_B]], Observable[_B]]:
    """Deliver each block to the stage below until it succeeds, through a circuit breaker.

    Each block is handed to the observer below (a sink) and held until the sink settles it; a
    failed attempt is retried *for that block*: the source is never re-subscribed, so a hot
    subject loses nothing (trap 5). One block is in flight at a time, in order; blocks arriving
    meanwhile wait in arrival order (put a :func:`queue` above to bound and measure them).

    Defaults are the registry's breaker exactly: ``threshold`` failures back to back, then one
    attempt per ``backoff`` seconds, one success resets, never gives up. tenacity policies are
    taken as they are: ``stop=stop_after_attempt(5)`` bounds the attempts per block, ``wait=``
    adds a wait after each failure (on top of the breaker; ``threshold=0`` turns the breaker
    off), ``retry=`` decides which errors are worth retrying. A block that ``stop`` gives up on,
    whose error ``retry`` refuses, or that failed with a
    :class:`~rxsinks.PermanentDeliveryError`, goes to ``dead_letters`` with its last error; it is
    never dropped silently (with no ``dead_letters`` it is logged at ERROR). A ``Retry-After``
    carried by a :class:`~rxsinks.WebhookStatusError` delays the next attempt at least that long.
    :class:`~rxsinks.SinkClosedError` is terminal: the block and everything after it are
    dead-lettered. All waiting goes through the scheduler, so a ``TestScheduler`` sees every
    backoff at an exact virtual time (``stop_after_delay`` reads the scheduler's clock here).

    Example:
        >>> from tenacity.stop import stop_after_attempt
        >>> events.pipe(queue(), retry_with_breaker(3, 0.5, stop=stop_after_attempt(20)))
        ... # doctest: +SKIP

    Marble diagram (``threshold=2``, ``backoff`` = 5 ticks; the sink fails a twice, then works)::

        --a-------------b----|
        [ retry_with_breaker ]
        --a-a-----a-----b----|     (a sent 3 times: 2 back to back, then after the backoff)

    Args:
        threshold: consecutive failures before the breaker opens; 0 turns it off.
        backoff: seconds between attempts while the breaker is open.
        breaker: a :class:`Breaker` to use (and share) instead of ``threshold``/``backoff``.
        stop: a tenacity stop strategy (attempts are counted per block).
        wait: a tenacity wait strategy: seconds to wait after each failed attempt.
        retry: a tenacity retry strategy deciding whether an error is retried.
        dead_letters: observer or callable receiving a :class:`DeadLetter` for each block
            given up on.
        outcomes: observer or callable receiving an :class:`Outcome` for each attempt result and
            each breaker transition.
        endpoint: a name to put on outcomes, dead letters and log lines.
        scheduler: the clock for waits; by default the running asyncio loop.

    Returns:
        An operator passing each block on to the sink below, retried as above.
    """
    if breaker is None and threshold:
        breaker = Breaker(threshold, backoff)
    if threshold and isinstance(threshold, bool | float):
        raise ValueError(f"threshold must be an int, got {threshold!r}")
    for name, policy in (("stop", stop), ("wait", wait), ("retry", retry)):
        if policy is not None and not callable(policy):
            raise TypeError(f"{name} must be a tenacity strategy (a callable), got {policy!r}")
    settings = _Settings(
        breaker, stop, wait, retry, _reporter(dead_letters), _reporter(outcomes), endpoint
    )

    def operator(source: Observable[_B]) -> Observable[_B]:
        def subscribe(
            observer: abc.ObserverBase[_B], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            clock = scheduler or scheduler_ or default_scheduler()
            lane = _RetryLane(settings, observer, clock)
            upstream = source.subscribe(lane, scheduler=scheduler_)
            return CompositeDisposable(upstream, Disposable(lane.dispose))

        return Observable(subscribe)

    return operator


def _reporter(target: Report | None) -> Callable[[Any], None] | None:
    if target is None:
        return None
    if isinstance(target, abc.ObserverBase):
        report: Callable[[Any], None] = target.on_next
    elif callable(target):
        report = target
    else:
        raise TypeError(f"expected an observer or a callable, got {target!r}")

    def guarded(record: Any) -> None:
        # reports are made in the middle of the lane's bookkeeping: an exception escaping from
        # a user's callback would leave the lane busy forever, its endpoint wedged
        try:
            report(record)
        except Exception:
            log.exception("%r raised on %r; ignored", report, record)

    return guarded


class _Settings:
    __slots__ = ("breaker", "dead_letters", "endpoint", "outcomes", "retry", "stop", "wait")

    def __init__(
        self,
        breaker: Breaker | None,
        stop: Policy | None,
        wait: Policy | None,
        retry: Policy | None,
        dead_letters: Callable[[Any], None] | None,
        outcomes: Callable[[Any], None] | None,
        endpoint: str,
    ) -> None:
        self.breaker = breaker
        self.stop = stop
        self.wait = wait
        self.retry = retry
        self.dead_letters = dead_letters
        self.outcomes = outcomes
        self.endpoint = endpoint


class _RetryLane(abc.ObserverBase[_B]):
    """One subscription: a FIFO of blocks, the one in flight, and its retry state."""

    __rxsinks_stage__ = True

    def __init__(
        self, settings: _Settings, observer: abc.ObserverBase[_B], clock: abc.SchedulerBase
    ) -> None:
        self._s = settings
        self._observer = observer
        self._emit = direct_emitter(observer)
        self._clock = clock
        self._now = clock_of(clock)
        self._waiting: deque[tuple[_B, SettleCallback | None]] = deque()
        self._block: _B | None = None
        self._handoff: SettleCallback | None = None
        self._busy = False
        self._emitting = False  # an attempt's emit() is running
        self._attempt = 0
        self._started: float | None = 0.0  # None: not read yet (see accept)
        self._not_before = 0.0
        self._timer = SerialDisposable()
        self._closed: BaseException | None = None
        self._completed = False
        self._error: Exception | None = None
        self._finished = False
        self._disposed = False
        self._flush: FlushToken | None = None
        # hot-path shortcuts: closed, completed or disposed (set where those are); settings
        # that never change; the settle callback bound once
        self._unusual = False
        self._breaker = settings.breaker
        self._reports = settings.outcomes is not None
        self._on_attempt_done = self._attempt_done
        self._state = tenacity.RetryCallState(_RETRYING, None, (), {})
        self._unlisten: Callable[[], None] | None = None
        if settings.breaker is not None and settings.outcomes is not None:
            self._unlisten = settings.breaker.listen(self._breaker_changed)

    # -- upstream ------------------------------------------------------------------------------

    def on_next(self, value: _B) -> None:
        handoff = hold()
        self.accept(value, None if handoff is None else handoff.settle)

    def accept(self, value: _B, handoff: SettleCallback | None) -> bool:
        """Take a block; True when it was delivered at once (see ``_flow.direct_emitter``)."""
        if self._unusual or self._busy:
            return self._accept_unusual(value, handoff)
        breaker = self._breaker
        if breaker is not None and breaker._recent:
            self._start(value, handoff)
            return False
        # the common case, inlined (once per block): an idle lane, a healthy breaker, attempt 1
        # (an idle lane's _not_before is 0: _done() leaves it so)
        self._busy = True
        self._block = value
        self._handoff = handoff
        self._attempt = 1
        # read the clock only for what uses it: an outcome's latency now, a retry's start time
        # once the attempt did not succeed at once (below, or in _attempt_done)
        self._started = self._now() if self._reports else None
        emitting, self._emitting = self._emitting, True
        try:
            delivered = self._emit(value, self._on_attempt_done)
            if delivered and (
                self._waiting
                or self._unusual
                or self._reports
                or (breaker is not None and (breaker._recent or breaker._state is not _CLOSED))
            ):
                # something to report, reset or go on with: the general path, and the
                # handoff is settled through its callback
                delivered = False
                self._attempt_done(None)
        finally:
            self._emitting = emitting
        if delivered:
            self._busy = False
            self._block = None
            self._handoff = None
            return True
        if self._busy:
            if self._started is None:
                self._started = self._now()
        elif self._take_next():
            self._attempt_now()  # settled at once: go on with what waited
        return False

    def _accept_unusual(self, value: _B, handoff: SettleCallback | None) -> bool:
        if self._closed is not None or self._completed:
            self._give_up(value, handoff, 0, SINK_CLOSED)
        elif self._busy:
            self._waiting.append((value, handoff))
        else:  # disposed: attempted as ever, settled below
            self._start(value, handoff)
        return False

    def on_error(self, error: Exception) -> None:
        self._error = error
        self._complete()

    def on_completed(self) -> None:
        self._complete()

    def _complete(self) -> None:
        if self._completed:
            return
        self._completed = True
        self._unusual = True
        self._flush = join_flush(self._remaining)
        # blocks may wait while not busy only inside emit(); the attempt loop finishes then
        if not self._busy and not self._waiting:
            self._finish()

    def _remaining(self) -> int:
        # events, not blocks, as close reports count them (a queue above counts the same way)
        waiting = sum(weight_of(block) for block, _ in self._waiting)
        return waiting + (weight_of(self._block) if self._busy else 0)

    def dispose(self) -> None:
        self._disposed = True
        self._unusual = True
        self._timer.dispose()
        if self._unlisten is not None:
            self._unlisten()
        if self._flush is not None:
            self._flush.done()
            self._flush = None

    # -- delivery ------------------------------------------------------------------------------

    def _start(self, block: _B, handoff: SettleCallback | None) -> None:
        self._take(block, handoff)
        self._attempt_now()

    def _take(self, block: _B, handoff: SettleCallback | None) -> None:
        self._busy = True
        self._block = block
        self._handoff = handoff
        self._attempt = 0
        self._started = self._now()
        self._not_before = 0.0

    def _take_next(self) -> bool:
        """Take the next waiting block, if any (else finish, if the stream ended)."""
        if self._waiting:
            self._take(*self._waiting.popleft())
            return True
        if self._completed:
            self._finish()
        return False

    def _attempt_now(self, _scheduler: Any = None, _state: Any = None) -> None:
        # A sink that settles inside on_next (a synchronous one) leaves the next waiting block
        # to this loop: were _done() to start it from inside the settle, every block of a
        # backlog would nest one more call chain, until RecursionError.
        while not self._disposed:
            breaker = self._s.breaker
            if self._not_before or (breaker is not None and breaker.failures):
                now = self._now()
                delay = max(self._not_before - now, breaker.delay(now) if breaker else 0.0)
                if delay > 0:
                    self._timer.disposable = self._clock.schedule_relative(delay, self._attempt_now)
                    return
                if breaker is not None:
                    breaker.before_attempt(now)
            self._attempt += 1
            emitting, self._emitting = self._emitting, True  # attempts may nest via upstream
            try:
                if self._emit(self._block, self._on_attempt_done):
                    self._attempt_done(None)  # done at once: no callback came
            finally:
                self._emitting = emitting
            if self._busy or not self._take_next():
                return  # held below, or a retry is scheduled, or nothing is left

    def _attempt_done(self, error: BaseException | None) -> None:
        block, attempt = self._block, self._attempt
        breaker = self._s.breaker
        if error is None:
            if breaker is not None and (breaker._recent or breaker._state is not _CLOSED):
                breaker.record_success()
            if self._s.outcomes is not None:
                self._s.outcomes(
                    Outcome(
                        OutcomeKind.DELIVERED,
                        _events(block),
                        attempt,
                        latency=self._now() - (self._started or 0.0),
                        endpoint=self._s.endpoint,
                    )
                )
            self._done(None)
            return
        if isinstance(error, SinkClosedError):
            self._closed = error
            self._unusual = True
            self._give_up(block, None, attempt, error)
            self._done(error)
            return
        now = self._now()
        if self._started is None:
            self._started = now  # it failed at once
        retry_in: float | None = None
        if not isinstance(error, PermanentDeliveryError):
            # a permanent error means the receiver answered: it is not down, so the breaker
            # is not involved
            if breaker is not None:
                breaker.record_failure(now)
            retry_in = self._next_wait(error, attempt, now)
        if self._s.outcomes is not None:
            # every failed attempt is reported, the last one too: metrics count attempts
            self._s.outcomes(
                Outcome(
                    OutcomeKind.FAILED,
                    _events(block),
                    attempt,
                    error=error,
                    status=getattr(error, "status", None),
                    retry_in=retry_in,
                    endpoint=self._s.endpoint,
                )
            )
        if retry_in is None:
            self._give_up(block, None, attempt, error)
            self._done(error)
            return
        log.warning(
            "%sattempt %d failed, retrying in %.3fs: %s",
            f"{self._s.endpoint}: " if self._s.endpoint else "",
            attempt,
            retry_in,
            error,
        )
        self._not_before = now + retry_in if retry_in > 0 else 0.0
        # never recurse: the next attempt runs from the scheduler, even when due at once
        self._timer.disposable = (
            self._clock.schedule_relative(retry_in, self._attempt_now)
            if retry_in > 0
            else self._clock.schedule(self._attempt_now)
        )

    def _next_wait(self, error: BaseException, attempt: int, now: float) -> float | None:
        """Seconds before the next attempt, or None when the policy gives up."""
        settings = self._s
        state = self._state
        started = self._started if self._started is not None else now
        state.start_time = started
        state.attempt_number = attempt
        state.outcome = tenacity.Future.construct(attempt, error, True)
        state.outcome_timestamp = now
        state.idle_for = now - started
        if settings.retry is not None and not settings.retry(state):
            return None
        if settings.stop is not None and settings.stop(state):
            return None
        wait = float(settings.wait(state)) if settings.wait is not None else 0.0
        breaker_wait = settings.breaker.delay(now) if settings.breaker is not None else 0.0
        retry_after = error.retry_after if isinstance(error, WebhookStatusError) else None
        return max(wait, breaker_wait, retry_after or 0.0)

    def _give_up(
        self,
        block: _B | None,
        handoff: SettleCallback | None,
        attempts: int,
        error: BaseException,
    ) -> None:
        settings = self._s
        letter = DeadLetter(_events(block), error, attempts, settings.endpoint)
        if settings.outcomes is not None:
            settings.outcomes(
                Outcome(
                    OutcomeKind.DEAD_LETTERED,
                    letter.events,
                    attempts,
                    error=error,
                    status=getattr(error, "status", None),
                    endpoint=settings.endpoint,
                )
            )
        if settings.dead_letters is not None:
            settings.dead_letters(letter)
        else:
            log.error(
                "%sgave up on a block of %d event(s) after %d attempt(s): %s",
                f"{settings.endpoint}: " if settings.endpoint else "",
                len(letter.events),
                attempts,
                error,
            )
        if handoff is not None:
            handoff(error)

    def _done(self, error: BaseException | None) -> None:
        handoff = self._handoff
        self._block = None
        self._handoff = None
        self._busy = False
        self._not_before = 0.0
        if handoff is not None:
            handoff(error)
        if self._disposed:
            return
        if self._closed is not None:
            # terminal: what waits behind a closed sink can never go; say so for each block
            while self._waiting:
                block, waiting_handoff = self._waiting.popleft()
                self._give_up(block, waiting_handoff, 0, self._closed)
        if self._emitting or self._busy:
            # settled inside emit(): the loop in _attempt_now goes on with the next block; or
            # settling upstream already handed this lane its next block
            return
        if self._take_next():
            self._attempt_now()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        token, self._flush = self._flush, None
        try:
            with flush_scope(token):
                if self._error is not None:
                    self._observer.on_error(self._error)
                else:
                    self._observer.on_completed()
        finally:
            # even if the observer below raised: this stage has flushed, and a token left
            # behind would keep EventSubject.aclose() waiting for ever
            if token is not None:
                token.done()

    def _breaker_changed(self, state: BreakerState) -> None:
        if self._s.outcomes is not None:
            self._s.outcomes(Outcome(_BREAKER_KINDS[state], endpoint=self._s.endpoint))
        log.info(
            "%sbreaker %s",
            f"{self._s.endpoint}: " if self._s.endpoint else "",
            state.value,
        )


# tenacity strategies read a RetryCallState; some log through its retry_object
_RETRYING = tenacity.Retrying()


def _events(block: Any) -> tuple[Any, ...]:
    if block is None:
        return ()
    return tuple(block) if isinstance(block, tuple | list) else (block,)
