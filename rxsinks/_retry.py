"""Retrying one delivery: the registry's circuit breaker plus tenacity policies.

:func:`retry_with_breaker` makes a :class:`RetryWithBreaker`, which is two things at once, like
resilience4j's ``RetryOperator`` over a ``CircuitBreaker``:

* the retry policy of a delivery stage: ``deliver(sink, retry=retry_with_breaker(...))`` calls
  the sink again for the same block after a failed attempt, waiting on the stage's scheduler;
* a plain reactivex operator over a *cold* observable of one delivery, which it re-subscribes
  after a failure (subscribing is one attempt, completing is success, an error is a failed
  attempt), for pipelines written the Reactor way:
  ``blocks.pipe(ops.concat_map(lambda b: post(b).pipe(retry_with_breaker(3, 1.0))))``.

It refuses to re-subscribe a hot source (an :class:`~rxsinks.EventSubject`, a reactivex
``Subject``, or a pipeline built on one): re-subscribing a hot source does not repeat the failed
item, it loses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject

from ._breaker import Breaker
from ._exceptions import PermanentDeliveryError, SinkClosedError, WebhookStatusError
from ._scheduling import clock_of, default_scheduler

__all__ = ["Policy", "RetryWithBreaker", "retry_with_breaker"]

log = logging.getLogger("rxsinks.retry")

_T = TypeVar("_T")
Policy = Callable[[tenacity.RetryCallState], Any]
"""A tenacity strategy: ``stop``, ``wait`` or ``retry`` (they all read a ``RetryCallState``)."""

# tenacity strategies read a RetryCallState; some log through its retry_object
_RETRYING = tenacity.Retrying()


class RetryWithBreaker:
    """The retry policy of a delivery, and the operator that applies it; see
    :func:`retry_with_breaker`.

    Attributes:
        threshold: consecutive failures before a breaker made for a subscription opens
            (0: no breaker).
        backoff: seconds between attempts while that breaker is open.
        breaker: the shared :class:`~rxsinks.Breaker`, when one was given.
        stop: tenacity stop strategy, or ``None`` (never give up).
        wait: tenacity wait strategy, or ``None`` (no wait beyond the breaker's).
        retry: tenacity retry strategy, or ``None`` (every error but a permanent one is retried).
        scheduler: the clock for waits, or ``None`` (the stage's; the running loop).
    """

    __slots__ = ("backoff", "breaker", "retry", "scheduler", "stop", "threshold", "wait")

    def __init__(
        self,
        threshold: int = 10,
        backoff: float = 1.0,
        *,
        breaker: Breaker | None = None,
        stop: Policy | None = None,
        wait: Policy | None = None,
        retry: Policy | None = None,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be an int >= 0 (0: no breaker), got {threshold!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        if breaker is not None and not isinstance(breaker, Breaker):
            raise TypeError(f"breaker must be an rxsinks.Breaker, got {type(breaker).__name__}")
        for name, policy in (("stop", stop), ("wait", wait), ("retry", retry)):
            if policy is not None and not callable(policy):
                raise TypeError(f"{name} must be a tenacity strategy (a callable), got {policy!r}")
        self.threshold = threshold
        self.backoff = float(backoff)
        self.breaker = breaker
        self.stop = stop
        self.wait = wait
        self.retry = retry
        self.scheduler = scheduler

    def __repr__(self) -> str:
        parts = [f"{self.threshold}", f"{self.backoff:g}"]
        for name in ("breaker", "stop", "wait", "retry"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"retry_with_breaker({', '.join(parts)})"

    def new_breaker(self) -> Breaker | None:
        """The breaker one subscription uses: the shared one if given, else a fresh one."""
        if self.breaker is not None:
            return self.breaker
        return Breaker(self.threshold, self.backoff) if self.threshold else None

    def next_wait(
        self,
        state: tenacity.RetryCallState,
        error: BaseException,
        attempt: int,
        started: float,
        now: float,
        breaker: Breaker | None,
    ) -> float | None:
        """Seconds before the next attempt after a failed one, or ``None`` to give up.

        ``breaker`` must already have recorded the failure. A permanent error (a
        :class:`~rxsinks.PermanentDeliveryError`, or :class:`~rxsinks.SinkClosedError`) is
        never retried; a ``Retry-After`` carried by a :class:`~rxsinks.WebhookStatusError`
        lengthens the wait, never shortens the breaker's.
        """
        if isinstance(error, PermanentDeliveryError | SinkClosedError):
            return None
        state.start_time = started
        state.attempt_number = attempt
        state.outcome = tenacity.Future.construct(attempt, error, True)
        state.outcome_timestamp = now
        state.idle_for = now - started
        if self.retry is not None and not self.retry(state):
            return None
        if self.stop is not None and self.stop(state):
            return None
        wait = float(self.wait(state)) if self.wait is not None else 0.0
        breaker_wait = breaker.delay(now) if breaker is not None else 0.0
        retry_after = error.retry_after if isinstance(error, WebhookStatusError) else None
        return max(wait, breaker_wait, retry_after or 0.0)

    def __call__(self, source: Observable[_T]) -> Observable[_T]:
        """Apply the policy to a cold observable of one delivery (see the module docstring)."""
        _refuse_hot(source)

        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            scheduler = self.scheduler or scheduler_ or default_scheduler()
            return _Resubscriber(self, source, observer, scheduler, scheduler_).start()

        return Observable(subscribe)


def new_call_state() -> tenacity.RetryCallState:
    """A ``RetryCallState`` for :meth:`RetryWithBreaker.next_wait` (one per delivery lane)."""
    return tenacity.RetryCallState(_RETRYING, None, (), {})


def _refuse_hot(source: Observable[Any]) -> None:
    from ._broadcast import Broadcast, Pipeline

    if isinstance(source, Broadcast | Pipeline | Subject):
        raise TypeError(
            "retry_with_breaker() re-subscribes its source after a failure, and this source is "
            "hot (a subject, or a pipeline built on one): the failed item would be lost, not "
            "repeated. Retry each delivery instead: deliver(sink, retry=retry_with_breaker(...))"
        )


class _Resubscriber(abc.ObserverBase[_T]):
    """One subscription of the operator form: attempt, and re-subscribe after a failure."""

    def __init__(
        self,
        policy: RetryWithBreaker,
        source: Observable[_T],
        observer: abc.ObserverBase[_T],
        scheduler: abc.SchedulerBase,
        subscribe_scheduler: abc.SchedulerBase | None,
    ) -> None:
        self._policy = policy
        self._source = source
        self._observer = observer
        self._scheduler = scheduler
        self._subscribe_scheduler = subscribe_scheduler
        self._now = clock_of(scheduler)
        self._breaker = policy.new_breaker()
        self._state = new_call_state()
        self._attempt = 0
        self._started = self._now()
        # the attempt's subscription and the timer of the next one apart: an attempt failing
        # during its own subscribe schedules the next before subscribe has returned
        self._current = SerialDisposable()
        self._timer = SerialDisposable()
        self._disposed = False

    def start(self) -> abc.DisposableBase:
        self._attempt_now()
        return CompositeDisposable(self._current, self._timer, Disposable(self._dispose))

    def _dispose(self) -> None:
        self._disposed = True

    def _attempt_now(self, _: Any = None, __: Any = None) -> None:
        if self._disposed:
            return
        breaker = self._breaker
        if breaker is not None:
            wait = breaker.permit(self._now())
            if wait > 0:
                self._timer.disposable = self._scheduler.schedule_relative(wait, self._attempt_now)
                return
        self._attempt += 1
        self._current.disposable = self._source.subscribe(self, scheduler=self._subscribe_scheduler)

    def on_next(self, value: _T) -> None:
        self._observer.on_next(value)

    def on_completed(self) -> None:
        if self._breaker is not None:
            self._breaker.record_success()
        self._observer.on_completed()

    def on_error(self, error: Exception) -> None:
        now = self._now()
        breaker = self._breaker
        if breaker is not None and not isinstance(error, PermanentDeliveryError):
            breaker.record_failure(now)
        wait = self._policy.next_wait(
            self._state, error, self._attempt, self._started, now, breaker
        )
        if wait is None:
            self._observer.on_error(error)
            return
        log.debug("attempt %d failed, retrying in %.3fs: %s", self._attempt, wait, error)
        # through the scheduler even when due at once: never recurse into a new subscription
        self._timer.disposable = (
            self._scheduler.schedule_relative(wait, self._attempt_now)
            if wait > 0
            else self._scheduler.schedule(self._attempt_now)
        )


def retry_with_breaker(
    threshold: int = 10,
    backoff: float = 1.0,
    *,
    breaker: Breaker | None = None,
    stop: Policy | None = None,
    wait: Policy | None = None,
    retry: Policy | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> RetryWithBreaker:
    """Retry a failed delivery through the registry's circuit breaker and tenacity policies.

    Give it to a delivery stage, ``deliver(sink, retry=retry_with_breaker(...))``, or apply it to
    a cold observable of one delivery (see :mod:`rxsinks._retry`). Either way a failed attempt is
    retried for *that* block; a hot source is never re-subscribed.

    Defaults are the registry's breaker exactly: ``threshold`` failures back to back, then one
    attempt per ``backoff`` seconds, one success resets, never gives up. Each subscription of a
    stage gets its own breaker, unless ``breaker=`` passes one to share on purpose. tenacity
    policies are taken as they are: ``stop=stop_after_attempt(5)`` bounds the attempts per
    block, ``wait=`` adds a wait after each failure (on top of the breaker; ``threshold=0`` turns
    the breaker off), ``retry=`` decides which errors are worth retrying. A
    :class:`~rxsinks.PermanentDeliveryError` (a request that can never be built, a status listed
    as permanent, a disabled endpoint) is never retried, and neither is
    :class:`~rxsinks.SinkClosedError`. A ``Retry-After`` carried by a
    :class:`~rxsinks.WebhookStatusError` delays the next attempt at least that long. All
    waiting goes through the scheduler, so a ``TestScheduler`` sees every wait at an exact
    virtual time (``stop_after_delay`` reads the scheduler's clock here).

    A sink reports a failed attempt by raising, by returning an awaitable that raises, or by
    returning an observable that errors (see :func:`~rxsinks.deliver`).

    Example:
        >>> from reactivex import from_iterable, operators as ops
        >>> from reactivex.testing import TestScheduler
        >>> from rxsinks import deliver
        >>> attempts = []
        >>> def flaky(block):  # the sink: returns = delivered, raises = failed
        ...     attempts.append(block)
        ...     if len(attempts) < 3:
        ...         raise ConnectionError("receiver down")
        >>> clock = TestScheduler()
        >>> _ = from_iterable(["a"]).pipe(
        ...     ops.map(str.upper),  # a plain reactivex operator
        ...     deliver(flaky, retry=retry_with_breaker(2, 5), scheduler=clock),
        ...     ops.map(lambda outcome: f"{outcome.kind.value} at {clock.clock:g}"),
        ... ).subscribe(print)
        >>> _ = clock.start()
        failed at 0
        failed at 0
        breaker_opened at 0
        breaker_half_open at 5
        delivered at 5
        breaker_closed at 5
        >>> from tenacity.stop import stop_after_attempt
        >>> policy = retry_with_breaker(3, 0.5, stop=stop_after_attempt(20))
        >>> events.pipe(deliver(post, retry=policy)).subscribe(print)  # doctest: +SKIP

    Marble diagram (``threshold=2``, ``backoff`` = 5 ticks; the sink fails ``a`` four times,
    then takes it; the stage's outcomes: ``x`` failed attempt, ``o`` breaker open, ``h`` half
    open, ``c`` closed, ``A`` ``a`` delivered)::

        -a-------------------|
        [ deliver(sink, retry=retry_with_breaker(2, 5)) ]
        -(xxo)(hxo)(hxo)(hAc)|

    Args:
        threshold: consecutive failures before the breaker opens; 0 turns it off.
        backoff: seconds between attempts while the breaker is open.
        breaker: a :class:`Breaker` to share instead of one per subscription.
        stop: a tenacity stop strategy (attempts are counted per block).
        wait: a tenacity wait strategy: seconds to wait after each failed attempt.
        retry: a tenacity retry strategy deciding whether an error is retried.
        scheduler: the clock for waits; by default the stage's (the running asyncio loop).

    Returns:
        A :class:`RetryWithBreaker`: a policy for :func:`~rxsinks.deliver`, and an operator for
        a cold observable of one delivery.
    """
    return RetryWithBreaker(
        threshold, backoff, breaker=breaker, stop=stop, wait=wait, retry=retry, scheduler=scheduler
    )
