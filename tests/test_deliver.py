"""Tests of rxsinks.deliver: the delivery stage, its sink contract, and plain Rx around it.

Timing tests run in virtual time (ticks are seconds). The second half uses the public API the way
an RxPY user would: plain reactivex operators spliced in anywhere (``observe_on``, a raising
``map``, ``delay``, ``subscribe_on``), re-entrant writes, async and observable sinks, disposal.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.scheduler.eventloop import AsyncIOScheduler, AsyncIOThreadSafeScheduler
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from tenacity.stop import stop_after_attempt

import rxsinks
from rxsinks import Event, EventSubject, Outcome, OutcomeKind, deliver, queue, retry_with_breaker
from tests.fakes import ScriptedSink, Unreliable, make_event

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
K = OutcomeKind


def kinds(outcomes: list[Outcome]) -> list[str]:
    return [outcome.kind.value for outcome in outcomes]


class Run:
    """What a stage emitted in virtual time: outcomes and the terminal notification."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.timed: list[tuple[float, str]] = []


def run(scheduler: TestScheduler, messages: list[Any], sink: Any, **options: Any) -> Run:
    """Subscribe ``hot(messages) | deliver(sink, **options)`` at 200 and run to the end."""
    xs = scheduler.create_hot_observable(messages)
    got = Run()
    stage = deliver(sink, scheduler=scheduler, **options)

    def outcome(value: Outcome) -> None:
        got.outcomes.append(value)
        got.timed.append((scheduler.clock, value.kind.value))

    scheduler.schedule_absolute(
        200,
        lambda *_: xs.pipe(stage).subscribe(
            outcome,
            lambda e: got.timed.append((scheduler.clock, f"error {e}")),
            lambda: got.timed.append((scheduler.clock, "completed")),
        ),
    )
    scheduler.start()
    return got


# -- the stage -------------------------------------------------------------------------------


def test_one_block_at_a_time_in_order_and_completion_after_the_last() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=3)
    got = run(
        scheduler,
        [on_next(210, "a"), on_next(211, "b"), on_next(212, "c"), on_completed(213)],
        sink,
    )
    assert sink.attempts == [(210, "a"), (213, "b"), (216, "c")]
    assert got.timed == [
        (213, "delivered"),
        (216, "delivered"),
        (219, "delivered"),
        (219, "completed"),
    ]


def test_an_upstream_error_passes_on_after_what_was_accepted() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=5)
    boom = RuntimeError("upstream")
    got = run(scheduler, [on_next(210, "a"), on_next(211, "b"), on_error(212, boom)], sink)
    assert [item for _, item, _ in sink.settled] == ["a", "b"]
    assert got.timed[-1] == (220, "error upstream")


def test_concurrency_keeps_up_to_n_in_flight() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=10)
    messages = [on_next(210 + i, c) for i, c in enumerate("abcde")]
    run(scheduler, messages, sink, concurrency=2)
    assert sink.attempts == [(210, "a"), (211, "b"), (220, "c"), (221, "d"), (230, "e")]


def test_a_key_keeps_one_block_per_key_in_flight_and_each_key_in_order() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=10)
    # a1 a2 go in order one after the other; b1 goes beside a1, c1 beside them
    messages = [on_next(210, "a1"), on_next(211, "a2"), on_next(212, "b1"), on_next(213, "c1")]
    run(scheduler, messages, sink, concurrency=3, key=lambda item: item[0])
    assert sink.attempts == [(210, "a1"), (212, "b1"), (213, "c1"), (220, "a2")]


def test_a_failing_key_does_not_stop_the_other_keys() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(
        scheduler,
        ticks=1,
        fails=lambda n: n < 4,  # a1 fails its first attempts
    )
    policy = retry_with_breaker(threshold=0, wait=lambda _: 10.0, scheduler=scheduler)
    messages = [on_next(210, "a1"), on_next(210, "b1"), on_next(211, "b2")]
    # the first attempts (a1, b1) fail: both retried 10 ticks later
    run(scheduler, messages, sink, concurrency=2, key=lambda item: item[0], retry=policy)
    delivered = [item for item in sink.delivered]
    assert set(delivered) == {"a1", "b1", "b2"}
    assert delivered.index("b1") < delivered.index("b2")


def test_without_retry_a_failed_block_is_dead_lettered_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True])
    with caplog.at_level(logging.WARNING, logger="rxsinks.deliver"):
        got = run(scheduler, [on_next(210, "a"), on_next(211, "b")], sink)
    assert got.timed == [(210, "failed"), (210, "dead_lettered"), (211, "delivered")]
    assert "gave up on a block of 1 event(s) after 1 attempt(s)" in caplog.text


def test_outcomes_carry_events_attempt_error_and_latency() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=2, fails=[True])
    policy = retry_with_breaker(threshold=0, wait=lambda _: 3.0, scheduler=scheduler)
    failed, delivered = run(scheduler, [on_next(210, "a")], sink, retry=policy).outcomes
    assert failed.kind is K.FAILED and failed.events == ("a",) and failed.attempt == 1
    assert isinstance(failed.error, Unreliable) and failed.retry_in == 3.0
    assert delivered.kind is K.DELIVERED and delivered.attempt == 2
    assert delivered.latency == 7.0  # first attempt at 210, delivered at 217


def test_a_result_with_a_status_puts_it_on_the_outcome() -> None:
    class Answer:
        status = 202

    scheduler = TestScheduler()
    seen: list[Outcome] = []
    reactivex.of("a").pipe(deliver(lambda block: Answer(), scheduler=scheduler)).subscribe(
        seen.append
    )
    scheduler.start()
    assert seen[0].status == 202


def test_a_breaker_transition_follows_the_failure_that_caused_it() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True] * 3)
    policy = retry_with_breaker(3, 10, scheduler=scheduler)
    got = run(scheduler, [on_next(210, "a")], sink, retry=policy)
    assert got.timed[:6] == [
        (210, "failed"),
        (210, "failed"),
        (210, "failed"),
        (210, "breaker_opened"),
        (220, "breaker_half_open"),
        (220, "delivered"),
    ]
    assert got.timed[6] == (220, "breaker_closed")


def test_each_subscription_gets_its_own_breaker() -> None:
    scheduler = TestScheduler()
    failing: ScriptedSink[str] = ScriptedSink(scheduler, fails=lambda n: True)
    healthy: ScriptedSink[str] = ScriptedSink(scheduler)
    policy = retry_with_breaker(2, 100, stop=stop_after_attempt(3), scheduler=scheduler)
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"))
    scheduler.schedule_absolute(200, lambda *_: xs.pipe(deliver(failing, retry=policy)).subscribe())
    scheduler.schedule_absolute(200, lambda *_: xs.pipe(deliver(healthy, retry=policy)).subscribe())
    scheduler.start()
    # the first subscription's breaker opened; the second's never saw a failure
    assert healthy.attempts == [(210, "a"), (211, "b")]


def test_a_shared_breaker_is_shared_on_purpose_with_one_trial_when_half_open() -> None:
    scheduler = TestScheduler()
    breaker = rxsinks.Breaker(1, 10)
    one: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True])
    two: ScriptedSink[str] = ScriptedSink(scheduler, ticks=5)
    policy = retry_with_breaker(breaker=breaker, scheduler=scheduler)
    xs = scheduler.create_hot_observable(on_next(210, "a"))
    ys = scheduler.create_hot_observable(on_next(212, "b"))
    scheduler.schedule_absolute(200, lambda *_: xs.pipe(deliver(one, retry=policy)).subscribe())
    scheduler.schedule_absolute(200, lambda *_: ys.pipe(deliver(two, retry=policy)).subscribe())
    scheduler.start()
    # one's failure opened the shared breaker: b waits for it; at 220 a goes as the trial,
    # and b only once the trial succeeded and closed the breaker
    assert one.attempts == [(210, "a"), (220, "a")]
    assert two.attempts == [(220, "b")]


def test_disposing_cancels_timers_and_releases_the_counters() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=lambda n: True)
    bounded = queue()
    stage = deliver(sink, queue=bounded, retry=retry_with_breaker(1, 10, scheduler=scheduler))
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"))
    subscription: list[Any] = []
    scheduler.schedule_absolute(200, lambda *_: subscription.append(xs.pipe(stage).subscribe()))
    scheduler.schedule_absolute(215, lambda *_: subscription[0].dispose())
    scheduler.start()
    assert sink.attempt_times == [210]  # the retry due at 220 never ran
    assert stage.pending == 0 and stage.in_flight == 0
    assert bounded.pending == 0 and bounded.in_flight == 0


def test_abort_gives_everything_up_and_completes() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=100)
    stage = deliver(sink, scheduler=scheduler)
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"))
    got: list[Outcome] = []
    completed: list[float] = []
    scheduler.schedule_absolute(
        200,
        lambda *_: xs.pipe(stage).subscribe(
            got.append, on_completed=lambda: completed.append(scheduler.clock)
        ),
    )
    scheduler.schedule_absolute(220, lambda *_: stage.abort())
    scheduler.start()
    assert kinds(got) == ["dead_lettered", "dead_lettered"]
    assert [o.events for o in got] == [("a",), ("b",)]
    assert got[0].error is rxsinks.SINK_CLOSED
    assert completed == [220]


def test_a_closed_sink_is_terminal_for_everything_behind_it() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(
        scheduler, ticks=1, fails=[True], error=lambda _: rxsinks.SINK_CLOSED
    )
    got = run(
        scheduler,
        [on_next(210, "a"), on_next(210, "b"), on_next(215, "c")],
        sink,
        retry=retry_with_breaker(scheduler=scheduler),
    )
    assert [item for _, item in sink.attempts] == ["a"]
    assert got.timed == [
        (211, "failed"),
        (211, "dead_lettered"),
        (211, "dead_lettered"),
        (215, "dead_lettered"),
    ]


def test_a_long_synchronous_backlog_drains_in_slices() -> None:
    scheduler = TestScheduler()
    turns: list[float] = []
    seen = [0]

    def sink(_: int) -> None:
        seen[0] += 1
        if seen[0] % 512 == 1:
            turns.append(seen[0])

    source: Subject[int] = Subject()
    source.pipe(deliver(sink, scheduler=scheduler)).subscribe()
    for i in range(2000):
        source.on_next(i)
    # nothing ran yet: delivery happens on the scheduler, never inside on_next
    assert seen == [0]
    scheduler.start()
    assert seen == [2000]
    assert turns == [1, 513, 1025, 1537]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_concurrency_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        deliver(print, concurrency=bad)


def test_a_sink_must_be_callable_and_an_observer_gets_a_hint() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        deliver("post")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="an observer is not a sink"):
        deliver(Subject())  # type: ignore[arg-type]


def test_retry_must_come_from_retry_with_breaker() -> None:
    with pytest.raises(TypeError, match="retry_with_breaker"):
        deliver(print, retry=stop_after_attempt(3))  # type: ignore[arg-type]


def test_queue_and_retry_with_breaker_refuse_to_be_operators_on_a_hot_source() -> None:
    subject = EventSubject()
    with pytest.raises(TypeError, match="not an operator of its own"):
        subject.pipe(queue())
    with pytest.raises(TypeError, match="hot"):
        subject.pipe(retry_with_breaker())
    with pytest.raises(TypeError, match="hot"):
        subject.pipe(ops.map(lambda e: e), retry_with_breaker())


# -- the sink contract -----------------------------------------------------------------------


async def test_an_async_sink_is_awaited_and_its_exception_is_a_failed_attempt() -> None:
    calls: list[str] = []

    async def post(item: str) -> None:
        calls.append(item)
        await asyncio.sleep(0)
        if len(calls) == 1:
            raise Unreliable("first attempt")

    outcomes = await reactivex.from_iterable(["a", "b"]).pipe(
        deliver(post, retry=retry_with_breaker(threshold=0)), ops.to_list()
    )
    assert calls == ["a", "a", "b"]
    assert kinds(outcomes) == ["failed", "delivered", "delivered"]


async def test_an_observable_sink_completes_or_errors() -> None:
    attempts = [0]

    def post(item: str) -> Observable[Any]:
        attempts[0] += 1
        if attempts[0] == 1:
            return reactivex.throw(Unreliable("no"))
        return reactivex.timer(0.001).pipe(ops.ignore_elements())

    outcomes = await reactivex.of("a").pipe(
        deliver(post, retry=retry_with_breaker(threshold=0)), ops.to_list()
    )
    assert kinds(outcomes) == ["failed", "delivered"]


async def test_a_cancelled_async_delivery_is_a_failed_attempt() -> None:
    async def post(_: str) -> None:
        raise asyncio.CancelledError

    outcomes = await reactivex.of("a").pipe(deliver(post), ops.to_list())
    assert kinds(outcomes) == ["failed", "dead_lettered"]


def test_an_async_sink_outside_a_loop_fails_clearly() -> None:
    async def post(_: str) -> None:
        pass

    scheduler = TestScheduler()
    got: list[Outcome] = []
    reactivex.of("a").pipe(deliver(post, scheduler=scheduler)).subscribe(got.append)
    scheduler.start()
    assert kinds(got) == ["failed", "dead_lettered"]
    assert "outside a running asyncio event loop" in str(got[0].error)


def test_the_contract_is_in_help_of_every_operator_that_takes_a_sink() -> None:
    for documented in (rxsinks.deliver, rxsinks.Endpoint, rxsinks.CallbackSink):
        text = documented.__doc__ or ""
        for word in ("returns", "raise", "awaitable", "observable"):
            assert word in text, (documented, word)


# -- plain Rx around the stage ---------------------------------------------------------------


def flaky_then_ok(failures: int) -> tuple[list[Any], Callable[[Any], None]]:
    calls: list[Any] = []

    def sink(block: Any) -> None:
        calls.append(block)
        if len(calls) <= failures:
            raise Unreliable(f"attempt {len(calls)}")

    return calls, sink


async def test_observe_on_a_thread_pool_above_the_stage_keeps_retry_and_flush() -> None:
    subject = EventSubject()
    calls, sink = flaky_then_ok(2)
    outcomes: list[Outcome] = []
    pool = ThreadPoolScheduler(2)
    subject.pipe(
        ops.observe_on(pool),
        deliver(sink, retry=retry_with_breaker(threshold=0)),
    ).subscribe(outcomes.append)
    subject.write(make_event(1), make_event(2))
    report = await subject.aclose(10)
    assert report.flushed
    assert kinds(outcomes) == ["failed", "failed", "delivered", "delivered"]
    assert [block.id for block in calls] == ["e1", "e1", "e1", "e2"]


async def test_observe_on_below_the_stage_and_aclose_waits_for_the_end() -> None:
    subject = EventSubject()
    loop = asyncio.get_running_loop()
    delivered: list[str] = []

    async def post(event: Event) -> None:
        await asyncio.sleep(0.01)
        delivered.append(event.id)

    seen: list[Outcome] = []
    subject.pipe(
        ops.observe_on(AsyncIOScheduler(loop)),
        deliver(post),
        ops.observe_on(ThreadPoolScheduler(1)),
        ops.delay(0.01),
    ).subscribe(seen.append)
    subject.write(make_event(1), make_event(2), make_event(3))
    report = await subject.aclose(10)
    assert report.flushed
    assert delivered == ["e1", "e2", "e3"]
    assert kinds(seen) == ["delivered"] * 3  # the observer at the end had them all


async def test_a_bounded_queue_holds_its_bound_behind_observe_on() -> None:
    subject = EventSubject()
    release = asyncio.Event()
    started: list[str] = []

    async def post(event: Event) -> None:
        started.append(event.id)
        await release.wait()

    bounded = queue(max_events=2, overflow="drop_newest")
    outcomes: list[Outcome] = []
    subject.pipe(ops.observe_on(ThreadPoolScheduler(1)), deliver(post, queue=bounded)).subscribe(
        outcomes.append
    )
    subject.write(make_event(0))
    for _ in range(500):
        if started:
            break
        await asyncio.sleep(0.01)
    subject.write(*(make_event(i) for i in range(1, 6)))
    for _ in range(500):
        if bounded.dropped == 3:
            break
        await asyncio.sleep(0.01)
    # one in flight, two buffered, three dropped: the bound held
    assert started == ["e0"]
    assert bounded.pending == 3 and bounded.dropped == 3
    release.set()
    await subject.aclose(10)
    assert kinds(outcomes).count("dropped") == 3
    assert kinds(outcomes).count("delivered") == 3


async def test_a_raising_map_above_the_stage_is_an_upstream_error_never_a_delivery() -> None:
    subject = EventSubject()
    delivered: list[str] = []

    def boom(event: Event) -> Event:
        if event.id == "e2":
            raise ValueError("bad event")
        return event

    outcomes: list[Outcome] = []
    errors: list[Exception] = []
    subject.pipe(ops.map(boom), deliver(lambda e: delivered.append(e.id))).subscribe(
        outcomes.append, errors.append
    )
    subject.write(make_event(1), make_event(2))
    await subject.aclose(10)
    assert delivered == ["e1"]
    assert [o.events[0].id for o in outcomes if o.kind is K.DELIVERED] == ["e1"]
    assert [str(e) for e in errors] == ["bad event"]


async def test_a_raising_observer_of_the_outcomes_never_stops_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subject = EventSubject()
    delivered: list[str] = []

    def observer(_: Outcome) -> None:
        raise RuntimeError("observer bug")

    subject.pipe(deliver(lambda e: delivered.append(e.id))).subscribe(observer)
    subject.write(make_event(1), make_event(2))
    report = await subject.aclose(10)
    assert report.flushed and delivered == ["e1", "e2"]
    assert "the outcome observer raised" in caplog.text


async def test_a_re_entrant_write_from_the_sink_is_delivered_in_order() -> None:
    subject = EventSubject()
    seen: list[str] = []
    other: list[str] = []

    def sink(event: Event) -> None:
        seen.append(event.id)
        if event.id == "e1":
            subject.on_next(make_event(2))  # written while e1 is being delivered

    subject.pipe(deliver(sink, retry=retry_with_breaker())).subscribe()
    subject.subscribe(lambda e: other.append(e.id))
    subject.on_next(make_event(1))
    for _ in range(500):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    report = await subject.aclose(10)
    assert report.flushed
    assert seen == ["e1", "e2"]
    assert other == ["e1", "e2"]


async def test_subscribe_on_and_delay_anywhere_keep_flush_and_order() -> None:
    subject = EventSubject()
    delivered: list[str] = []
    subject.pipe(
        ops.delay(0.01),
        deliver(lambda e: delivered.append(e.id)),
        ops.subscribe_on(ThreadPoolScheduler(1)),
    ).subscribe()
    await asyncio.sleep(0.05)  # subscribe_on subscribes on another thread
    subject.write(*(make_event(i) for i in range(5)))
    report = await subject.aclose(10)
    assert report.flushed
    assert delivered == [f"e{i}" for i in range(5)]


async def test_the_outcome_stream_completes_so_plain_rx_aggregates_work() -> None:
    subject = EventSubject()
    counted = subject.pipe(deliver(lambda e: None), ops.count())
    listed = subject.pipe(deliver(lambda e: None), ops.to_list())
    results: list[Any] = []
    counted.subscribe(results.append)
    listed.subscribe(lambda outcomes: results.append(kinds(outcomes)))
    subject.write(make_event(1), make_event(2))
    await subject.aclose(10)
    assert results == [2, ["delivered", "delivered"]]


async def test_a_notebook_may_simply_await_the_pipeline() -> None:
    outcomes = reactivex.from_iterable([make_event(1), make_event(2)]).pipe(
        deliver(lambda e: None), ops.to_list()
    )
    assert kinds(await outcomes) == ["delivered", "delivered"]


def test_outside_a_loop_retries_wait_on_a_thread_not_in_on_next() -> None:
    source: Subject[str] = Subject()
    calls, sink = flaky_then_ok(1)
    done = threading.Event()
    outcomes: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if outcome.kind is K.DELIVERED:
            done.set()

    source.pipe(deliver(sink, retry=retry_with_breaker(threshold=0, wait=lambda _: 0.2))).subscribe(
        record
    )
    source.on_next("a")
    assert kinds(outcomes) in ([], ["failed"])  # on_next returned before the 0.2 s wait
    assert done.wait(10)
    assert calls == ["a", "a"]
    assert kinds(outcomes) == ["failed", "delivered"]


def test_writes_from_many_threads_outside_a_loop_lose_nothing() -> None:
    source: Subject[int] = Subject()
    got: list[int] = []
    lock = threading.Lock()
    finished = threading.Event()
    source.pipe(deliver(got.append)).subscribe(on_completed=finished.set)

    def write(start: int) -> None:
        for i in range(start, start + 250):
            with lock:  # Rx asks producers to serialise on_next; the stage's thread is another
                source.on_next(i)

    threads = [threading.Thread(target=write, args=(k * 250,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    source.on_completed()
    assert finished.wait(10)
    assert sorted(got) == list(range(1000))


async def test_share_and_publish_after_the_stage_work_as_in_plain_rx() -> None:
    subject = EventSubject()
    delivered: list[str] = []
    shared = subject.pipe(deliver(lambda e: delivered.append(e.id))).pipe(ops.share())
    first: list[Outcome] = []
    second: list[Outcome] = []
    shared.subscribe(first.append)
    shared.subscribe(second.append)
    published = subject.pipe(deliver(lambda e: None), ops.publish())
    seen: list[Outcome] = []
    published.subscribe(seen.append)
    published.connect()
    subject.write(make_event(1), make_event(2))
    await subject.aclose(10)
    assert delivered == ["e1", "e2"]  # shared: one delivery for both subscribers
    assert kinds(first) == kinds(second) == ["delivered", "delivered"]
    assert kinds(seen) == ["delivered", "delivered"]


# -- a delivery delay ("the push event arrives before the tag is visible") --------------------


def test_a_delay_holds_each_block_from_its_arrival_and_keeps_the_order() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler)
    got = run(scheduler, [on_next(210, "a"), on_next(213, "b"), on_completed(214)], sink, delay=10)
    assert sink.attempts == [(220, "a"), (223, "b")]
    assert got.timed[-1] == (223, "completed")


def test_a_delay_counts_from_the_block_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler)
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)  # the wall clock, held still
    # "a" happened 3 s ago: with a 5 s delay it may go 2 s after it arrived
    stamps = {"a": 1_000_000.0 - 3, "b": None}
    run(
        scheduler,
        [on_next(210, "a"), on_next(210, "b")],
        sink,
        delay=5,
        timestamp=stamps.get,
    )
    (when_a, first), (when_b, second) = sink.attempts
    assert (first, second) == ("a", "b")
    assert when_a == 212
    assert when_b == 215  # no timestamp: from its arrival, and never before the block ahead


def test_with_keys_a_held_back_key_does_not_hold_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler)
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
    stamps = {"a1": 1_000_000.0 + 100, "b1": None}  # a1 happens in the future (clock skew)
    run(
        scheduler,
        [on_next(210, "a1"), on_next(210, "b1")],
        sink,
        delay=1,
        timestamp=stamps.get,
        concurrency=2,
        key=lambda item: item[0],
    )
    assert [item for _, item in sink.attempts] == ["b1", "a1"]
    assert sink.attempts[0][0] == 211


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, "5"])
def test_a_delay_must_be_finite_seconds(bad: Any) -> None:
    with pytest.raises(ValueError, match="delay"):
        deliver(print, delay=bad)


# -- hostile corners --------------------------------------------------------------------------


async def test_a_thread_pool_scheduler_with_an_async_sink_and_concurrency() -> None:
    # the stage on a thread-based scheduler (every entry point takes its lock); the coroutines
    # still run on the loop the stage was subscribed on
    delivered: list[int] = []
    in_flight = [0, 0]  # now, most

    async def post(item: int) -> None:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await asyncio.sleep(0.005)
        in_flight[0] -= 1
        delivered.append(item)

    loop = asyncio.get_running_loop()
    outcomes = await reactivex.from_iterable(range(40)).pipe(
        deliver(post, concurrency=4, scheduler=ThreadPoolScheduler(3)),
        # the stage emits on its scheduler's threads; awaiting an observable (reactivex's
        # to_future) needs its notifications on the loop, as with any thread-based operator
        ops.observe_on(AsyncIOThreadSafeScheduler(loop)),
        ops.to_list(),
    )
    assert sorted(delivered) == list(range(40))
    assert kinds(outcomes) == ["delivered"] * 40
    assert 1 < in_flight[1] <= 4


async def test_disposing_while_a_coroutine_runs_cancels_it_cleanly() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def post(_: Event) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    subject = EventSubject()
    stage = deliver(post)
    subscription = subject.pipe(stage).subscribe()
    subject.on_next(make_event(1))
    await asyncio.wait_for(started.wait(), 10)
    subscription.dispose()
    for _ in range(100):
        if cancelled:
            break
        await asyncio.sleep(0.01)
    assert cancelled == [True]
    assert stage.pending == 0 and stage.in_flight == 0


async def test_an_endpoint_closed_with_a_deadline_while_its_post_hangs() -> None:
    hang = asyncio.Event()

    async def post(_: tuple[Event, ...]) -> None:
        await hang.wait()

    endpoint = rxsinks.Endpoint("hangs", "http://127.0.0.1:9/", sink=post)
    letters: list[Any] = []
    endpoint.dead_letters.subscribe(letters.append)
    endpoint.on_next(make_event(1))
    endpoint.on_next(make_event(2))
    report = await endpoint.aclose(0.05)
    assert (report.flushed, report.remaining) == (False, 2)
    assert [letter.events[0].id for letter in letters] == ["e1", "e2"]
    assert endpoint.pending == 0


@pytest.mark.parametrize("delay", [1e-7, 0.0004, 1.0000004])
def test_a_delay_finer_than_the_clock_ends(delay: float) -> None:
    # a wake-up lands on the scheduler's resolution, not on the due time itself: the block
    # must still go (it used to set a wake-up for "now" for ever)
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler)
    got = run(scheduler, [on_next(210, "a"), on_completed(211)], sink, delay=delay)
    assert [item for _, item in sink.attempts] == ["a"]
    assert got.timed[-1][1] == "completed"
