"""The per-endpoint queue: decouples the producer from delivery, one item in flight at a time."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import CurrentThreadScheduler
from reactivex.scheduler.eventloop import AsyncIOScheduler

from ._exceptions import SINK_CLOSED, QueueFullError
from ._flow import FlushToken, direct_emitter, flush_scope, join_flush

__all__ = ["Overflow", "Queue", "clock_of", "default_scheduler", "queue", "weight_of"]

log = logging.getLogger("rxsinks.queue")

_T = TypeVar("_T")
Overflow = Literal["drop_oldest", "drop_newest", "error"]
_OVERFLOWS = ("drop_oldest", "drop_newest", "error")
Hook = Callable[[Any], None]

# Drain at most this many items per loop iteration, so a long backlog delivered by a synchronous
# sink never starves the event loop (ingest, timers and other endpoints run in between).
_DRAIN_SLICE = 512


# a tuple of types is checked faster than a union
_BLOCK_TYPES = (tuple, list)


def weight_of(item: object) -> int:
    """How many events an item stands for: the length of a block, else 1."""
    return len(item) if isinstance(item, _BLOCK_TYPES) else 1


def _call_hook(hook: Callable[..., None], *args: Any) -> None:
    # a raising hook (a metrics bug, say) must not wedge the queue: it runs in the middle of
    # the drain loop's bookkeeping, where an escaping exception would leave the lane "draining"
    # forever (or, from on_ingress, an accepted item buffered with no drain scheduled)
    try:
        hook(*args)
    except Exception:
        log.exception("queue hook %r raised; ignored", hook)


def default_scheduler() -> abc.SchedulerBase:
    """The scheduler stages use when none is given: the running asyncio loop, else trampoline."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return CurrentThreadScheduler.singleton()
    return AsyncIOScheduler(loop)


def clock_of(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """A cheap reading of ``scheduler``'s clock in seconds (the loop's monotonic clock on
    asyncio; the virtual clock on a test scheduler)."""
    if isinstance(scheduler, AsyncIOScheduler):
        return scheduler._loop.time
    return lambda: scheduler.to_seconds(scheduler.now)


class Queue(Generic[_T]):
    """A FIFO queue between a producer and one downstream stage.

    ``on_next`` only buffers and returns. The queue hands items downstream one at a time on its
    scheduler; an item is *in flight* until the stage below settles it (see ``rxsinks._flow``:
    an asynchronous sink or retry operator holds the item until its delivery is over), and the
    next item goes only then. Completion passes on after everything buffered was handed down
    and settled.

    The buffer is unbounded by default (the registry's behaviour). With ``max_events`` it holds at
    most that many events (blocks count their length) and ``overflow`` says what gives:
    ``"drop_oldest"`` (the oldest buffered item), ``"drop_newest"`` (the incoming item) or
    ``"error"`` (``on_next`` raises :class:`~rxsinks.QueueFullError`). Every drop is counted in
    :attr:`dropped` and reported to ``on_drop``.

    Hooks mirror the registry's queue listener: ``on_ingress(item)`` when an item is accepted,
    ``on_egress(item)`` when its downstream attempt is over, whatever the outcome; the registry's
    *Pending* gauge is ``ingress - egress``.

    A ``Queue`` object is itself the operator (``source.pipe(Queue(...))``); :attr:`pending`,
    :attr:`dropped` and :attr:`in_flight` add up over its subscriptions.
    """

    def __init__(
        self,
        *,
        max_events: int | None = None,
        overflow: Overflow = "drop_oldest",
        on_ingress: Hook | None = None,
        on_egress: Hook | None = None,
        on_drop: Hook | None = None,
        on_failure: Callable[[Any, BaseException], None] | None = None,
        weigh: Callable[[Any], int] = weight_of,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events <= 0
        ):
            raise ValueError(f"max_events must be a positive int or None, got {max_events!r}")
        if overflow not in _OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(_OVERFLOWS)}; got {overflow!r}")
        self.max_events = max_events
        self.overflow: Overflow = overflow
        self.on_ingress = on_ingress
        self.on_egress = on_egress
        self.on_drop = on_drop
        self.on_failure = on_failure
        self.weigh = weigh
        self.scheduler = scheduler
        self.dropped = 0
        """Events dropped by the overflow policy."""
        # the live subscriptions: the counters below are read from them, so the hot path
        # keeps no shared totals up to date
        self._lanes: dict[int, Lane[_T]] = {}

    @property
    def pending(self) -> int:
        """Events accepted and not yet through their downstream attempt (buffered + in flight)."""
        return sum(lane._remaining() for lane in list(self._lanes.values()))

    @property
    def in_flight(self) -> int:
        """Items handed downstream and not yet settled."""
        return sum(1 for lane in list(self._lanes.values()) if lane._has_inflight)

    def __call__(self, source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            scheduler = self.scheduler or scheduler_ or default_scheduler()
            lane = Lane(self, observer, scheduler)
            upstream = source.subscribe(lane, scheduler=scheduler_)
            return CompositeDisposable(upstream, Disposable(lane.dispose))

        return Observable(subscribe)


class Lane(abc.ObserverBase[_T], Generic[_T]):
    """One subscription's buffer and drain loop (also used by broadcasts to isolate members)."""

    __rxsinks_stage__ = True

    def __init__(
        self, owner: Queue[_T], observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase
    ) -> None:
        self._owner = owner
        self._observer = observer
        self._scheduler = scheduler
        self._emit = direct_emitter(observer)
        # items and their weights side by side: no tuple per item, as a long backlog of
        # tuples makes the cyclic garbage collector walk every one of them again and again
        self._buffer: deque[_T] = deque()
        self._weights: deque[int] = deque()
        # the last class seen that weighs 1 under weight_of (an Event, typically): checking
        # the class is cheaper than weight_of's isinstance against two types
        self._unit_class: type | None = None
        self._buffered_weight = 0
        self._inflight: _T | None = None
        self._inflight_weight = 0
        self._has_inflight = False
        self._draining = False  # a drain is scheduled or running
        self._in_emit = False
        self._completed = False
        self._error: Exception | None = None
        self._finished = False
        self._disposed = False
        self._refusing = False  # completed or disposed: one check per item
        self._flush: FlushToken | None = None
        owner._lanes[id(self)] = self

    # -- upstream side -------------------------------------------------------------------------

    def on_next(self, value: _T) -> None:
        if self._refusing:
            raise SINK_CLOSED
        owner = self._owner
        weigh = owner.weigh
        if weigh is not weight_of:
            weight = weigh(value)
        elif type(value) is self._unit_class:
            weight = 1
        else:
            weight = weight_of(value)
            if not isinstance(value, _BLOCK_TYPES):
                self._unit_class = type(value)
        limit = owner.max_events
        if (
            limit is not None
            and self._buffered_weight + weight > limit
            and not self._make_room(value, weight, limit)
        ):
            return
        self._buffer.append(value)
        self._weights.append(weight)
        self._buffered_weight += weight
        if owner.on_ingress is not None:
            _call_hook(owner.on_ingress, value)
        if not self._draining:
            self._draining = True
            self._scheduler.schedule(self._drain)

    def _make_room(self, value: _T, weight: int, limit: int) -> bool:
        owner = self._owner
        if owner.overflow == "error":
            raise QueueFullError(limit)
        if owner.overflow == "drop_newest" or weight > limit:
            self._dropped(value, weight)
            return False
        while self._buffer and self._buffered_weight + weight > limit:
            oldest, oldest_weight = self._buffer.popleft(), self._weights.popleft()
            self._buffered_weight -= oldest_weight
            self._dropped(oldest, oldest_weight)
        return True

    def _dropped(self, item: _T, weight: int) -> None:
        self._owner.dropped += weight
        log.warning("queue full: dropped %d event(s)", weight)
        if self._owner.on_drop is not None:
            _call_hook(self._owner.on_drop, item)

    def on_error(self, error: Exception) -> None:
        # deliver what was accepted, then pass the error on: nothing accepted is lost
        self._error = error
        self._complete()

    def on_completed(self) -> None:
        self._complete()

    def _complete(self) -> None:
        if self._completed:
            return
        self._completed = True
        self._refusing = True
        self._flush = join_flush(self._remaining)
        if not self._draining and not self._has_inflight:
            self._finish()

    def _remaining(self) -> int:
        return self._buffered_weight + (self._inflight_weight if self._has_inflight else 0)

    def dispose(self) -> None:
        self._disposed = True
        self._refusing = True
        self._buffer.clear()
        self._weights.clear()
        self._buffered_weight = 0
        if not self._has_inflight:
            self._owner._lanes.pop(id(self), None)  # else once it settles
        if self._flush is not None:
            self._flush.done()
            self._flush = None

    # -- downstream side -----------------------------------------------------------------------

    def _drain(self, _scheduler: abc.SchedulerBase | None = None, _state: Any = None) -> None:
        buffer = self._buffer
        weights = self._weights
        on_egress = self._owner.on_egress
        emit = self._emit
        settled = self._settled
        sent = 0
        self._in_emit = True  # a settle during emit() must not start a nested drain
        try:
            while buffer and not self._disposed:
                if sent == _DRAIN_SLICE:
                    self._scheduler.schedule(self._drain)
                    return
                item = buffer.popleft()
                weight = weights.popleft()
                self._buffered_weight -= weight
                self._inflight = item
                self._inflight_weight = weight
                self._has_inflight = True
                if emit(item, settled):
                    # done at once, no callback (see _flow.direct_emitter): _settled() inlined
                    self._has_inflight = False
                    if on_egress is not None:
                        _call_hook(on_egress, item)
                elif self._has_inflight:
                    return  # held downstream: _settled() resumes the drain
                sent += 1
        finally:
            self._in_emit = False
        self._draining = False
        if self._completed and not self._has_inflight and not buffer:
            self._finish()

    def _settled(self, error: BaseException | None) -> None:
        item = self._inflight
        self._inflight = None
        self._has_inflight = False
        owner = self._owner
        if error is not None:
            # the registry's queue drops a block whose downstream failed, with a log line; in
            # rxsinks the retry stage below has already dead-lettered or reported it
            if owner.on_failure is not None:
                _call_hook(owner.on_failure, item, error)
            else:
                log.debug("queue: downstream finished with an error: %s", error)
        if owner.on_egress is not None:
            _call_hook(owner.on_egress, item)
        if self._disposed:
            owner._lanes.pop(id(self), None)
        elif not self._in_emit:
            self._drain()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._owner._lanes.pop(id(self), None)  # flushed: nothing left to count
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


def queue(
    *,
    max_events: int | None = None,
    overflow: Overflow = "drop_oldest",
    on_ingress: Hook | None = None,
    on_egress: Hook | None = None,
    on_drop: Hook | None = None,
    on_failure: Callable[[Any, BaseException], None] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Queue[Any]:
    """Buffer items so that the producer never waits for delivery.

    Items are handed downstream one at a time, in order; the next goes when the stage below has
    settled the previous one (an asynchronous sink or :func:`retry_with_breaker` holds each item
    until its delivery is over). Completion is passed on only after everything buffered went
    through. Unbounded by default, like the registry; see :class:`Queue` for bounds and hooks.

    Example:
        >>> q = queue(max_events=10_000, overflow="drop_oldest")
        >>> pipeline = events.pipe(q, retry_with_breaker())  # doctest: +SKIP
        >>> q.pending, q.dropped  # doctest: +SKIP

    Marble diagram (the sink below takes 3 ticks per item)::

        --a-b-c-------------|
        [       queue()      ]
        --a-----b-----c-----|

    Args:
        max_events: bound on buffered events (blocks count their length); ``None`` is unbounded.
        overflow: what a full queue does: ``"drop_oldest"``, ``"drop_newest"`` or ``"error"``.
        on_ingress: called with each accepted item.
        on_egress: called with each item once its downstream attempt is over.
        on_drop: called with each item the overflow policy dropped.
        on_failure: called with an item and the error when its downstream attempt failed.
        scheduler: where the drain runs; by default the running asyncio loop.

    Returns:
        A :class:`Queue`: the operator, with live counters.
    """
    return Queue(
        max_events=max_events,
        overflow=overflow,
        on_ingress=on_ingress,
        on_egress=on_egress,
        on_drop=on_drop,
        on_failure=on_failure,
        scheduler=scheduler,
    )
