"""The registry's endpoint as one object: ignore -> batch -> deliver (queue, retry) -> webhook."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex.subject import AsyncSubject

from ._batch import batch
from ._breaker import Breaker
from ._broadcast import Broadcast
from ._deliver import Deliver, Sink, deliver
from ._event import MEDIA_TYPE_V1, Event
from ._exceptions import SINK_CLOSED, EndpointDisabledError
from ._filter import EventFilter, filter_events
from ._http.sink import Attempt, WebhookSink
from ._metrics import EndpointMetrics, MetricsSnapshot
from ._outcome import DeadLetter, Outcome, OutcomeKind
from ._queue import Overflow, Queue
from ._redact import redact_url
from ._retry import Policy, RetryWithBreaker
from ._store.durable import DurableQueue
from ._store.protocol import QueueStore
from ._subject import CloseReport

__all__ = ["Endpoint"]

log = logging.getLogger("rxsinks.endpoint")

# the registry's defaults, applied when a value is missing or <= 0
DEFAULT_TIMEOUT = 1.0
DEFAULT_THRESHOLD = 10
DEFAULT_BACKOFF = 1.0
_RECENT_DEAD_LETTERS = 1000

Block = tuple[Event, ...]


class Endpoint(abc.ObserverBase[Event]):
    """A webhook endpoint, composed the way the registry composes it.

    ``ignore -> batch -> deliver(webhook, queue, retry/breaker)``, built from the rxsinks
    operators. It is an observer of :class:`~rxsinks.Event`: ``subject.subscribe(endpoint)``
    works, and :meth:`on_next` returns at once (it only filters and enqueues; delivery runs on
    the event loop). Ignored events are never queued nor counted. :attr:`outcomes` and
    :attr:`dead_letters` complete once the endpoint closed, and :attr:`drained` tells an
    :class:`~rxsinks.EventSubject` when the endpoint has delivered everything it accepted.

    Defaults are the registry's: timeout 1 s, threshold 10, backoff 1 s (values <= 0 take the
    default), one event per POST, unbounded queue, retry forever. Everything the registry's
    users asked for is a keyword away: ``batch_max_events``/``batch_max_delay``, tenacity
    ``stop``/``wait``/``retry`` policies with dead letters, ``permanent_statuses``,
    ``secret`` (Standard Webhooks signatures), TLS options, a bounded queue, allow-lists and
    repository patterns.

    Args:
        name: the endpoint's name (metrics label, log prefix).
        url: where to POST.
        headers: extra headers; list values are appended (the registry's semantics).
        timeout: seconds for a whole request.
        threshold: consecutive failures before the breaker opens.
        backoff: seconds between attempts while the breaker is open.
        ignore_media_types: target media types never delivered.
        ignore_actions: actions never delivered.
        event_filter: a further :class:`~rxsinks.EventFilter` (allow-lists, repositories,
            predicate) that events must pass too.
        secret: ``whsec_...``: sign every request (Standard Webhooks).
        batch_max_events: events per POST (1 = the registry's one event per POST).
        batch_max_delay: seconds a partial block may wait for more events.
        stop: tenacity stop strategy: give a block up (dead letter) when it says so.
        wait: tenacity wait strategy: extra wait after each failed attempt.
        retry: tenacity retry strategy: which errors are worth retrying.
        queue_max_events: bound on queued events (``None``: unbounded).
        overflow: what a full queue does (``"drop_oldest"``, ``"drop_newest"``, ``"error"``).
        sink: deliver with this sink instead of a webhook (tests, custom transports): a function
            taking a block (a tuple of events) that returns when it is delivered, raises when
            it is not, or returns an awaitable or an observable that completes or fails (the
            contract of :func:`~rxsinks.deliver`).
        dead_letters: observer or callable that also receives every :class:`DeadLetter`.
        breaker: a shared :class:`~rxsinks.Breaker` instead of threshold/backoff.
        store: a durable store (SQLite, Redis): the endpoint's queue lives there, with at most
            ``store_window`` events in memory; it is fed with :meth:`on_stored` after the store
            committed the events (the relay does this), and resumes its backlog at start.
        store_window: events of the durable backlog kept in memory.
        poll_interval: set when other processes append to ``store`` too (Redis): the queue
            then reads every event from the store (see :class:`~rxsinks.DurableQueue`).
        scheduler: the clock for waits (tests); by default the running event loop.
        webhook_options: further :class:`WebhookSink` keywords: ``content_type``,
            ``secret_headers``, ``ca_file``, ``cert_file``, ``key_file``, ``verify_tls``,
            ``redirects``, ``permanent_statuses``, ``retry_after_cap``.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        threshold: int = DEFAULT_THRESHOLD,
        backoff: float = DEFAULT_BACKOFF,
        ignore_media_types: Iterable[str] = (),
        ignore_actions: Iterable[str] = (),
        event_filter: EventFilter | None = None,
        secret: str | None = None,
        batch_max_events: int = 1,
        batch_max_delay: float = 0.0,
        stop: Policy | None = None,
        wait: Policy | None = None,
        retry: Policy | None = None,
        queue_max_events: int | None = None,
        overflow: Overflow = "drop_oldest",
        content_type: str = MEDIA_TYPE_V1,
        permanent_statuses: Collection[int] = (),
        sink: Sink[Block] | None = None,
        dead_letters: abc.ObserverBase[DeadLetter] | Callable[[DeadLetter], None] | None = None,
        breaker: Breaker | None = None,
        store: QueueStore | None = None,
        store_window: int = 1024,
        poll_interval: float | None = None,
        scheduler: abc.SchedulerBase | None = None,
        **webhook_options: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"an endpoint needs a non-empty name, got {name!r}")
        if sink is not None and not callable(sink):
            raise TypeError(
                f"sink must be a delivery function (see rxsinks.deliver), got {type(sink).__name__}"
            )
        self.name = name
        self._url = url
        timeout = timeout if timeout and timeout > 0 else DEFAULT_TIMEOUT
        threshold = threshold if threshold and threshold > 0 else DEFAULT_THRESHOLD
        backoff = backoff if backoff and backoff > 0 else DEFAULT_BACKOFF
        self._ignore = EventFilter(
            ignore_media_types=ignore_media_types, ignore_actions=ignore_actions
        )
        self._filter = event_filter
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
        self.breaker = breaker or Breaker(threshold, backoff)
        self._webhook: WebhookSink | None = None
        if sink is None:
            self._webhook = WebhookSink(
                url,
                name=name,
                headers=headers,
                timeout=timeout,
                content_type=content_type,
                secret=secret,
                permanent_statuses=permanent_statuses,
                on_attempt=self._attempted,
                **webhook_options,
            )
            sink = self._webhook.deliver
        self._durable: DurableQueue | None = None
        buffer: Queue[Block] | DurableQueue
        if store is not None:
            buffer = self._durable = DurableQueue(
                store,
                name,
                block_size=batch_max_events,
                window=max(store_window, batch_max_events),
                on_ingress=self.metrics_observer.accepted,
                on_egress=self.metrics_observer.finished,
                poll_interval=poll_interval,
                max_delay=max(batch_max_delay, 0.0),
            )
        else:
            buffer = Queue(
                max_events=queue_max_events,
                overflow=overflow,
                on_ingress=self._ingress,
                on_egress=self._egress,
            )
        self._deliver: Deliver[Any, Block] = deliver(
            sink,
            queue=buffer,
            retry=RetryWithBreaker(breaker=self.breaker, stop=stop, wait=wait, retry=retry),
            endpoint=name,
            scheduler=scheduler,
        )
        # with no delay given, a partial block still goes at the end of the loop turn
        self._batch = batch(batch_max_events, max(batch_max_delay, 0.0), scheduler=scheduler)
        self._scheduler = scheduler
        self._inlet: abc.ObserverBase[Any] | None = None
        self._closing = False
        self._finished_delivering = False
        self._report: CloseReport | None = None

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, url={self.url!r})"

    @property
    def url(self) -> str:
        """The endpoint URL as it may be shown: user info and query values hidden."""
        return redact_url(self._url)

    # -- the pipeline --------------------------------------------------------------------------

    def _start(self) -> abc.ObserverBase[Any]:
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
        self._inlet = inlet[0]
        return self._inlet

    def start(self) -> None:
        """Build the pipeline now (a durable endpoint starts on its backlog at once); otherwise
        the first event does it. Needs a running event loop."""
        if self._inlet is None:
            self._start()

    def accepts(self, event: Event) -> bool:
        """Whether this endpoint's filters let ``event`` through."""
        return self._ignore(event) and (self._filter is None or self._filter(event))

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
        if not self._ignore(value):
            return
        (self._inlet or self._start()).on_next(value)

    def on_stored(self, seq: int, event: Event) -> None:
        """Accept an event the store committed at ``seq`` (durable endpoints only)."""
        if self._closing:
            raise SINK_CLOSED
        (self._inlet or self._start()).on_next((seq, event))

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
        if self._closing:
            return
        self._closing = True
        (self._inlet or self._start()).on_completed()

    def dispose(self) -> None:
        """Stop at once: attempts in flight are cancelled and nothing is retried; what was
        queued is dead-lettered (a durable endpoint keeps it in its store); then the endpoint
        closes as :meth:`aclose` would."""
        self._closing = True
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

    def _egress(self, block: Block) -> None:
        self.metrics_observer.finished(len(block))

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
