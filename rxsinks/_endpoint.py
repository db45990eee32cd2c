"""The registry's endpoint as one object: ignore -> batch -> deliver (queue, retry) -> webhook."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.observer.autodetachobserver import AutoDetachObserver
from reactivex.subject import AsyncSubject

from ._batch import batch as batch_operator
from ._broadcast import Broadcast
from ._deliver import Deliver, Sink, deliver
from ._event import Event, block_time
from ._exceptions import SINK_CLOSED, EndpointDisabledError
from ._filter import EventFilter, filter_events
from ._http.sink import Attempt, WebhookSink
from ._metrics import EndpointMetrics, MetricsSnapshot
from ._options import (
    DEFAULT_BACKOFF,
    DEFAULT_THRESHOLD,
    DEFAULT_TIMEOUT,
    Batching,
    Delivery,
    Headers,
    OptionError,
    WebhookOptions,
    registry_default,
)
from ._outcome import DeadLetter, Outcome, OutcomeKind
from ._queue import Queue, call_hook
from ._redact import redact_url
from ._retry import RetryWithBreaker
from ._store.durable import DurableQueue
from ._store.protocol import QueueStore
from ._subject import CloseReport

__all__ = ["Endpoint"]

log = logging.getLogger("rxsinks.endpoint")

_RECENT_DEAD_LETTERS = 1000

Block = tuple[Event, ...]


class Endpoint(abc.ObserverBase[Event]):
    """A webhook endpoint, composed the way the registry composes it.

    ``ignore -> batch -> deliver(webhook, queue, retry/breaker)``, built from the rxsinks
    operators. It is an observer of :class:`~rxsinks.Event`: ``subject.subscribe(endpoint)``
    works, and :meth:`on_next` returns at once (it only filters and enqueues; delivery runs on
    the event loop it was built or first fed on, and events from other threads, behind an
    ``observe_on`` on a thread pool say, are handed over to that loop in order). Ignored
    events are never queued nor counted. :attr:`outcomes` and :attr:`dead_letters` complete
    once the endpoint closed, and :attr:`drained` tells an
    :class:`~rxsinks.EventSubject` when the endpoint has delivered everything it accepted.

    Defaults are the registry's: timeout 1 s, threshold 10, backoff 1 s, one event per POST,
    one POST in flight, unbounded queue, retry forever. Everything else is an option object,
    validated when it was built and shared with the relay's configuration:
    :class:`~rxsinks.WebhookOptions` (headers, secret, TLS, redirects, permanent statuses...),
    :func:`~rxsinks.retry_with_breaker` (breaker and tenacity policies),
    :func:`~rxsinks.queue` (bound and overflow), :class:`~rxsinks.Batching`,
    :class:`~rxsinks.Delivery` (concurrency, order, delay) and :class:`~rxsinks.EventFilter`.
    The registry's own keys read as keywords too: ``timeout``, ``threshold``, ``backoff``,
    ``headers``, ``ignore_actions``, ``ignore_media_types`` (a value <= 0 takes the registry's
    default); giving one of them *and* the object it belongs to is an error, so no value
    silently wins over another.

    Args:
        name: the endpoint's name (metrics label, log prefix).
        url: where to POST.
        webhook: how to POST (default ``WebhookOptions()``).
        retry: the retry policy (default ``retry_with_breaker(10, 1.0)``: the registry's breaker,
            never gives up). A shared ``breaker=`` in it is used as it is.
        queue: the in-memory buffer's bound, overflow policy and hooks (default unbounded). Its
            hooks are called; the counters are the endpoint's (:attr:`pending`,
            :meth:`metrics`). A durable endpoint's buffer is its store: give no queue then.
        batch: events per POST and how long a partial block waits.
        delivery: blocks in flight, their order, and a delay before delivery.
        filter: an :class:`~rxsinks.EventFilter` (allow-lists, repositories, predicate) events
            must pass too.
        sink: deliver with this sink instead of a webhook (tests, custom transports): a function
            taking a block (a tuple of events) that returns when it is delivered, raises when
            it is not, or returns an awaitable or an observable that completes or fails (the
            contract of :func:`~rxsinks.deliver`).
        dead_letters: observer or callable that also receives every :class:`DeadLetter`.
        store: a durable store (SQLite, Redis): the endpoint's queue lives there, with at most
            ``store_window`` events in memory; it is fed with :meth:`on_stored` after the store
            committed the events (the relay does this), and resumes its backlog at start.
        store_window: events of the durable backlog kept in memory.
        poll_interval: set when other processes append to ``store`` too (Redis): the queue
            then reads every event from the store (see :class:`~rxsinks.DurableQueue`).
        scheduler: the clock for waits (tests); by default the running event loop.
        timeout: shortcut for ``webhook=WebhookOptions(timeout=...)``.
        threshold: shortcut for ``retry=retry_with_breaker(threshold, ...)``.
        backoff: shortcut for ``retry=retry_with_breaker(..., backoff)``.
        headers: shortcut for ``webhook=WebhookOptions(headers=...)``; list values are
            appended (the registry's semantics).
        ignore_actions: actions never delivered (the registry's ``ignore.actions``).
        ignore_media_types: target media types never delivered (``ignore.mediatypes``).

    Raises:
        OptionError: a shortcut's value is wrong, or a shortcut and its object are both given.
        TypeError: an option is not the object it should be.
        ValueError: the URL is wrong, or ``queue`` is given with ``store``.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        webhook: WebhookOptions | None = None,
        retry: RetryWithBreaker | None = None,
        queue: Queue[Any] | None = None,
        batch: Batching | None = None,
        delivery: Delivery | None = None,
        filter: EventFilter | None = None,
        sink: Sink[Block] | None = None,
        dead_letters: abc.ObserverBase[DeadLetter] | Callable[[DeadLetter], None] | None = None,
        store: QueueStore | None = None,
        store_window: int = 1024,
        poll_interval: float | None = None,
        scheduler: abc.SchedulerBase | None = None,
        timeout: float | None = None,
        threshold: int | None = None,
        backoff: float | None = None,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        ignore_actions: Iterable[str] | None = None,
        ignore_media_types: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"an endpoint needs a non-empty name, got {name!r}")
        if sink is not None and not callable(sink):
            raise TypeError(
                f"sink must be a delivery function (see rxsinks.deliver), got {type(sink).__name__}"
            )
        webhook = _webhook_options(webhook, timeout, headers)
        retry = _retry_policy(retry, threshold, backoff)
        batch = _option("batch", batch, Batching)
        delivery = _option("delivery", delivery, Delivery)
        if filter is not None and not isinstance(filter, EventFilter):
            raise TypeError(f"filter must be an rxsinks.EventFilter, got {type(filter).__name__}")
        if queue is not None and not isinstance(queue, Queue):
            raise TypeError(f"queue must be made by rxsinks.queue(), got {type(queue).__name__}")
        if queue is not None and store is not None:
            raise ValueError(
                f"endpoint {name!r}: a durable endpoint's buffer is its store; give no queue"
            )
        self.name = name
        self._url = url
        # None when nothing is ignored: no look-up per event on the common path
        self._ignore: EventFilter | None = (
            EventFilter(ignore_media_types=ignore_media_types, ignore_actions=ignore_actions)
            if ignore_media_types or ignore_actions
            else None
        )
        self._filter = filter
        self.delivery = delivery
        """How blocks are delivered (concurrency, order, delay)."""
        self.metrics_observer = EndpointMetrics()
        # the metrics hear of every outcome directly; the fan-outs serve subscribers, each
        # isolated from the others and from delivery (a raising subscriber is logged)
        self._outcomes: Broadcast[Outcome] = Broadcast()
        self._dead_letters: Broadcast[DeadLetter] = Broadcast()
        self._attempts: Broadcast[Attempt] = Broadcast()
        self._drained: AsyncSubject[None] = AsyncSubject()
        self._recent_dead: deque[DeadLetter] = deque(maxlen=_RECENT_DEAD_LETTERS)
        if dead_letters is not None:
            self._dead_letters.subscribe(dead_letters)
        # one breaker for the endpoint, whatever subscribes its stage: the receiver is one
        # service, whichever key or block failed
        self.breaker = retry.new_breaker()
        self._webhook: WebhookSink | None = None
        if sink is None:
            self._webhook = WebhookSink(
                url,
                webhook,
                name=name,
                on_attempt=self._attempted,
                # one connection per block in flight: no request waits for a pooled connection
                connections=delivery.concurrency,
            )
            sink = self._webhook.deliver
        self._durable: DurableQueue | None = None
        self._hooks = queue or _UNBOUNDED  # whose on_ingress/on_egress are called too
        buffer: Queue[Block] | DurableQueue
        if store is not None:
            buffer = self._durable = DurableQueue(
                store,
                name,
                block_size=batch.max_events,
                window=max(store_window, batch.max_events),
                on_ingress=self.metrics_observer.accepted,
                on_egress=self.metrics_observer.finished,
                poll_interval=poll_interval,
                max_delay=batch.max_delay,
            )
        else:
            given = self._hooks
            buffer = Queue(
                max_events=given.max_events,
                overflow=given.overflow,
                on_ingress=self._ingress,
                on_egress=self._egress,
                on_drop=given.on_drop,
                weigh=given.weigh,
            )
        self._deliver: Deliver[Any, Block] = deliver(
            sink,
            queue=buffer,
            retry=RetryWithBreaker(
                retry.threshold,
                retry.backoff,
                breaker=self.breaker,
                stop=retry.stop,
                wait=retry.wait,
                retry=retry.retry,
                scheduler=retry.scheduler,
            ),
            concurrency=delivery.concurrency,
            key=delivery.key(),
            delay=delivery.delay,
            # only a delay reads the events' time (it costs a look at every block)
            timestamp=block_time if delivery.delay else None,
            endpoint=name,
            scheduler=scheduler,
        )
        # with no delay given, a partial block still goes at the end of the loop turn
        self._batch = batch_operator(batch.max_events, batch.max_delay, scheduler=scheduler)
        self._scheduler = scheduler
        # the loop the endpoint delivers on: the one running where it was built (or first fed);
        # a notification from another thread (an observe_on on a thread pool above it, say) is
        # handed over to it, since the pipeline and its async sink live on that loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        if scheduler is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
                self._loop_thread = threading.get_ident()
        # taken by notifications from other threads, and by completion once any came: so an
        # event is either refused as closed or queued on the loop ahead of the completion
        self._handover_lock = threading.Lock()
        self._handed_over = False  # a notification came from another thread at least once
        self._inlet: abc.ObserverBase[Any] | None = None
        self._push: Callable[[Any], None] | None = None  # the inlet's on_next, fastest way in
        self._closing = False
        self._finished_delivering = False
        self._failure: Exception | None = None  # why the delivery stage ended, if it failed
        self._report: CloseReport | None = None

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, url={self.url!r})"

    @property
    def url(self) -> str:
        """The endpoint URL as it may be shown: user info and query values hidden."""
        return redact_url(self._url)

    # -- the pipeline --------------------------------------------------------------------------

    def _start(self) -> abc.ObserverBase[Any]:
        if self._loop is None and self._scheduler is None:
            # built outside a loop, started on one: that loop is the endpoint's from now on
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
                self._loop_thread = threading.get_ident()
        inlet: list[abc.ObserverBase[Any]] = []

        def capture(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            inlet.append(observer)
            return _NOTHING

        source: Observable[Any] = Observable(capture)
        stages: list[Any] = []
        if self._durable is None:
            # (a durable endpoint's events were filtered before the store: only accepted ones
            # get a delivery row)
            if self._filter is not None:
                stages.append(filter_events(self._filter))
            stages.append(self._batch)
        stages.append(self._deliver)
        source.pipe(*stages).subscribe(_Outcomes(self), scheduler=self._scheduler)
        if not inlet:
            # the stage refused to start (a buffer that cannot serve these options): it has
            # reported the error and completed, and no event can enter
            raise ValueError(f"endpoint {self.name!r} cannot start: {self._failure}")
        self._inlet = inlet[0]
        # past reactivex's AutoDetachObserver, whose only work is a stopped check: the endpoint
        # refuses events once closing itself, before its completion goes in (once per event and
        # endpoint: a relay with 300 endpoints makes 60,000 such calls a second at 200 events/s)
        self._push = (
            self._inlet._on_next if type(self._inlet) is AutoDetachObserver else self._inlet.on_next
        )
        return self._inlet

    def _started(self) -> Callable[[Any], None]:
        self._start()
        assert self._push is not None
        return self._push

    def start(self) -> None:
        """Build the pipeline now (a durable endpoint starts on its backlog at once); otherwise
        the first event does it. Needs a running event loop.

        Raises:
            ValueError: the delivery stage cannot start with these options (its buffer refused
                them); the endpoint is then closed.
        """
        if self._inlet is None:
            self._start()

    def accepts(self, event: Event) -> bool:
        """Whether this endpoint's filters let ``event`` through."""
        return (self._ignore is None or self._ignore(event)) and (
            self._filter is None or self._filter(event)
        )

    def on_next(self, value: Event) -> None:
        """Accept one event: filter it and enqueue it; returns at once.

        Raises:
            SinkClosedError: the endpoint is closed.
            TypeError: the endpoint is durable (feed it with :meth:`on_stored`).
        """
        if self._closing:
            raise SINK_CLOSED
        if self._durable is not None:
            raise TypeError(
                f"endpoint {self.name!r} is durable: events reach it through its store "
                "(Relay.accept or on_stored), so nothing accepted can be lost"
            )
        if self._ignore is not None and not self._ignore(value):
            return
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            self._hand_over(value)
            return
        (self._push or self._started())(value)

    def on_stored(self, seq: int, event: Event) -> None:
        """Accept an event the store committed at ``seq`` (durable endpoints only)."""
        if self._closing:
            raise SINK_CLOSED
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            self._hand_over((seq, event))
            return
        (self._push or self._started())((seq, event))

    def _hand_over(self, item: Any) -> None:
        """Queue ``item`` on the endpoint's loop, from another thread, in the order given."""
        assert self._loop is not None
        with self._handover_lock:
            if self._closing:
                raise SINK_CLOSED
            self._handed_over = True
            try:
                self._loop.call_soon_threadsafe(self._arrived, item)
            except RuntimeError as exc:  # the loop was closed
                raise SINK_CLOSED from exc

    def _arrived(self, item: Any) -> None:
        # accepted before the endpoint closed (checked under the lock that completion takes),
        # and the completion is queued behind it: no closed check here
        (self._push or self._started())(item)

    def rescan(self) -> None:
        """Re-read a durable endpoint's backlog (dead letters were replayed into the store)."""
        if self._durable is not None:
            self._durable.rescan()

    def on_error(self, error: Exception) -> None:
        """The source failed: deliver what is queued, then close (see :meth:`aclose`)."""
        log.error("%s: source failed, flushing: %s", self.name, error)
        self.on_completed()

    def on_completed(self) -> None:
        """The source ended: deliver what is queued, then release resources (see
        :meth:`aclose`); :attr:`drained` completes then."""
        with self._handover_lock:
            if self._closing:
                return
            self._closing = True
            handed_over = self._handed_over
        if self._loop_thread is not None and (
            handed_over or threading.get_ident() != self._loop_thread
        ):
            # behind the events other threads queued on the loop (call_soon keeps their order)
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # a closed loop: nothing left to flush
                self._loop.call_soon_threadsafe(self._complete)
            return
        self._complete()

    def _complete(self) -> None:
        if self._inlet is None and self._finished_delivering:
            return  # the stage never started: nothing to flush
        (self._inlet or self._start()).on_completed()

    def dispose(self) -> None:
        """Stop at once: attempts in flight are cancelled and nothing is retried; what was
        queued is dead-lettered (a durable endpoint keeps it in its store); then the endpoint
        closes as :meth:`aclose` would."""
        self._closing = True
        if self._inlet is None and self._finished_delivering:
            return  # the stage never started: nothing to stop
        if self._inlet is None:
            self._start()
        self._deliver.abort(SINK_CLOSED)

    async def aclose(self, timeout: float | None = None) -> CloseReport:
        """Deliver everything queued, then release the endpoint's resources.

        Args:
            timeout: seconds to wait at most; ``None`` waits until the queue is empty, however
                long the receiver is down (the registry's behaviour).

        Returns:
            A :class:`~rxsinks.CloseReport`; when the deadline passed, ``remaining`` says how
            many events were left. Those are not lost: they go to :attr:`dead_letters` (with
            :data:`~rxsinks.SINK_CLOSED` as their error; a durable endpoint keeps them in its
            store instead), and the endpoint's resources are released all the same. Closing
            again returns the same report.
        """
        if self._report is not None:
            return self._report
        self.on_completed()
        drained = asyncio.ensure_future(_completion(self._drained))
        try:
            await asyncio.wait_for(asyncio.shield(drained), timeout)
        except TimeoutError:
            if self._finished_delivering:
                # everything went; only the HTTP session is still being released
                await drained
                self._report = CloseReport(flushed=True)
                return self._report
            remaining = self.pending
            log.warning(
                "%s: closed after %s s with %d event(s) not delivered%s",
                self.name,
                timeout,
                remaining,
                "; they stay in the store" if self._durable is not None else "; dead-lettered",
            )
            self._deliver.abort(SINK_CLOSED)
            await drained
            self._report = CloseReport(False, remaining=remaining, stages=1)
            return self._report
        self._report = CloseReport(flushed=True)
        return self._report

    def _closed(self, error: Exception | None) -> None:
        """The delivery stage finished: release the webhook, then tell everyone."""
        self._finished_delivering = True
        self._failure = error
        if error is not None:
            log.error("%s: delivery stage failed: %s", self.name, error)

        def finish(_: object = None) -> None:
            self._outcomes.on_completed()
            self._dead_letters.on_completed()
            self._attempts.on_completed()
            self._drained.on_completed()

        webhook = self._webhook
        if webhook is None:
            finish()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            finish()
            return
        loop.create_task(webhook.aclose()).add_done_callback(finish)

    # -- metrics and outcomes ------------------------------------------------------------------

    @property
    def outcomes(self) -> Observable[Outcome]:
        """Every delivery outcome: delivered, failed attempt (with status or error),
        dead-lettered, dropped, breaker opened/half-open/closed, endpoint disabled. Completes
        once the endpoint closed."""
        return self._outcomes

    @property
    def dead_letters(self) -> Observable[DeadLetter]:
        """Blocks given up on, with their last error. Completes once the endpoint closed."""
        return self._dead_letters

    @property
    def attempts(self) -> Observable[Attempt]:
        """Every HTTP attempt of the endpoint's webhook as it ends (block size, status or error,
        duration; none with a custom ``sink``). Completes once the endpoint closed."""
        return self._attempts

    @property
    def drained(self) -> Observable[None]:
        """Completes once the endpoint closed after delivering (or giving up) everything."""
        return self._drained

    @property
    def recent_dead_letters(self) -> list[DeadLetter]:
        """The last dead letters kept in memory (at most 1000)."""
        return list(self._recent_dead)

    @property
    def pending(self) -> int:
        """Events queued or in flight."""
        return self._deliver.pending if self._durable is None else self._durable.pending

    @property
    def disabled(self) -> bool:
        """Whether the endpoint disabled itself (the receiver answered 410 Gone)."""
        return self._webhook is not None and self._webhook.disabled

    def metrics(self) -> MetricsSnapshot:
        """A snapshot of the registry's counters and rxsinks' own."""
        return self.metrics_observer.snapshot()

    def _ingress(self, block: Block) -> None:
        self.metrics_observer.accepted(len(block))
        if self._hooks.on_ingress is not None:
            call_hook(self._hooks.on_ingress, block)

    def _egress(self, block: Block) -> None:
        self.metrics_observer.finished(len(block))
        if self._hooks.on_egress is not None:
            call_hook(self._hooks.on_egress, block)

    def _attempted(self, attempt: Attempt) -> None:
        self._attempts.on_next(attempt)
        if attempt.status == 410:
            # (the webhook logs it at WARNING, the relay at ERROR with what to do)
            log.debug("%s: receiver answered 410 Gone; endpoint disabled", self.name)
            self._publish(Outcome(OutcomeKind.DISABLED, status=410, endpoint=self.name))

    def _outcome(self, outcome: Outcome) -> None:
        if (
            outcome.kind is OutcomeKind.FAILED
            and isinstance(outcome.error, EndpointDisabledError)
            and not getattr(outcome.error, "answered", True)
        ):
            # once disabled, the webhook fails blocks without sending them: no attempt was
            # answered, so nothing counts as a Failure nor as a "410 Gone" status (the
            # DEAD_LETTERED outcome that follows reports the block)
            return
        self._publish(outcome)
        if outcome.kind is OutcomeKind.DEAD_LETTERED and outcome.error is not None:
            letter = DeadLetter(outcome.events, outcome.error, outcome.attempt, self.name)
            self._recent_dead.append(letter)
            self._dead_letters.on_next(letter)

    def _publish(self, outcome: Outcome) -> None:
        self.metrics_observer.on_next(outcome)
        self._outcomes.on_next(outcome)


_UNBOUNDED: Queue[Any] = Queue()
_T = TypeVar("_T", Batching, Delivery)


def _option(argument: str, value: _T | None, kind: type[_T]) -> _T:
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise TypeError(
            f"{argument} must be an rxsinks.{kind.__name__}, got {type(value).__name__}"
        )
    return value


def _both(shortcut: str, option: str) -> OptionError:
    return OptionError(
        shortcut, f"given both as a keyword and in {option}=: give it in one place only"
    )


def _webhook_options(
    webhook: WebhookOptions | None,
    timeout: float | None,
    headers: Mapping[str, str | Sequence[str]] | None,
) -> WebhookOptions:
    if webhook is None:
        return WebhookOptions(
            headers=Headers(headers),
            timeout=registry_default(timeout, DEFAULT_TIMEOUT),
        )
    if not isinstance(webhook, WebhookOptions):
        raise TypeError(f"webhook must be an rxsinks.WebhookOptions, got {type(webhook).__name__}")
    if timeout is not None:
        raise _both("timeout", "webhook")
    if headers is not None:
        raise _both("headers", "webhook")
    return webhook


def _retry_policy(
    retry: RetryWithBreaker | None, threshold: int | None, backoff: float | None
) -> RetryWithBreaker:
    if retry is None:
        return RetryWithBreaker(
            int(registry_default(threshold, DEFAULT_THRESHOLD)),
            registry_default(backoff, DEFAULT_BACKOFF),
        )
    if not isinstance(retry, RetryWithBreaker):
        raise TypeError(
            f"retry must be made by rxsinks.retry_with_breaker(), got {type(retry).__name__}"
        )
    if threshold is not None:
        raise _both("threshold", "retry")
    if backoff is not None:
        raise _both("backoff", "retry")
    return retry


class _Outcomes(abc.ObserverBase[Outcome]):
    """The endpoint's delivery stage reports here."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def on_next(self, value: Outcome) -> None:
        self._endpoint._outcome(value)

    def on_error(self, error: Exception) -> None:
        self._endpoint._closed(error)

    def on_completed(self) -> None:
        self._endpoint._closed(None)


async def _completion(observable: Observable[Any]) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resolve(_: object = None) -> None:
        if not done.done():
            done.set_result(None)

    observable.subscribe(on_error=resolve, on_completed=resolve)
    await done


class _Nothing(abc.DisposableBase):
    def dispose(self) -> None:
        pass


_NOTHING = _Nothing()
