"""The delivery stage: buffer, deliver each block through a sink, retry, report outcomes.

This is rxsinks' ``concatMap``. Reactor writes a webhook pipeline as
``flux.concatMap(b -> post(b).retryWhen(...))``: the delivery of one block is a cold inner
publisher (subscribing is one attempt, completing is success, an error is a failure), one inner
is in flight at a time, and the result completes after the last inner did. :func:`deliver` is
that, with the registry's parts built in: its buffer (a :func:`~rxsinks.queue`, or a durable
store), its retry (:func:`~rxsinks.retry_with_breaker`), and an output that says what happened,
an :class:`~rxsinks.Outcome` per attempt, dead letter, drop and breaker transition.

How a sink says how the delivery went travels through Rx itself, never through a side channel:
a sink is any callable taking one block, and

* it **returns** (anything but an awaitable or an observable): delivered;
* it **raises**: the attempt failed;
* it returns an **awaitable**: delivered when it completes, failed when it raises (the stage
  awaits it on the running asyncio loop);
* it returns an **observable**: delivered when it completes, failed when it errors (its values
  are ignored); a retry calls the sink again, so the observable must be cold.

Because nothing is carried outside the values and notifications, any reactivex operator may sit
above the stage or below it (``map``, ``filter``, ``observe_on``, ``delay``, ``subscribe_on``...):
the buffer's bound, the one-block-in-flight rule, retries and the completion that waits for the
last delivery all hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar, overload

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.internal import noop
from reactivex.observer.autodetachobserver import AutoDetachObserver
from reactivex.scheduler.eventloop import AsyncIOScheduler

from ._breaker import Breaker, BreakerState
from ._buffer import BacklogFactory, Fifo, Hold, Keyed, events_of
from ._exceptions import SINK_CLOSED, PermanentDeliveryError, QueueFullError, SinkClosedError
from ._outcome import Outcome, OutcomeKind
from ._queue import Queue, call_hook
from ._retry import RetryWithBreaker, new_call_state
from ._scheduling import Confinement, clock_of, confinement_of, default_scheduler, loop_of
from ._throttle import LogThrottle

__all__ = ["Deliver", "Sink", "deliver", "direct_on_next"]

log = logging.getLogger("rxsinks.deliver")

_T = TypeVar("_T")
_B = TypeVar("_B")

Sink = Callable[[_B], object]
"""A sink: a callable taking one block; it returns, raises, or returns an awaitable or an
observable (see :mod:`rxsinks._deliver`)."""

# an Outcome from its eight fields in order, without the named tuple's keyword handling (the
# hot path makes one per block)
_record = tuple.__new__

# Deliver at most this many blocks per scheduler turn when the sink is synchronous, so a long
# backlog never starves the event loop (ingest, timers and other endpoints run in between).
_SLICE = 512

_K = OutcomeKind
_BREAKER_KINDS = {
    BreakerState.OPEN: OutcomeKind.BREAKER_OPENED,
    BreakerState.HALF_OPEN: OutcomeKind.BREAKER_HALF_OPEN,
    BreakerState.CLOSED: OutcomeKind.BREAKER_CLOSED,
}


class Deliver(Generic[_T, _B]):
    """The delivery operator; see :func:`deliver`. Counters add up over its subscriptions.

    Attributes:
        sink: the sink each block is handed to.
        retry: the retry policy, or ``None`` (one attempt per block).
        concurrency: the most blocks in flight per subscription.
        key: with ``concurrency > 1``, blocks of one key go one at a time, in order.
        endpoint: the name put on outcomes and log lines.
    """

    def __init__(
        self,
        sink: Sink[_B],
        *,
        queue: Queue[Any] | BacklogFactory[Any] | None = None,
        retry: RetryWithBreaker | None = None,
        concurrency: int = 1,
        key: Callable[[_B], Hashable] | None = None,
        delay: float = 0.0,
        timestamp: Callable[[_B], float | None] | None = None,
        endpoint: str = "",
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        if not callable(sink):
            hint = (
                "; an observer is not a sink: subscribe it to the outcomes, or pass the function "
                "that delivers"
                if hasattr(sink, "on_next")
                else ""
            )
            raise TypeError(
                f"a sink must be callable (a function, a coroutine function, or a function "
                f"returning an observable), got {type(sink).__name__}{hint}"
            )
        if retry is not None and not isinstance(retry, RetryWithBreaker):
            raise TypeError(
                f"retry must be made by retry_with_breaker(...), got {type(retry).__name__}"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the block, got {key!r}")
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
            or delay < 0
        ):
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        if timestamp is not None and not callable(timestamp):
            raise TypeError(f"timestamp must be a function of the block, got {timestamp!r}")
        if queue is not None and not isinstance(queue, Queue) and not hasattr(queue, "backlog"):
            raise TypeError(f"queue must be made by queue(...), got {type(queue).__name__}")
        if not isinstance(endpoint, str):
            raise TypeError(f"endpoint must be a str, got {type(endpoint).__name__}")
        self.sink = sink
        self.retry = retry
        self.concurrency = concurrency
        self.key = key
        self.delay = float(delay)
        self.timestamp = timestamp
        self.endpoint = endpoint
        self._queue: Queue[Any] | BacklogFactory[Any] = queue if queue is not None else Queue()
        self._scheduler = scheduler
        self._lanes: dict[int, _Lane[Any, Any]] = {}

    def __repr__(self) -> str:
        name = getattr(self.sink, "__qualname__", None) or repr(self.sink)
        parts = [name]
        if self.retry is not None:
            parts.append(f"retry={self.retry!r}")
        if self.concurrency != 1:
            parts.append(f"concurrency={self.concurrency}")
        return f"deliver({', '.join(parts)})"

    @property
    def queue(self) -> Queue[Any] | BacklogFactory[Any]:
        """The buffer's description (with its live counters)."""
        return self._queue

    @property
    def pending(self) -> int:
        """Events accepted and not yet through their delivery, over the live subscriptions."""
        return sum(lane.pending for lane in list(self._lanes.values()))

    @property
    def in_flight(self) -> int:
        """Blocks handed to the sink (or waiting for a retry) and not yet settled."""
        return sum(lane.active for lane in list(self._lanes.values()))

    def abort(self, error: BaseException = SINK_CLOSED) -> None:
        """Stop every subscription now: attempts in flight are cancelled, nothing is retried,
        and what was held is given up (dead-lettered with ``error``; a durable store keeps it);
        then each outcome stream completes. Later items are refused."""
        for lane in list(self._lanes.values()):
            lane.abort(error)

    def _make_backlog(self, scheduler: abc.SchedulerBase) -> Any:
        queue = self._queue
        hold = None
        if self.delay or self.timestamp is not None:
            hold = Hold(self.delay, self.timestamp, clock_of(scheduler))
        if isinstance(queue, Queue):
            if self.concurrency > 1 and self.key is not None:
                return Keyed(queue, self.key, hold)
            return Fifo(queue, hold)
        # a durable backlog times its waits (delay, batching, store retries) on the stage's
        # clock, so the stage's scheduler (virtual time too) drives them through ready_at
        return queue.backlog(self.key, self.concurrency, hold, clock_of(scheduler))

    def __call__(self, source: Observable[_T]) -> Observable[Outcome]:
        def subscribe(
            observer: abc.ObserverBase[Outcome], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            # a delivery belongs on the event loop it was subscribed on: a subscription's
            # scheduler is only a hint, and operators below (delay, say) pass their own
            scheduler = (
                self._scheduler
                or (self.retry.scheduler if self.retry is not None else None)
                or _running_loop_scheduler()
                or scheduler_
                or default_scheduler()
            )
            lane_class = _LockedLane if confinement_of(scheduler) is Confinement.LOCKED else _Lane
            lane: _Lane[Any, Any] = lane_class(
                self, observer, scheduler, self._make_backlog(scheduler)
            )
            self._lanes[id(lane)] = lane
            lane.start()
            upstream = source.subscribe(lane, scheduler=scheduler_)
            return CompositeDisposable(upstream, Disposable(lane.dispose))

        return Observable(subscribe)


class _Attempt:
    """A block whose delivery is not over at once: awaited, retried, or waiting for the breaker."""

    __slots__ = ("block", "handle", "live", "number", "started")

    def __init__(self, block: Any, number: int, started: float) -> None:
        self.block = block
        self.number = number
        self.started = started
        self.handle: Any = None  # the task, the inner subscription, or the timer
        self.live = True

    def cancel(self) -> None:
        self.live = False
        handle, self.handle = self.handle, None
        if isinstance(handle, asyncio.Future | concurrent.futures.Future):
            handle.cancel()
        elif handle is not None:
            handle.dispose()


class _Inner(abc.ObserverBase[Any]):
    """Observes one delivery returned as an observable."""

    __slots__ = ("_attempt", "_lane")

    def __init__(self, lane: _Lane[Any, Any], attempt: _Attempt) -> None:
        self._lane = lane
        self._attempt = attempt

    def on_next(self, value: Any) -> None:
        pass

    def on_error(self, error: Exception) -> None:
        self._lane.settle_from_anywhere(self._attempt, error)

    def on_completed(self) -> None:
        self._lane.settle_from_anywhere(self._attempt, None)


class _Lane(abc.ObserverBase[_T], Generic[_T, _B]):
    """One subscription of the stage (confined to one thread: a loop, or virtual time)."""

    def __init__(
        self,
        stage: Deliver[_T, _B],
        observer: abc.ObserverBase[Outcome],
        scheduler: abc.SchedulerBase,
        backlog: Any,
    ) -> None:
        self._stage = stage
        self._sink = stage.sink
        self._limit = stage.concurrency
        self._endpoint = stage.endpoint
        self._observer = observer
        # outcomes go straight to the subscriber's on_next (past reactivex's AutoDetachObserver,
        # which only adds a stopped check this stage makes itself): one layer less per outcome
        self._on_next_out = (
            observer._on_next if type(observer) is AutoDetachObserver else observer.on_next
        )
        self._scheduler = scheduler
        self._now = clock_of(scheduler)
        self._loop = loop_of(scheduler)
        # where an awaitable a sink returns runs when the scheduler is not a loop: the loop
        # running where the stage was subscribed, if any
        self._home_loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._home_loop = asyncio.get_running_loop()
        # on a loop, work is queued straight on it; elsewhere through the scheduler
        self._call_soon = (
            self._loop.call_soon
            if self._loop is not None and confinement_of(scheduler) is Confinement.LOOP
            else None
        )
        # on a loop, the thread it runs on: a call from another (an observe_on on a thread pool
        # above, say) is handed over to the loop, since the lane keeps no lock
        self._loop_thread: int | None = None
        if self._call_soon is not None:
            try:
                if asyncio.get_running_loop() is self._loop:
                    self._loop_thread = threading.get_ident()
            except RuntimeError:
                pass
        self._backlog = backlog
        self._durable: bool = getattr(backlog, "durable", False)
        # the hot path: a plain memory buffer is filled and drained here directly, and outcomes
        # are built only if the observer looks at them (subscribe() with no on_next does not)
        self._fifo: Fifo[Any] | None = (
            backlog if type(backlog) is Fifo and backlog.hold is None else None
        )
        self._stage_egress = None if self._fifo is None else self._fifo.owner.on_egress
        self._plain_put = self._fifo is not None and self._fifo.plain
        self._want = not (type(observer) is AutoDetachObserver and observer._on_next is noop)
        self._policy = stage.retry
        self._breaker: Breaker | None = None
        self._call_state = None
        if self._policy is not None:
            self._breaker = self._policy.new_breaker()
            self._call_state = new_call_state()
        self.active = 0  # blocks taken and not settled (attempting or waiting to retry)
        self._attempts: set[_Attempt] = set()
        # the wake-up set for a block held back by time (a delivery delay)
        self._wake_timer = SerialDisposable()
        self._wake_at: float | None = None
        # one block at a time on a loop: coroutines run back to back in one task (_run)
        self._runner: asyncio.Task[None] | None = None
        self._run_next: tuple[_Attempt, Coroutine[Any, Any, Any]] | None = None
        self._waiting_breaker: set[_Attempt] = set()
        self._scheduled = False  # a drain is scheduled
        self._out: deque[Outcome] = deque()
        self._emitting = False
        self._held: list[Outcome] | None = None  # transitions held back during bookkeeping
        self._completed = False  # no more items will come (upstream ended, or aborted)
        self._aborted = False  # given up: finish without waiting for the buffer to drain
        self._error: Exception | None = None
        self._finished = False
        self._disposed = False
        self._closed: BaseException | None = None  # the sink said it is closed: terminal
        self._unlisten: Callable[[], None] | None = None
        # a receiver down for an hour fails thousands of attempts: a line when it starts, then
        # one a minute with a count (each attempt is an outcome anyway)
        self._retry_log = LogThrottle(log, logging.WARNING)
        self._give_up_log = LogThrottle(log, logging.WARNING)
        if self._breaker is not None:
            self._unlisten = self._breaker.listen(self._breaker_changed)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._backlog.start(self.wake)

    @property
    def pending(self) -> int:
        return int(self._backlog.pending)

    def dispose(self) -> None:
        """Downstream unsubscribed: cancel everything, count nothing, say nothing."""
        if self._call_soon is not None and threading.get_ident() != self._loop_thread:
            self._hand_over(self.dispose)
            return
        if self._disposed:
            return
        self._disposed = True
        self._completed = True
        self._wake_timer.dispose()
        self._cancel_attempts()
        self._stop_listening()
        self._backlog.dispose()
        self._stage._lanes.pop(id(self), None)

    def abort(self, error: BaseException) -> None:
        if self._call_soon is not None and threading.get_ident() != self._loop_thread:
            self._hand_over(self.abort, error)
            return
        if self._disposed or self._finished:
            return
        self._completed = True
        self._aborted = True
        held = [attempt for attempt in self._attempts if attempt.live]
        self._cancel_attempts()
        for attempt in held:
            if self._durable:
                # a durable store keeps what was in flight: it goes again after a restart
                self.active -= 1
                self._backlog.done(attempt.block, SINK_CLOSED, attempt.number)
            else:
                self._give_up(attempt.block, attempt.number, error, report=True)
        self._backlog.close()
        for block in self._backlog.abandon():
            self.active += 1  # (it was never taken: _give_up counts it out)
            self._give_up(block, 0, error, report=True, taken=False)
        self._maybe_finish()
        self._flush_out()

    def _cancel_attempts(self) -> None:
        attempts, self._attempts = self._attempts, set()
        self._waiting_breaker.clear()
        for attempt in attempts:
            attempt.cancel()
        if attempts and self._breaker is not None:
            # one of them may have been the breaker's half-open trial
            self._breaker.abandon()

    def _stop_listening(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    # -- upstream ------------------------------------------------------------------------------

    def on_next(self, value: _T) -> None:
        if self._call_soon is not None and threading.get_ident() != self._loop_thread:
            self._hand_over(self._put_handed_over, value)
            return
        if self._completed:
            if self._disposed:
                return
            raise SINK_CLOSED
        if self._plain_put:
            fifo = self._fifo
            assert fifo is not None
            weight = 1 if type(value) is fifo.unit_class else fifo.weigh(value)
            fifo.items.append(value)
            fifo.weights.append(weight)
            fifo.buffered += weight
        else:
            backlog = self._backlog
            dropped = backlog.put(value)
            if dropped:
                for item in dropped:
                    self._out.append(Outcome(_K.DROPPED, events_of(item), endpoint=self._endpoint))
            elif backlog.quiet and self._wake_at is not None:
                # it joined a partial block that a wake-up already set will send (a drain per
                # event and endpoint cost a tenth of a durable relay's CPU with 300 endpoints)
                if self._out:
                    self._flush_out()
                return
        if not self._scheduled and self.active < self._limit:
            self._scheduled = True
            self._schedule(self._drain)
        if self._out:
            self._flush_out()

    def _hand_over(self, action: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        if self._loop_thread is None and _on_loop(self._loop):
            self._loop_thread = threading.get_ident()
            action(*args)
            return
        self._loop.call_soon_threadsafe(action, *args)

    def _put_handed_over(self, value: _T) -> None:
        # from another thread: QueueFullError has nobody to reach, so a full queue drops it
        try:
            self.on_next(value)
        except SinkClosedError:
            log.warning("%san item arrived after completion; dropped", _prefix(self._endpoint))
        except QueueFullError as exc:
            self._out.append(Outcome(_K.DROPPED, events_of(value), endpoint=self._endpoint))
            log.warning("%s%s; dropped an item from another thread", _prefix(self._endpoint), exc)
            self._flush_out()

    def on_error(self, error: Exception) -> None:
        # what was accepted is still delivered; the error passes on after it (Reactor's
        # concatMapDelayError): an upstream failure must not lose events
        if self._call_soon is not None and threading.get_ident() != self._loop_thread:
            self._hand_over(self.on_error, error)
            return
        if self._completed:
            return
        self._error = error
        self._end()

    def on_completed(self) -> None:
        if self._call_soon is not None and threading.get_ident() != self._loop_thread:
            self._hand_over(self.on_completed)
            return
        if self._completed:
            return
        self._end()

    def _end(self) -> None:
        self._completed = True
        self._backlog.close()
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self._drain)

    def wake(self) -> None:
        """Blocks became ready on the backlog's own (read back from a store, say)."""
        if not self._scheduled and not self._disposed:
            self._scheduled = True
            self._schedule(self._drain)

    # -- delivery ------------------------------------------------------------------------------

    def _schedule(self, action: Callable[[], None]) -> None:
        call_soon = self._call_soon
        if call_soon is not None:
            call_soon(action)
        else:
            self._scheduler.schedule(lambda _s, _t: action())

    def _drain(self) -> None:
        self._scheduled = False
        self._pump()
        self._maybe_finish()
        if self._out:
            self._flush_out()

    def _pump(self) -> None:
        """Start deliveries while there is room and a block to go."""
        if (
            self._fifo is not None
            and self._closed is None
            and (self._breaker is None or not self._breaker.failures)
            and not self._pump_fifo()
        ):
            return
        backlog = self._backlog
        sent = 0
        while self.active < self._limit and not self._disposed:
            if sent == _SLICE:
                if not self._scheduled:
                    self._scheduled = True
                    self._schedule(self._drain)
                return
            block = backlog.take()
            if block is None:
                self._wake_when_ready()
                return
            sent += 1
            self.active += 1
            if self._closed is not None:
                self._give_up(block, 0, self._closed, report=not self._durable)
                continue
            breaker = self._breaker
            if breaker is not None and breaker.failures:
                self._try(_Attempt(block, 0, self._now()))
                continue
            # the common case, inlined: a first attempt through a healthy breaker
            started = self._now()
            try:
                result = self._call(block)
            except Exception as exc:
                self._failed(_Attempt(block, 1, started), exc)
                continue
            if result is None or not (
                isinstance(result, Observable) or inspect.isawaitable(result)
            ):
                self._delivered(block, 1, started, result)
            else:
                self._follow(_Attempt(block, 1, started), result)

    def _wake_when_ready(self) -> None:
        """A block held back by time: pump again when it may go."""
        ready_at = self._backlog.ready_at()
        if ready_at is None or self._disposed:
            return
        if self._wake_at is not None and self._wake_at <= ready_at:
            return  # a wake-up at that time or earlier is set already
        self._wake_at = ready_at
        self._wake_timer.disposable = self._scheduler.schedule_relative(
            max(0.0, ready_at - self._now()), lambda _s, _t: self._woken()
        )

    def _woken(self) -> None:
        self._wake_at = None
        self.wake()

    def _pump_fifo(self) -> bool:
        """The common case, written out: a memory buffer, a healthy breaker, a synchronous sink.

        Returns False when it is done (nothing to take, no room, or the slice is used up), True
        when the general loop should go on (the breaker is counting failures now).
        """
        fifo = self._fifo
        assert fifo is not None
        items, weights = fifo.items, fifo.weights
        call, now, out, want = self._call, self._now, self._out, self._want
        on_egress = self._stage_egress
        limit = self._limit
        breaker = self._breaker
        sent = 0
        started = now()
        while items and self.active < limit and not self._disposed:
            if sent == _SLICE:
                if not self._scheduled:
                    self._scheduled = True
                    self._schedule(self._drain)
                return False
            sent += 1
            block = items.popleft()
            weight = weights.popleft()
            fifo.buffered -= weight
            fifo.taken += weight
            fifo.in_flight += 1
            self.active += 1
            try:
                result = call(block)
            except Exception as exc:
                self._failed(_Attempt(block, 1, started), exc)
                if self._closed is not None or (breaker is not None and breaker.failures):
                    return True
                started = now()
                continue
            if result is None or not (
                isinstance(result, Observable) or inspect.isawaitable(result)
            ):
                # delivered: done() and _delivered() inlined
                fifo.taken -= weight
                fifo.in_flight -= 1
                self.active -= 1
                if on_egress is not None:
                    call_hook(on_egress, block)
                if want:
                    finished = now()
                    status = getattr(result, "status", None) if result is not None else None
                    out.append(
                        _record(
                            Outcome,
                            (
                                _K.DELIVERED,
                                block if type(block) is tuple else events_of(block),
                                1,
                                None,
                                status if isinstance(status, int) else None,
                                None,
                                finished - started,
                                self._endpoint,
                            ),
                        )
                    )
                    started = finished
            else:
                self._follow(_Attempt(block, 1, started), result)
                started = now()
        return False

    def _call(self, block: _B) -> object:
        return self._sink(block)

    def _try(self, attempt: _Attempt) -> None:
        """Attempt now, or once the breaker lets it."""
        if not attempt.live:
            return
        breaker = self._breaker
        if breaker is not None:
            wait = breaker.permit(self._now())
            if wait > 0:
                self._attempts.add(attempt)
                self._waiting_breaker.add(attempt)
                attempt.handle = self._scheduler.schedule_relative(
                    wait, lambda _s, _t: self._retry_due(attempt)
                )
                return
        self._waiting_breaker.discard(attempt)
        attempt.number += 1
        if attempt.number == 1:
            attempt.started = self._now()
        try:
            result = self._call(attempt.block)
        except Exception as exc:
            self._failed(attempt, exc)
            return
        if result is None or not (isinstance(result, Observable) or inspect.isawaitable(result)):
            self._attempts.discard(attempt)
            self._delivered(attempt.block, attempt.number, attempt.started, result)
        else:
            self._follow(attempt, result)

    def _retry_due(self, attempt: _Attempt) -> None:
        attempt.handle = None
        if not attempt.live or self._disposed:
            return
        self._try(attempt)
        self._pump()
        self._maybe_finish()
        if self._out:
            self._flush_out()

    def _follow(self, attempt: _Attempt, result: object) -> None:
        """Wait for an asynchronous delivery: an awaitable or an observable."""
        self._attempts.add(attempt)
        if isinstance(result, Observable):
            attempt.handle = result.subscribe(_Inner(self, attempt), scheduler=self._scheduler)
            return
        assert isinstance(result, Awaitable)
        loop = self._loop or self._home_loop
        if loop is None or loop.is_closed():
            if inspect.iscoroutine(result):
                result.close()  # never awaited: say so here rather than in a warning
            self._failed(attempt, _no_loop(self._sink))
            return
        future: asyncio.Future[Any] | concurrent.futures.Future[Any]
        if _on_loop(loop):
            if self._limit == 1 and self._call_soon is not None and inspect.iscoroutine(result):
                self._run_in_runner(attempt, result, loop)
                return
            future = asyncio.ensure_future(result, loop=loop)
        else:
            # the sink ran on a thread-based scheduler: its awaitable still runs on the loop
            # the stage was subscribed on
            future = asyncio.run_coroutine_threadsafe(_awaited(result), loop)
        if attempt.live:
            attempt.handle = future
            future.add_done_callback(lambda done: self._task_done(attempt, done))

    def _run_in_runner(
        self,
        attempt: _Attempt,
        coroutine: Coroutine[Any, Any, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Await one block's coroutine in the lane's runner task.

        One block at a time, the next block's coroutine is handed to the task awaiting the
        previous one and starts at once, in the same task: a task per block would cost a task and
        a loop iteration per delivery (about a tenth of the time of a small POST).
        """
        self._run_next = (attempt, coroutine)
        runner = self._runner
        if runner is None:
            runner = self._runner = loop.create_task(self._run())
        attempt.handle = runner

    async def _run(self) -> None:
        try:
            while self._run_next is not None:
                attempt, coroutine = self._run_next
                self._run_next = None
                try:
                    value = await coroutine
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not attempt.live or self._disposed or (task and task.cancelling()):
                        raise  # the stage (disposed, aborted) or the loop cancelled the runner
                    self.settle(attempt, asyncio.CancelledError("the delivery was cancelled"), None)
                except Exception as exc:
                    self.settle(attempt, exc, None)
                else:
                    self.settle(attempt, None, value)
        finally:
            self._runner = None
            leftover, self._run_next = self._run_next, None
            if leftover is not None:
                leftover[1].close()

    def _task_done(
        self, attempt: _Attempt, future: asyncio.Future[Any] | concurrent.futures.Future[Any]
    ) -> None:
        if future.cancelled():
            self.settle(attempt, asyncio.CancelledError("the delivery was cancelled"), None)
            return
        error = future.exception()
        self.settle(attempt, error, None if error is not None else future.result())

    def settle_from_anywhere(self, attempt: _Attempt, error: BaseException | None) -> None:
        """An inner observable finished, maybe on another thread than the loop's."""
        loop = self._loop
        if loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self.settle, attempt, error, None)
                return
        self.settle(attempt, error, None)

    def settle(self, attempt: _Attempt, error: BaseException | None, result: object) -> None:
        """An asynchronous delivery is over."""
        if not attempt.live:
            return  # cancelled (disposed or aborted): already accounted for
        attempt.handle = None
        if error is None:
            self._attempts.discard(attempt)
            self._delivered(attempt.block, attempt.number, attempt.started, result)
        else:
            self._failed(attempt, error)
        self._pump()
        self._maybe_finish()
        if self._out:
            self._flush_out()

    def _delivered(self, block: _B, number: int, started: float, result: object) -> None:
        self.active -= 1
        if number > 1:
            self._retry_log.succeeded("%sdelivering again", _prefix(self._endpoint))
        breaker = self._breaker
        if breaker is not None and (breaker.failures or breaker.state is not BreakerState.CLOSED):
            self._held = []
            breaker.record_success()
            held, self._held = self._held, None
        else:
            held = None
        self._backlog.done(block, None, number)
        if not self._want and not held:
            return
        status = getattr(result, "status", None)
        self._out.append(
            Outcome(
                _K.DELIVERED,
                events_of(block),
                number,
                None,
                status if isinstance(status, int) else None,
                None,
                self._now() - started,
                self._endpoint,
            )
        )
        if held:
            self._out.extend(held)

    def _failed(self, attempt: _Attempt, error: BaseException) -> None:
        if not attempt.live:
            return
        now = self._now()
        block = attempt.block
        if isinstance(error, SinkClosedError):
            # terminal: this block and everything behind it can never go
            self._closed = error
            self._attempts.discard(attempt)
            self._out.append(self._failure(attempt, error, None))
            self._give_up(block, attempt.number, error, report=not self._durable)
            return
        breaker = self._breaker
        held: list[Outcome] | None = None
        if breaker is not None and not isinstance(error, PermanentDeliveryError):
            # a permanent error means the receiver answered: it is not down, so the breaker is
            # not involved. Transitions go out after the failure that caused them.
            self._held = []
            breaker.record_failure(now)
            held, self._held = self._held, None
        retry_in = None
        if self._policy is not None:
            assert self._call_state is not None
            retry_in = self._policy.next_wait(
                self._call_state, error, attempt.number, attempt.started, now, breaker
            )
        self._out.append(self._failure(attempt, error, retry_in))
        if held:
            self._out.extend(held)
        if retry_in is None:
            self._attempts.discard(attempt)
            self._give_up(block, attempt.number, error, report=True)
            return
        self._retry_log.failed(
            "%sattempt %d failed, retrying in %.3fs: %s",
            _prefix(self._endpoint),
            attempt.number,
            retry_in,
            error,
        )
        self._attempts.add(attempt)
        # never recurse: the next attempt runs from the scheduler, even when due at once
        attempt.handle = (
            self._scheduler.schedule_relative(retry_in, lambda _s, _t: self._retry_due(attempt))
            if retry_in > 0
            else self._scheduler.schedule(lambda _s, _t: self._retry_due(attempt))
        )

    def _failure(self, attempt: _Attempt, error: BaseException, retry_in: float | None) -> Outcome:
        status = getattr(error, "status", None)
        return Outcome(
            _K.FAILED,
            events_of(attempt.block),
            attempt.number,
            error,
            status if isinstance(status, int) else None,
            retry_in,
            None,
            self._endpoint,
        )

    def _give_up(
        self,
        block: _B,
        attempts: int,
        error: BaseException,
        *,
        report: bool,
        taken: bool = True,
    ) -> None:
        self.active -= 1
        if taken:
            self._backlog.done(block, error, attempts)
        if not report:
            return
        events = events_of(block)
        status = getattr(error, "status", None)
        self._out.append(
            Outcome(
                _K.DEAD_LETTERED,
                events,
                attempts,
                error,
                status if isinstance(status, int) else None,
                None,
                None,
                self._endpoint,
            )
        )
        if error is not SINK_CLOSED:
            # the registry logs a dropped block; a given-up one deserves at least that (once a
            # minute with a count when they come in a stream: an outcome carries each one)
            self._give_up_log.failed(
                "%sgave up on a block of %d event(s) after %d attempt(s): %s",
                _prefix(self._endpoint),
                len(events),
                attempts,
                error,
            )

    def _breaker_changed(self, state: BreakerState) -> None:
        outcome = Outcome(_BREAKER_KINDS[state], endpoint=self._endpoint)
        if self._held is not None:
            self._held.append(outcome)  # after the attempt that caused it
        else:
            self._out.append(outcome)
        if state is BreakerState.CLOSED and self._waiting_breaker:
            # a trial succeeded (here or in a stage sharing the breaker): waiting blocks may go
            waiting, self._waiting_breaker = self._waiting_breaker, set()
            for attempt in waiting:
                if attempt.handle is not None:
                    attempt.handle.dispose()
                    attempt.handle = self._scheduler.schedule(
                        lambda _s, _t, a=attempt: self._retry_due(a)  # type: ignore[misc]
                    )

    # -- completion and outcomes ---------------------------------------------------------------

    def _maybe_finish(self) -> None:
        if (
            not self._completed
            or self._finished
            or self._disposed
            or self.active
            or not (self._aborted or self._backlog.idle)
        ):
            return
        self._finished = True
        self._stop_listening()
        self._backlog.dispose()
        self._stage._lanes.pop(id(self), None)
        self._flush_out()
        try:
            if self._error is not None:
                self._observer.on_error(self._error)
            else:
                self._observer.on_completed()
        except Exception:
            log.exception("%sthe outcome observer raised on completion", _prefix(self._endpoint))

    def _flush_out(self) -> None:
        if self._emitting:
            return  # an emission further up this thread's stack goes on with the rest
        self._emitting = True
        out = self._out
        try:
            while out and not self._disposed:
                outcome = out.popleft()
                try:
                    self._on_next_out(outcome)
                except Exception:
                    log.exception("%sthe outcome observer raised; ignored", _prefix(self._endpoint))
        finally:
            self._emitting = False


class _LockedLane(_Lane[_T, _B]):
    """A lane on a thread-based scheduler: every entry point takes the lane's lock.

    The lock is never held while the sink runs or while outcomes are emitted, so a producer
    never waits for a delivery, and an observer may call back into the pipeline.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._lock = threading.RLock()
        self._depth = 0  # how deep the holding thread is in the lock (only it writes this)

    def _locked(name: str) -> Any:  # type: ignore[misc]
        def entry(self: _LockedLane[Any, Any], *args: Any) -> Any:
            with self._lock:
                self._depth += 1
                try:
                    result = getattr(_Lane, name)(self, *args)
                finally:
                    self._depth -= 1
            if self._depth == 0:
                self._flush_out()
            return result

        entry.__name__ = name
        return entry

    on_next = _locked("on_next")
    on_error = _locked("on_error")
    on_completed = _locked("on_completed")
    dispose = _locked("dispose")
    abort = _locked("abort")
    wake = _locked("wake")
    _woken = _locked("_woken")
    settle = _locked("settle")
    _drain = _locked("_drain")
    _retry_due = _locked("_retry_due")
    _breaker_changed = _locked("_breaker_changed")
    del _locked

    def _call(self, block: _B) -> object:
        # the sink runs without the lock: a slow one must not hold up the producer
        depth, self._depth = self._depth, 0
        for _ in range(depth):
            self._lock.release()
        try:
            return self._sink(block)
        finally:
            for _ in range(depth):
                self._lock.acquire()
            self._depth = depth

    def _flush_out(self) -> None:
        if self._depth:
            return  # the entry point emits once it let go of the lock
        while True:
            with self._lock:
                if self._emitting or not self._out or self._disposed:
                    return
                self._emitting = True
                outcome = self._out.popleft()
            try:
                self._on_next_out(outcome)
            except Exception:
                log.exception("%sthe outcome observer raised; ignored", _prefix(self._endpoint))
            finally:
                with self._lock:
                    self._emitting = False

    def _maybe_finish(self) -> None:
        if self._depth and (
            self._completed
            and not self._finished
            and not self._disposed
            and not self.active
            and (self._aborted or self._backlog.idle)
        ):
            # completion goes out after the outcomes, and those only once the lock is let go
            self._finished = True
            self._stop_listening()
            self._backlog.dispose()
            self._stage._lanes.pop(id(self), None)
            self._schedule(self._complete_downstream)
            return
        super()._maybe_finish()

    def _complete_downstream(self) -> None:
        self._flush_out()
        try:
            if self._error is not None:
                self._observer.on_error(self._error)
            else:
                self._observer.on_completed()
        except Exception:
            log.exception("%sthe outcome observer raised on completion", _prefix(self._endpoint))


def direct_on_next(observer: abc.ObserverBase[Any]) -> Callable[[Any], None]:
    """How an operator upstream calls ``observer.on_next`` fastest.

    ``Observable.subscribe`` wraps every observer in a reactivex ``AutoDetachObserver``, which
    stops it after a terminal notification. A delivery stage keeps that state itself, so an
    operator on the hot path (the event filter) calls it directly and saves a layer per item.
    """
    if type(observer) is AutoDetachObserver:
        target = getattr(observer._on_next, "__self__", None)
        if isinstance(target, _Lane):
            return target.on_next
    return observer.on_next


def _running_loop_scheduler() -> abc.SchedulerBase | None:
    try:
        return AsyncIOScheduler(asyncio.get_running_loop())
    except RuntimeError:
        return None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _prefix(endpoint: str) -> str:
    return f"{endpoint}: " if endpoint else ""


def _no_loop(sink: Callable[..., Any]) -> RuntimeError:
    name = getattr(sink, "__qualname__", repr(sink))
    return RuntimeError(
        f"{name}() returned an awaitable outside a running asyncio event loop, so nothing "
        "would run it; deliver on the loop (subscribe from a coroutine), or give a plain function"
    )


@overload
def deliver(
    sink: Sink[_B],
    *,
    queue: Queue[Any] | None = None,
    retry: RetryWithBreaker | None = None,
    concurrency: int = 1,
    key: Callable[[_B], Hashable] | None = None,
    delay: float = 0.0,
    timestamp: Callable[[_B], float | None] | None = None,
    endpoint: str = "",
    scheduler: abc.SchedulerBase | None = None,
) -> Deliver[_B, _B]: ...


@overload
def deliver(
    sink: Sink[_B],
    *,
    queue: BacklogFactory[_T],
    retry: RetryWithBreaker | None = None,
    concurrency: int = 1,
    key: Callable[[_B], Hashable] | None = None,
    delay: float = 0.0,
    timestamp: Callable[[_B], float | None] | None = None,
    endpoint: str = "",
    scheduler: abc.SchedulerBase | None = None,
) -> Deliver[_T, _B]: ...


def deliver(
    sink: Sink[_B],
    *,
    queue: Queue[Any] | BacklogFactory[Any] | None = None,
    retry: RetryWithBreaker | None = None,
    concurrency: int = 1,
    key: Callable[[_B], Hashable] | None = None,
    delay: float = 0.0,
    timestamp: Callable[[_B], float | None] | None = None,
    endpoint: str = "",
    scheduler: abc.SchedulerBase | None = None,
) -> Deliver[Any, _B]:
    """Deliver each block through ``sink``, one at a time and in order; emit what happened.

    The stage buffers what arrives (so the producer never waits for a delivery), hands one block
    at a time to the sink, retries a failed attempt as ``retry`` says, and emits an
    :class:`~rxsinks.Outcome` for each attempt's result, each block given up (dead-lettered),
    dropped by a bounded ``queue``, and each breaker transition, in the order they happened. The
    outcome stream completes once everything that arrived before upstream completed has been
    delivered or given up, so flushing is plain Rx: ``await`` it, ``ops.to_list()``,
    ``ops.count()``. An upstream error passes on the same way, after the deliveries.

    **The sink contract.** A sink is any callable taking one block. It *returns*: delivered. It
    *raises*: that attempt failed. It returns an *awaitable* (``async def`` sinks do): delivered
    when it completes, failed when it raises. It returns an *observable*: delivered when it
    completes, failed when it errors. Nothing else is needed: no base class, no callback.
    A result (or an awaited value) with an ``int`` attribute ``status`` puts it on the
    outcome (:meth:`~rxsinks.WebhookSink.deliver` returns such an ``Attempt``).

    Without ``retry`` a failed block is given up at once (a ``DEAD_LETTERED`` outcome, and a
    WARNING log line). With ``concurrency=N`` up to N blocks are in flight at once; with ``key``
    as well, at most one per key, each key in order (the registry's single ordered lane is the
    default, ``concurrency=1``). Disposing the subscription cancels what is in flight and every
    timer; :meth:`Deliver.abort` gives everything up and completes.

    Any reactivex operator may sit above or below the stage, ``observe_on`` included.

    Example:
        >>> from reactivex import operators as ops
        >>> async def post(block):
        ...     ...  # send it; raise if it failed
        >>> outcomes = events.pipe(
        ...     batch(50, 0.5),
        ...     ops.observe_on(scheduler),  # any reactivex operator may be spliced in
        ...     deliver(post, queue=queue(max_events=10_000), retry=retry_with_breaker()),
        ... )  # doctest: +SKIP

    Marble diagram (a sink taking 2 ticks per block; outcomes ``A``, ``B``... delivered)::

        -ab-c-------|
        [ deliver(sink) ]
        ---A-B-C----|

    Args:
        sink: the delivery function (see the contract above).
        queue: the buffer: a :func:`~rxsinks.queue` (bound, overflow, hooks) or a durable queue;
            by default an unbounded one in memory.
        retry: a :func:`~rxsinks.retry_with_breaker` policy; ``None``: one attempt per block.
        concurrency: the most blocks in flight at once (>= 1).
        key: a function of the block; with ``concurrency > 1``, one block per key in flight,
            each key in order (for example the repository of the block's events).
        delay: seconds a block waits before it may go, counted from its ``timestamp`` (or its
            arrival when it has none): for receivers that must not hear of a push before the
            registry serves the tag. Blocks keep their order; nothing else is held up.
        timestamp: a function of the block giving its time in seconds since the epoch (for
            events, :func:`~rxsinks.block_time`), or ``None``.
        endpoint: a name to put on outcomes and log lines.
        scheduler: where deliveries start and retries wait; by default the running asyncio
            loop, or rxsinks' scheduler thread outside a loop.

    Returns:
        A :class:`Deliver`: the operator, from blocks to outcomes, with live counters.

    Raises:
        TypeError: ``sink`` is not callable, or an option has the wrong type.
        ValueError: ``concurrency`` is not a positive int.
    """
    return Deliver(
        sink,
        queue=queue,
        retry=retry,
        concurrency=concurrency,
        key=key,
        delay=delay,
        timestamp=timestamp,
        endpoint=endpoint,
        scheduler=scheduler,
    )
