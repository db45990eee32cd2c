"""rxsinks.Endpoint against real aiohttp.web receivers on 127.0.0.1.

Deterministic: receivers answer from a script, and the only timing assertions are lower bounds
on the gaps between requests (a backoff may be late on a slow machine, never early).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
import reactivex
from reactivex import abc
from reactivex import operators as ops
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.testing import TestScheduler
from tenacity.stop import stop_after_attempt

import rxsinks
from rxsinks import (
    SINK_CLOSED,
    DeadLetter,
    EndpointDisabledError,
    Outcome,
    OutcomeKind,
    PermanentDeliveryError,
    QueueFullError,
    SinkClosedError,
    WebhookStatusError,
)
from tests.endpoint_fixtures import (
    StartHook,
    eventually,
    ids,
    make_events,
    refused_url,
    start_hook,
)
from tests.webhooks import open_sessions

__all__ = ["start_hook"]  # the fixture, re-exported for pytest

# A request may leave a hair early on the loop's clock compared with the breaker's (the
# scheduler reads the wall clock); this much is far below any backoff used here.
CLOCK_SLACK = 0.005
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def record(endpoint: rxsinks.Endpoint) -> list[Outcome]:
    outcomes: list[Outcome] = []
    endpoint.outcomes.subscribe(outcomes.append)
    return outcomes


def letters_of(endpoint: rxsinks.Endpoint) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    endpoint.dead_letters.subscribe(letters.append)
    return letters


# -- the observer contract -----------------------------------------------------------------------


async def test_subscribed_to_a_subject_on_next_only_enqueues(start_hook: StartHook) -> None:
    hook = await start_hook()
    endpoint = rxsinks.Endpoint("hooks", hook.url)
    subject = rxsinks.EventSubject()
    subject.subscribe(endpoint)
    events = make_events(20)

    subject.write(*events)  # a synchronous burst: nothing can have been sent yet

    assert hook.hits == []
    assert endpoint.pending == 20
    assert endpoint.metrics().events == 20
    assert await subject.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)
    assert hook.delivered == ids(events)
    assert endpoint.metrics().pending == 0
    assert await endpoint.aclose() == rxsinks.CloseReport(flushed=True)


async def test_on_next_directly_returns_before_delivery(start_hook: StartHook) -> None:
    hook = await start_hook()
    endpoint = rxsinks.Endpoint("hooks", hook.url)
    events = make_events(3)
    for event in events:
        endpoint.on_next(event)
    assert hook.hits == []
    assert endpoint.pending == 3
    assert await endpoint.aclose() == rxsinks.CloseReport(flushed=True)
    assert hook.delivered == ids(events)


# -- the registry's metrics (REFERENCE.md section 3) ---------------------------------------------


async def test_metrics_count_events_per_attempt_and_skip_ignored(start_hook: StartHook) -> None:
    hook = await start_hook(500, 500)  # the block fails twice, then succeeds
    endpoint = rxsinks.Endpoint(
        "hooks", hook.url, ignore_actions=["pull"], batch=rxsinks.Batching(max_events=3)
    )
    pushes, pulls = make_events(3, "push"), make_events(4, "pull")
    for event in (pulls[0], pushes[0], pulls[1], pushes[1], pulls[2], pushes[2], pulls[3]):
        endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    assert [hit.ids for hit in hook.hits] == [tuple(ids(pushes))] * 3
    metrics = endpoint.metrics()
    assert metrics.registry_dict() == {
        "Pending": 0,
        "Events": 3,  # the 4 ignored pulls are never counted
        "Successes": 3,
        "Failures": 6,  # 2 failed attempts of a block of 3
        "Errors": 0,
        "Statuses": {"500 Internal Server Error": 6, "200 OK": 3},
    }
    assert metrics.delivered_blocks == 1
    assert metrics.latency_buckets[-1] == 1


async def test_transport_errors_count_as_errors_without_a_status() -> None:
    endpoint = rxsinks.Endpoint(
        "down",
        refused_url(),
        retry=rxsinks.retry_with_breaker(10, stop=stop_after_attempt(3)),
        timeout=2.0,
    )
    letters = letters_of(endpoint)
    endpoint.on_next(make_events(1)[0])

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    metrics = endpoint.metrics()
    assert metrics.registry_dict() == {
        "Pending": 0,
        "Events": 1,
        "Successes": 0,
        "Failures": 0,
        "Errors": 3,
        "Statuses": {},
    }
    assert metrics.dead_letters == 1
    assert "cannot connect" in metrics.last_error
    [letter] = letters
    assert letter.attempts == 3
    assert type(letter.error) is rxsinks.DeliveryError


# -- an outage and the breaker -------------------------------------------------------------------


async def test_outage_delivers_everything_once_in_order_with_the_breakers_timing(
    start_hook: StartHook,
) -> None:
    threshold, backoff, failing = 3, 0.1, 5
    hook = await start_hook(*[500] * failing)
    endpoint = rxsinks.Endpoint("hooks", hook.url, threshold=threshold, backoff=backoff)
    outcomes = record(endpoint)
    events = make_events(4)
    for event in events:
        endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    assert hook.delivered == ids(events)  # each exactly once, in order
    first = events[0].id
    assert [hit.ids for hit in hook.hits[: failing + 1]] == [(first,)] * (failing + 1)
    assert [hit.status for hit in hook.hits] == [500] * failing + [200] * len(events)
    # the first `threshold` attempts go back to back (no wait is scheduled between them) ...
    retry_in = [o.retry_in for o in outcomes if o.kind is OutcomeKind.FAILED]
    assert retry_in[: threshold - 1] == [0.0] * (threshold - 1)
    assert retry_in[threshold - 1 :] == pytest.approx([backoff] * (failing - threshold + 1))
    # ... and once the breaker is open, attempts are at least `backoff` apart
    times = hook.times
    for before, after in zip(
        times[threshold - 1 : failing], times[threshold : failing + 1], strict=True
    ):
        assert after - before >= backoff - CLOCK_SLACK
    transitions = [o.kind.value for o in outcomes if o.kind.value.startswith("breaker")]
    assert transitions == [
        "breaker_opened",
        "breaker_half_open",
        "breaker_opened",
        "breaker_half_open",
        "breaker_opened",
        "breaker_half_open",
        "breaker_closed",
    ]
    metrics = endpoint.metrics()
    assert (metrics.failures, metrics.successes, metrics.pending) == (failing, 4, 0)
    assert metrics.breaker == "closed"


async def test_a_dead_endpoint_does_not_hold_up_a_healthy_one(start_hook: StartHook) -> None:
    hook = await start_hook()
    healthy = rxsinks.Endpoint("healthy", hook.url)
    dead = rxsinks.Endpoint("dead", refused_url(), threshold=2, backoff=0.02)
    subject = rxsinks.EventSubject()
    subject.subscribe(dead)  # first in line: a blocking member would delay the other
    subject.subscribe(healthy)
    events = make_events(30)
    subject.write(*events)

    # (the hook records an event before it answers: pending drops once the answer is in)
    await eventually(
        lambda: len(hook.delivered) == 30 and healthy.pending == 0, "the healthy endpoint"
    )

    # the healthy endpoint finished while the dead one has delivered nothing and still retries
    assert hook.delivered == ids(events)
    assert dead.pending == 30
    errors = dead.metrics().errors
    await eventually(lambda: dead.metrics().errors > errors, "another attempt of the dead one")

    letters = letters_of(dead)
    report = await dead.aclose(timeout=0.1)
    assert report.flushed is False
    assert report.remaining == 30
    # what was left is dead-lettered, in order, not dropped
    assert [event.id for letter in letters for event in letter.events] == ids(events)
    assert all(letter.error is SINK_CLOSED for letter in letters)
    assert dead.metrics().pending == 0
    assert dead.metrics().dead_letters == 30
    assert await subject.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)
    assert await healthy.aclose() == rxsinks.CloseReport(flushed=True)


async def test_aclose_after_a_subjects_timed_out_close_still_reports_what_is_left() -> None:
    dead = rxsinks.Endpoint("dead", refused_url(), threshold=1, backoff=0.02)
    subject = rxsinks.EventSubject()
    subject.subscribe(dead)
    subject.write(*make_events(4))

    first = await subject.aclose(timeout=0.05)
    assert first.flushed is False
    assert first.remaining == 4

    report = await dead.aclose(timeout=0.05)
    assert report.flushed is False
    assert report.remaining == 4
    assert dead.metrics().dead_letters == 4
    assert await subject.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)


# -- what the receiver answers -------------------------------------------------------------------


async def test_retry_after_is_honoured(start_hook: StartHook) -> None:
    hook = await start_hook((429, {"Retry-After": "1"}))
    endpoint = rxsinks.Endpoint("hooks", hook.url, threshold=10)
    outcomes = record(endpoint)
    [event] = make_events(1)
    endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    assert [hit.status for hit in hook.hits] == [429, 200]
    assert hook.hits[1].time - hook.hits[0].time >= 1.0 - CLOCK_SLACK
    [failed] = [o for o in outcomes if o.kind is OutcomeKind.FAILED]
    assert isinstance(failed.error, WebhookStatusError)
    assert failed.error.retry_after == 1.0
    assert failed.retry_in == 1.0
    assert endpoint.metrics().statuses == {"429 Too Many Requests": 1, "200 OK": 1}


async def test_410_gone_disables_the_endpoint(start_hook: StartHook) -> None:
    hook = await start_hook(200, 410)
    endpoint = rxsinks.Endpoint("hooks", hook.url)
    outcomes = record(endpoint)
    letters = letters_of(endpoint)
    events = make_events(4)
    for event in events[:3]:
        endpoint.on_next(event)
    await eventually(lambda: len(letters) == 2, "two dead letters")
    assert endpoint.disabled
    endpoint.on_next(events[3])  # after disabling: dead-lettered without a request

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    assert [hit.ids for hit in hook.hits] == [(events[0].id,), (events[1].id,)]
    assert [letter.events[0].id for letter in letters] == ids(events[1:])
    assert all(isinstance(letter.error, EndpointDisabledError) for letter in letters)
    assert [o.kind for o in outcomes].count(OutcomeKind.DISABLED) == 1
    metrics = endpoint.metrics()
    assert metrics.disabled is True
    assert metrics.dead_letters == 3
    # only the request answered 410 counts as a failure; the blocks never sent do not
    assert metrics.failures == 1
    assert metrics.statuses == {"200 OK": 1, "410 Gone": 1}
    assert metrics.pending == 0


async def test_a_permanent_status_is_dead_lettered_at_once(start_hook: StartHook) -> None:
    hook = await start_hook(422)
    endpoint = rxsinks.Endpoint(
        "hooks", hook.url, webhook=rxsinks.WebhookOptions(permanent_statuses=[422])
    )
    letters = letters_of(endpoint)
    events = make_events(2)
    for event in events:
        endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    assert [hit.status for hit in hook.hits] == [422, 200]  # no retry of the 422
    [letter] = letters
    assert [event.id for event in letter.events] == [events[0].id]
    assert letter.attempts == 1
    assert isinstance(letter.error, PermanentDeliveryError)
    assert letter.error.status == 422
    assert hook.delivered == [events[1].id]
    assert endpoint.metrics().breaker == "closed"  # the receiver answered: it is not down


async def test_a_tenacity_stop_gives_up_and_the_stream_goes_on(start_hook: StartHook) -> None:
    hook = await start_hook(500, 500, 500)
    endpoint = rxsinks.Endpoint(
        "hooks", hook.url, retry=rxsinks.retry_with_breaker(stop=stop_after_attempt(3))
    )
    letters = letters_of(endpoint)
    events = make_events(3)
    for event in events:
        endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    [letter] = letters
    assert letter.events[0].id == events[0].id
    assert letter.attempts == 3
    assert isinstance(letter.error, WebhookStatusError)
    assert letter.error.status == 500
    assert hook.delivered == ids(events[1:])
    metrics = endpoint.metrics()
    assert (metrics.failures, metrics.successes, metrics.dead_letters) == (3, 2, 1)
    assert endpoint.recent_dead_letters == letters


# -- batching and signatures ---------------------------------------------------------------------


async def test_batches_of_ten_signed_and_verified(start_hook: StartHook) -> None:
    hook = await start_hook(secret=SECRET)
    endpoint = rxsinks.Endpoint(
        "hooks",
        hook.url,
        batch=rxsinks.Batching(max_events=10),
        webhook=rxsinks.WebhookOptions(secret=SECRET),
    )
    events = make_events(100)
    for event in events:
        endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    assert hook.bad_signatures == []
    assert len(hook.hits) == 10
    assert [hit.ids for hit in hook.hits] == [
        tuple(ids(events[i : i + 10])) for i in range(0, 100, 10)
    ]
    assert len({hit.headers["webhook-id"] for hit in hook.hits}) == 10
    metrics = endpoint.metrics()
    assert (metrics.events, metrics.successes, metrics.statuses) == (100, 100, {"200 OK": 100})
    assert metrics.delivered_blocks == 10


# -- the outcome stream --------------------------------------------------------------------------


async def test_outcomes_stream_tells_a_user_observer_everything(start_hook: StartHook) -> None:
    hook = await start_hook(500, 500, 200, 422)
    endpoint = rxsinks.Endpoint(
        "hooks",
        hook.url,
        threshold=2,
        backoff=0.02,
        webhook=rxsinks.WebhookOptions(permanent_statuses=[422]),
    )
    seen: list[tuple[str, int | None, int]] = []

    class Watcher(abc.ObserverBase[Outcome]):
        def on_next(self, value: Outcome) -> None:
            seen.append((value.kind.value, value.status, len(value.events)))

        def on_error(self, error: Exception) -> None:
            raise AssertionError(f"the outcome stream failed: {error}")

        def on_completed(self) -> None:
            pass

    endpoint.outcomes.subscribe(Watcher())
    events = make_events(2)
    for event in events:
        endpoint.on_next(event)

    assert await endpoint.aclose(timeout=10) == rxsinks.CloseReport(flushed=True)

    # in causal order: the breaker opens after the failure that made it open, and closes after
    # the delivery that closed it
    assert seen == [
        ("failed", 500, 1),
        ("failed", 500, 1),
        ("breaker_opened", None, 0),
        ("breaker_half_open", None, 0),
        ("delivered", 200, 1),
        ("breaker_closed", None, 0),
        ("failed", 422, 1),
        ("dead_lettered", 422, 1),
    ]


# -- bounded queues ------------------------------------------------------------------------------


async def test_a_bounded_queue_drops_the_oldest_during_an_outage() -> None:
    endpoint = rxsinks.Endpoint(
        "dead",
        refused_url(),
        threshold=1,
        backoff=10.0,
        queue=rxsinks.queue(max_events=5, overflow="drop_oldest"),
    )
    outcomes = record(endpoint)
    letters = letters_of(endpoint)
    events = make_events(20)
    for event in events:
        endpoint.on_next(event)

    metrics = endpoint.metrics()
    assert (metrics.events, metrics.dropped, metrics.pending) == (20, 15, 5)
    dropped = [o.events[0].id for o in outcomes if o.kind is OutcomeKind.DROPPED]
    assert dropped == ids(events[:15])

    report = await endpoint.aclose(timeout=0.05)
    assert (report.flushed, report.remaining) == (False, 5)
    assert [letter.events[0].id for letter in letters] == ids(events[15:])
    assert endpoint.metrics().pending == 0


async def test_overflow_error_raises_to_a_direct_writer() -> None:
    endpoint = rxsinks.Endpoint(
        "dead",
        refused_url(),
        threshold=1,
        backoff=10.0,
        queue=rxsinks.queue(max_events=5, overflow="error"),
    )
    events = make_events(6)
    for event in events[:5]:
        endpoint.on_next(event)
    with pytest.raises(QueueFullError) as raised:
        endpoint.on_next(events[5])
    assert raised.value.limit == 5
    assert endpoint.metrics().events == 5
    report = await endpoint.aclose(timeout=0.05)
    assert report.remaining == 5


async def test_overflow_error_through_a_subject_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = rxsinks.Endpoint(
        "dead",
        refused_url(),
        threshold=1,
        backoff=10.0,
        queue=rxsinks.queue(max_events=5, overflow="error"),
    )
    subject = rxsinks.EventSubject()
    subject.subscribe(endpoint)
    with caplog.at_level(logging.ERROR, logger="rxsinks.broadcast"):
        subject.write(*make_events(7))  # the producer never sees the endpoint's error

    refused = [r for r in caplog.records if r.exc_info and r.exc_info[0] is QueueFullError]
    assert len(refused) == 2
    assert len(subject.members) == 1  # a full queue does not unsubscribe the endpoint
    assert endpoint.metrics().events == 5
    report = await endpoint.aclose(timeout=0.05)
    assert report.remaining == 5
    await subject.aclose(timeout=10)


# -- closing -------------------------------------------------------------------------------------


async def test_close_is_idempotent_and_writes_after_it_fail(start_hook: StartHook) -> None:
    hook = await start_hook()
    endpoint = rxsinks.Endpoint("hooks", hook.url)
    [event, late] = make_events(2)
    endpoint.on_next(event)

    assert await endpoint.aclose() == rxsinks.CloseReport(flushed=True)
    assert await endpoint.aclose() == rxsinks.CloseReport(flushed=True)
    with pytest.raises(SinkClosedError) as raised:
        endpoint.on_next(late)
    assert raised.value is SINK_CLOSED
    assert hook.delivered == [event.id]


async def test_aclose_with_a_timeout_releases_everything_on_a_dead_endpoint() -> None:
    before = open_sessions()
    endpoint = rxsinks.Endpoint("dead", refused_url(), threshold=2, backoff=0.02)
    for event in make_events(5):
        endpoint.on_next(event)
    await eventually(lambda: endpoint.metrics().errors >= 3, "a few failed attempts")
    assert open_sessions() - before  # the endpoint holds a session while it works

    first = await endpoint.aclose(timeout=0.05)
    second = await endpoint.aclose(timeout=0.05)

    assert (first.flushed, first.remaining) == (False, 5)
    assert second == first
    assert open_sessions() - before == set()
    attempts = endpoint.metrics().errors
    await asyncio.sleep(0.1)  # five backoffs: a retry timer left behind would try again
    assert endpoint.metrics().errors == attempts
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


# -- option objects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keywords", "argument"),
    [
        ({"timeout": 2.0, "webhook": rxsinks.WebhookOptions()}, "timeout"),
        ({"headers": {"X-A": "1"}, "webhook": rxsinks.WebhookOptions()}, "headers"),
        ({"threshold": 3, "retry": rxsinks.retry_with_breaker()}, "threshold"),
        ({"backoff": 2.0, "retry": rxsinks.retry_with_breaker()}, "backoff"),
    ],
)
def test_a_shortcut_and_its_object_together_are_refused(
    keywords: dict[str, object], argument: str
) -> None:
    with pytest.raises(rxsinks.OptionError) as info:
        rxsinks.Endpoint("hooks", "http://127.0.0.1:9/", **keywords)  # type: ignore[arg-type]
    assert info.value.argument == argument
    assert "give it in one place only" in str(info.value)


@pytest.mark.parametrize(
    ("keywords", "fragment"),
    [
        ({"webhook": {"timeout": 2}}, "webhook must be an rxsinks.WebhookOptions"),
        ({"batch": 10}, "batch must be an rxsinks.Batching"),
        ({"delivery": 4}, "delivery must be an rxsinks.Delivery"),
        ({"queue": 100}, "queue must be made by rxsinks.queue()"),
        ({"retry": 3}, "retry must be made by rxsinks.retry_with_breaker()"),
        ({"filter": ["library/*"]}, "filter must be an rxsinks.EventFilter"),
    ],
)
def test_an_option_of_the_wrong_kind_is_named(keywords: dict[str, object], fragment: str) -> None:
    with pytest.raises(TypeError, match=re.escape(fragment)):
        rxsinks.Endpoint("hooks", "http://127.0.0.1:9/", **keywords)  # type: ignore[arg-type]


def test_registry_shortcuts_take_the_registry_defaults_for_non_positive_values() -> None:
    endpoint = rxsinks.Endpoint("hooks", "http://127.0.0.1:9/", timeout=0, threshold=-1)
    assert endpoint.breaker is not None
    assert endpoint.breaker.threshold == 10
    assert endpoint._webhook is not None and endpoint._webhook.options.timeout == 1.0


async def test_the_queue_given_bounds_the_buffer_and_its_hooks_are_called() -> None:
    taken: list[int] = []
    dropped: list[int] = []
    endpoint = rxsinks.Endpoint(
        "dead",
        refused_url(),
        threshold=1,
        backoff=10.0,
        queue=rxsinks.queue(
            max_events=2,
            overflow="drop_newest",
            on_ingress=lambda block: taken.append(len(block)),
            on_drop=lambda block: dropped.append(len(block)),
        ),
    )
    for item in make_events(5):
        endpoint.on_next(item)
    await eventually(lambda: len(dropped) >= 1, "a drop")
    assert endpoint.metrics().dropped == len(dropped)
    assert len(taken) == 5 - len(dropped)  # the endpoint's metrics and the user's hook agree
    assert endpoint.metrics().events == len(taken)
    await endpoint.aclose(timeout=0.05)


def test_a_durable_endpoint_takes_no_queue(tmp_path: Path) -> None:
    store = rxsinks.SQLiteStore(str(tmp_path / "events.db"))
    with pytest.raises(ValueError, match="buffer is its store; give no queue"):
        rxsinks.Endpoint("a", "http://127.0.0.1:9/", store=store, queue=rxsinks.queue())


def push(repository: str, tag: str) -> rxsinks.Event:
    return rxsinks.Event.new("push", target={"repository": repository, "tag": tag})


def test_concurrent_delivery_keeps_each_repository_in_order() -> None:
    scheduler = TestScheduler()
    started: list[tuple[float, str]] = []

    def slow(block: tuple[rxsinks.Event, ...]) -> reactivex.Observable[object]:
        # each POST takes one (virtual) second
        started.append((scheduler.clock, f"{block[0].target.repository}:{block[0].target.tag}"))
        return reactivex.timer(1.0, scheduler=scheduler).pipe(ops.ignore_elements())

    endpoint = rxsinks.Endpoint(
        "hooks",
        "http://127.0.0.1:9/",
        sink=slow,
        delivery=rxsinks.Delivery(concurrency=4),
        scheduler=scheduler,
    )
    for item in (push("a", "1"), push("a", "2"), push("b", "1"), push("c", "1"), push("a", "3")):
        endpoint.on_next(item)
    scheduler.advance_to(10.0)
    # b and c go beside a; a's later events wait for the earlier ones, in order
    assert started == [
        (0.0, "a:1"),
        (0.0, "b:1"),
        (0.0, "c:1"),
        (1.0, "a:2"),
        (2.0, "a:3"),
    ]
    assert endpoint.metrics().successes == 5


def test_a_delay_holds_each_block_from_its_event_time() -> None:
    scheduler = TestScheduler()
    delivered: list[tuple[float, str]] = []
    endpoint = rxsinks.Endpoint(
        "hooks",
        "http://127.0.0.1:9/",
        sink=lambda block: delivered.append((scheduler.clock, block[0].target.tag)),
        delivery=rxsinks.Delivery(delay=30.0),
        scheduler=scheduler,
    )
    # (no timestamp: its arrival counts, so the test does not depend on the wall clock)
    fresh = rxsinks.Event.from_dict({"id": "1", "action": "push", "target": {"tag": "fresh"}})
    old = rxsinks.Event.from_dict(
        {"id": "2", "timestamp": "2001-01-01T00:00:00Z", "action": "push", "target": {"tag": "old"}}
    )
    endpoint.on_next(fresh)  # goes 30 s after it arrived
    endpoint.on_next(old)  # its 30 s are long over, but blocks keep their order
    scheduler.advance_to(29.0)
    assert delivered == []
    scheduler.advance_to(40.0)
    assert delivered == [(30.0, "fresh"), (30.0, "old")]


async def test_outcomes_and_dead_letters_complete_when_the_endpoint_closes(
    start_hook: StartHook,
) -> None:
    # plain Rx aggregates on an endpoint's streams finish: they complete once it closed
    hook = await start_hook(200, 422)
    endpoint = rxsinks.Endpoint(
        "hooks",
        hook.url,
        webhook=rxsinks.WebhookOptions(permanent_statuses=[422]),
    )
    kinds: list[list[str]] = []
    counted: list[int] = []
    endpoint.outcomes.pipe(ops.map(lambda o: o.kind.value), ops.to_list()).subscribe(kinds.append)
    endpoint.dead_letters.pipe(ops.count()).subscribe(counted.append)
    subject = rxsinks.EventSubject()
    subject.subscribe(endpoint)
    subject.write(*make_events(2))
    report = await subject.aclose(10)  # waits for the endpoint to drain (its drained signal)
    assert report.flushed
    assert kinds == [["delivered", "failed", "dead_lettered"]]
    assert counted == [1]


# ----------------------------------------------------------------------- other threads


async def test_behind_observe_on_a_thread_pool_it_delivers_on_its_loop(
    start_hook: StartHook,
) -> None:
    # the endpoint was built on the loop; its events arrive on pool threads: each is handed
    # over to the loop, where its aiohttp session lives, and the subject's flush waits for them
    hook = await start_hook()
    endpoint = rxsinks.Endpoint("pool", hook.url, timeout=5.0)
    events = rxsinks.EventSubject()
    pool = ThreadPoolScheduler(2)
    events.pipe(ops.observe_on(pool), ops.map(lambda event: event)).subscribe(endpoint)
    sent = make_events(20)
    for event in sent:
        events.on_next(event)
    report = await events.aclose(timeout=20)
    assert report.flushed, report
    assert hook.delivered == ids(sent)  # observe_on keeps the order
    assert endpoint.metrics().successes == 20
    pool.executor.shutdown()


async def test_events_written_from_threads_all_go_and_none_after_close(
    start_hook: StartHook,
) -> None:
    hook = await start_hook()
    endpoint = rxsinks.Endpoint("threads", hook.url, timeout=5.0)
    batches = [make_events(25) for _ in range(4)]

    def write(events: list[rxsinks.Event]) -> None:
        for event in events:
            endpoint.on_next(event)

    await asyncio.gather(*(asyncio.to_thread(write, events) for events in batches))
    report = await endpoint.aclose(timeout=20)
    assert report.flushed, report
    for events in batches:  # one thread's events keep their order
        delivered = [event_id for event_id in hook.delivered if event_id in set(ids(events))]
        assert delivered == ids(events)
    assert len(hook.delivered) == 100
    with pytest.raises(SinkClosedError):
        await asyncio.to_thread(endpoint.on_next, make_events(1)[0])


async def test_completion_from_another_thread_comes_after_the_events_it_handed_over(
    start_hook: StartHook,
) -> None:
    hook = await start_hook()
    endpoint = rxsinks.Endpoint("late", hook.url, timeout=5.0)
    sent = make_events(10)

    def produce() -> None:
        for event in sent:
            endpoint.on_next(event)
        endpoint.on_completed()

    drained: list[bool] = []
    endpoint.drained.subscribe(on_completed=lambda: drained.append(True))
    await asyncio.to_thread(produce)
    await eventually(lambda: bool(drained), "the endpoint drained")
    assert hook.delivered == ids(sent)
