"""The registry's endpoint as one object: ignore -> batch -> queue -> retry/breaker -> webhook."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex.subject import Subject

from ._batch import batch
from ._breaker import Breaker
from ._broadcast import Broadcast
from ._durable import DurableQueue, QueueStore
from ._event import MEDIA_TYPE_V1, Event
from ._exceptions import SINK_CLOSED, EndpointDisabledError
from ._filter import EventFilter, filter_events
from ._flow import FlushGroup, join_flush
from ._metrics import EndpointMetrics, MetricsSnapshot
from ._outcome import DeadLetter, Outcome, OutcomeKind
from ._queue import Overflow, Queue
from ._retry import Policy, retry_with_breaker
from ._subject import CloseReport
from ._webhook import Attempt, WebhookSink

__all__ = ["Endpoint"]

log = logging.getLogger("rxsinks.endpoint")

# registry defaults, applied when a value is missing or <= 0 (REFERENCE.md section 2)
DEFAULT_TIMEOUT = 1.0
DEFAULT_THRESHOLD = 10
DEFAULT_BACKOFF = 1.0
_RECENT_DEAD_LETTERS = 1000

Block = tuple[Event, ...]


class Endpoint(abc.ObserverBase[Event]):
    """A webhook endpoint, composed the way the registry composes it.

    ``ignore -> queue -> retry/breaker -> webhook``, built from the rxsinks operators, with
    optional batching before the queue. It is an observer of :class:`~rxsinks.Event`:
    ``subject.subscribe(endpoint)`` works, and :meth:`on_next` returns at once (it only
    filters and enqueues; delivery runs on the event loop). Ignored events are never queued nor
    counted.

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
        sink: deliver with this observer of blocks instead of a webhook (tests, custom
            transports); it must settle each block (see ``rxsinks._flow``).
        dead_letters: observer or callable that also receives every :class:`DeadLetter`.
        breaker: a shared :class:`~rxsinks.Breaker` instead of threshold/backoff.
        store: a durable store (SQLite, Redis): the endpoint's queue lives there, with at most
            ``store_window`` events in memory; it is fed with :meth:`on_stored` after the store
            committed the events (the relay does this), and resumes its backlog at start.
        store_window: events of the durable backlog kept in memory.
        poll_interval: set when other processes append to ``store`` too (Redis): the queue
            then reads every event from the store (see :class:`~rxsinks._durable.DurableQueue`).
        scheduler: the clock for waits (tests); by default the running event loop.
        webhook_options: further :class:`WebhookSink` keywords: ``content_type``,
            ``secret_headers``, ``ca_file``, ``cert_file``, ``key_file``, ``verify_tls``,
            ``redirects``, ``permanent_statuses``, ``retry_after_cap``.
    """

    __rxsinks_buffered__ = True  # a broadcast calls us directly: on_next only enqueues

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
        sink: abc.ObserverBase[Block] | None = None,
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
        self.name = name
        self.url = url
        timeout = timeout if timeout and timeout > 0 else DEFAULT_TIMEOUT
        threshold = threshold if threshold and threshold > 0 else DEFAULT_THRESHOLD
        backoff = backoff if backoff and backoff > 0 else DEFAULT_BACKOFF
        self._ignore = EventFilter(
            ignore_media_types=ignore_media_types, ignore_actions=ignore_actions
        )
        self._filter = event_filter
        self.metrics_observer = EndpointMetrics()
        # the metrics hear of every outcome directly; the fan-out serves subscribers, each
        # isolated from the others and from delivery (a raising subscriber is logged)
        self._outcomes: Broadcast[Outcome] = Broadcast()
        self._dead_letters: Subject[DeadLetter] = Subject()
        self._recent_dead: deque[DeadLetter] = deque(maxlen=_RECENT_DEAD_LETTERS)
        self._user_dead_letters = dead_letters
        self._last_attempt: Attempt | None = None
        self.breaker = breaker or Breaker(threshold, backoff)
        self._sink: abc.ObserverBase[Block]
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
            self._sink = self._webhook
        else:
            self._sink = sink
        self._queue: Queue[Block] = Queue(
            max_events=queue_max_events,
            overflow=overflow,
            on_ingress=self._ingress,
            on_egress=self._egress,
            on_drop=self._drop,
            scheduler=scheduler,
        )
        # with no delay given, a partial block still goes at the end of the loop turn
        self._batch = batch(batch_max_events, max(batch_max_delay, 0.0), scheduler=scheduler)
        self._last_dead_attempts = 0
        self._durable: DurableQueue | None = None
        if store is not None:
            self._durable = DurableQueue(
                store,
                name,
                block_size=batch_max_events,
                window=max(store_window, batch_max_events),
                on_ingress=self.metrics_observer.accepted,
                on_egress=self.metrics_observer.finished,
                attempts=lambda: self._last_dead_attempts,
                poll_interval=poll_interval,
                max_delay=max(batch_max_delay, 0.0),
            )
        self._retry = retry_with_breaker(
            breaker=self.breaker,
            stop=stop,
            wait=wait,
            retry=retry,
            dead_letters=self._dead_lettered,
            outcomes=self._outcome,
            endpoint=name,
            scheduler=scheduler,
        )
        self._scheduler = scheduler
        self._entry: abc.ObserverBase[Any] | None = None
        self._subscription: abc.DisposableBase | None = None
        self._closing = False
        self._group: FlushGroup | None = None
        self._flushed: asyncio.Future[None] | None = None
        # blocks accepted by the queue and not yet through their attempt, oldest first, so
        # that pending stays exact after drops and aclose(timeout) can dead-letter what is
        # left instead of losing it silently
        self._outstanding: dict[int, Block] = {}
        self._release_report: CloseReport | None = None

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, url={self.url!r})"

    # -- the pipeline --------------------------------------------------------------------------

    def _start(self) -> abc.ObserverBase[Any]:
        entry: list[abc.ObserverBase[Any]] = []

        def capture(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            entry.append(observer)
            return _NOTHING

        source: Observable[Any] = Observable(capture)
        stages: list[Any] = []
        if self._durable is not None:
            # filtering happened before the store (only accepted events get a delivery row)
            stages += [self._durable, self._retry]
        else:
            if self._filter is not None:
                stages.append(filter_events(self._filter))
            stages += [self._batch, self._queue, self._retry]
        self._subscription = source.pipe(*stages).subscribe(self._sink, scheduler=self._scheduler)
        self._entry = entry[0]
        return self._entry

    def start(self) -> None:
        """Build the pipeline now (a durable endpoint starts on its backlog at once); otherwise
        the first event does it. Needs a running event loop."""
        if self._entry is None:
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
        (self._entry or self._start()).on_next(value)

    def on_stored(self, seq: int, event: Event) -> None:
        """Accept an event the store committed at ``seq`` (durable endpoints only)."""
        if self._closing:
            raise SINK_CLOSED
        (self._entry or self._start()).on_next((seq, event))

    def rescan(self) -> None:
        """Re-read a durable endpoint's backlog (dead letters were replayed into the store)."""
        if self._durable is not None:
            self._durable.rescan()

    def dispose(self) -> None:
        """Stop at once: no further attempts (a durable endpoint keeps its backlog on disk)."""
        self._closing = True
        if self._subscription is not None:
            self._subscription.dispose()

    def on_error(self, error: Exception) -> None:
        """The source failed: flush what is queued (see :meth:`aclose`)."""
        log.error("%s: source failed, flushing: %s", self.name, error)
        self.on_completed()

    def on_completed(self) -> None:
        """The source ended: flush what is queued, then release resources (see :meth:`aclose`).

        Inside :meth:`~rxsinks.EventSubject.aclose` the endpoint joins the subject's flush, so
        the subject waits for it.
        """
        if self._closing:
            return
        self._closing = True
        # the endpoint flushes in a group of its own, so aclose() waits for the flush whoever
        # started it (a subject's aclose, say, which would otherwise leave aclose() nothing to
        # wait for); the group of whoever completed us, if any, waits for ours.
        group = self._group = FlushGroup()
        outer = join_flush(group.remaining)
        with group.active():
            (self._entry or self._start()).on_completed()
        if outer is not None:
            group.on_empty(outer.done)

    async def aclose(self, timeout: float | None = None) -> CloseReport:
        """Flush everything queued, then release the endpoint's resources.

        Args:
            timeout: seconds to wait at most; ``None`` waits until the queue is empty, however
                long the receiver is down (the registry's behaviour).

        Returns:
            A :class:`~rxsinks.CloseReport`; when the deadline passed, ``remaining`` says how
            many events were left. Those are not lost: they go to :attr:`dead_letters` (with
            :data:`~rxsinks.SINK_CLOSED` as their error), and the endpoint's resources are
            released all the same. Closing again returns the same report.
        """
        if self._release_report is not None:
            return self._release_report
        self.on_completed()
        group = self._group
        if group is None:
            # dispose() stopped the pipeline without completing it: nothing will flush
            group = self._group = FlushGroup()
        if self._flushed is None:
            flushed = self._flushed = asyncio.get_running_loop().create_future()
            group.on_empty(lambda: _resolve(flushed))
        try:
            await asyncio.wait_for(asyncio.shield(self._flushed), timeout)
        except TimeoutError:
            remaining, stages = group.remaining(), group.flushing
            log.warning(
                "%s: closed after %s s with %d event(s) not delivered; dead-lettered",
                self.name,
                timeout,
                remaining,
            )
            report = self._release_report = CloseReport(False, remaining=remaining, stages=stages)
            await self._release()
            return report
        if self._webhook is not None:
            await self._webhook.aclose()
        return CloseReport(flushed=True)

    async def _release(self) -> None:
        # giving up waiting must not leave retry timers running, the HTTP session open or the
        # events in limbo: requests in flight finish (within their timeout) and the session is
        # released; timers and the queue's drain are cancelled; what is left is dead-lettered
        # (a durable endpoint has nothing outstanding here: its backlog stays in the store).
        if self._webhook is not None:
            await self._webhook.aclose()
        if self._subscription is not None:
            self._subscription.dispose()
        left = list(self._outstanding.values())
        self._outstanding.clear()
        for block in left:
            self.metrics_observer.finished(len(block))
            self._publish(
                Outcome(OutcomeKind.DEAD_LETTERED, block, error=SINK_CLOSED, endpoint=self.name)
            )
            # aclose() logged the count once: no line per block
            self._dead_lettered(DeadLetter(block, SINK_CLOSED, 0, self.name), logged=True)

    # -- metrics and outcomes ------------------------------------------------------------------

    @property
    def outcomes(self) -> Observable[Outcome]:
        """Every delivery outcome: delivered, failed attempt (with status or error),
        dead-lettered, dropped, breaker opened/half-open/closed, endpoint disabled."""
        return self._outcomes

    @property
    def dead_letters(self) -> Observable[DeadLetter]:
        """Blocks given up on, with their last error."""
        return self._dead_letters

    @property
    def recent_dead_letters(self) -> list[DeadLetter]:
        """The last dead letters kept in memory (at most 1000)."""
        return list(self._recent_dead)

    @property
    def pending(self) -> int:
        """Events queued or in flight."""
        return (self._durable or self._queue).pending

    @property
    def disabled(self) -> bool:
        """Whether the endpoint disabled itself (the receiver answered 410 Gone)."""
        return self._webhook is not None and self._webhook.disabled

    def metrics(self) -> MetricsSnapshot:
        """A snapshot of the registry's counters and rxsinks' own."""
        return self.metrics_observer.snapshot()

    def _ingress(self, block: Block) -> None:
        self._outstanding[id(block)] = block
        self.metrics_observer.accepted(len(block))

    def _egress(self, block: Block) -> None:
        # a block dead-lettered by aclose(timeout) was counted out already
        if self._outstanding.pop(id(block), None) is not None:
            self.metrics_observer.finished(len(block))

    def _drop(self, block: Block) -> None:
        # a dropped block that was queued is no longer pending (the queue calls no egress for
        # it); a refused newcomer never was
        if self._outstanding.pop(id(block), None) is not None:
            self.metrics_observer.finished(len(block))
        self._publish(Outcome(OutcomeKind.DROPPED, block, endpoint=self.name))

    def _attempted(self, attempt: Attempt) -> None:
        self._last_attempt = attempt
        if attempt.status == 410:
            log.warning("%s: receiver answered 410 Gone; endpoint disabled", self.name)
            self._publish(Outcome(OutcomeKind.DISABLED, status=410, endpoint=self.name))

    def _outcome(self, outcome: Outcome) -> None:
        attempt = self._last_attempt
        if (
            outcome.kind is OutcomeKind.FAILED
            and isinstance(outcome.error, EndpointDisabledError)
            and self._webhook is not None
            and (attempt is None or attempt.error is not outcome.error)
        ):
            # once disabled, the webhook fails blocks without sending them; no attempt was
            # answered, so nothing counts as a Failure nor as a "410 Gone" status (the
            # DEAD_LETTERED outcome that follows reports the block)
            return
        if (
            outcome.kind is OutcomeKind.DELIVERED
            and outcome.status is None
            and attempt is not None
            and attempt.status is not None
        ):
            # the retry stage knows the block succeeded; the sink knows with which status
            outcome = Outcome(
                outcome.kind,
                outcome.events,
                outcome.attempt,
                status=attempt.status,
                latency=outcome.latency,
                endpoint=outcome.endpoint,
            )
        self._publish(outcome)

    def _publish(self, outcome: Outcome) -> None:
        self.metrics_observer.on_next(outcome)
        self._outcomes.on_next(outcome)

    def _dead_lettered(self, letter: DeadLetter, *, logged: bool = False) -> None:
        self._last_dead_attempts = letter.attempts  # a durable queue records it with the block
        self._recent_dead.append(letter)
        if not logged and self._user_dead_letters is None and not self._dead_letters.observers:
            log.error(
                "%s: gave up on %d event(s) after %d attempt(s): %s",
                self.name,
                len(letter.events),
                letter.attempts,
                letter.error,
            )
        self._dead_letters.on_next(letter)
        user = self._user_dead_letters
        if user is not None:
            if isinstance(user, abc.ObserverBase):
                user.on_next(letter)
            else:
                user(letter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Nothing(abc.DisposableBase):
    def dispose(self) -> None:
        pass


_NOTHING = _Nothing()
