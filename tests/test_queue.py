"""Tests of rxsinks._queue: one item in flight, hooks, bounds and flushing, in virtual time."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from rxsinks._event import Event
from rxsinks._exceptions import QueueFullError
from rxsinks._queue import _DRAIN_SLICE, Lane, Queue, queue, weight_of
from rxsinks._sinks import CallbackSink, CollectingSink
from rxsinks._subject import EventSubject
from tests.fakes import (
    HoldingSink,
    RawSource,
    Unreliable,
    check_close,
    ids,
    make_event,
    run_threads,
    settle_after,
)

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error


def subscribe_at(scheduler: TestScheduler, create: Any, observer: Any, at: float = 200.0) -> None:
    """Subscribe ``observer`` to ``create()`` at virtual time ``at`` (like ``start`` does)."""

    def action(*_: Any) -> None:
        create().subscribe(observer, scheduler=scheduler)

    scheduler.schedule_absolute(at, action)


# -- ordering and one item in flight ----------------------------------------------------------


def test_items_go_one_at_a_time_each_after_the_previous_settled() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, "a"), on_next(211, "b"), on_next(212, "c"), on_completed(213)
    )
    results = scheduler.start(
        lambda: xs.pipe(queue(scheduler=scheduler), settle_after(scheduler, 3))
    )
    # the docstring's marble: the sink below takes 3 ticks per item; completion waits for c
    assert results.messages == [
        on_next(210, "a"),
        on_next(213, "b"),
        on_next(216, "c"),
        on_completed(219),
    ]


def test_holding_sink_sees_the_same_timing_and_idle_items_go_at_once() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, "a"), on_next(211, "b"), on_next(240, "c"), on_completed(250)
    )
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=5)
    q = queue(scheduler=scheduler)
    subscribe_at(scheduler, lambda: xs.pipe(q), sink)
    scheduler.start()
    assert sink.attempts == [(210, "a"), (215, "b"), (240, "c")]  # c arrives to an idle queue
    assert [(time, item) for time, item, _ in sink.settled] == [(215, "a"), (220, "b"), (245, "c")]
    assert sink.received[-1] == on_completed(250)
    assert (q.pending, q.in_flight) == (0, 0)


def test_a_synchronous_sink_gets_everything_at_once() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, 1), on_next(210, 2), on_completed(220))
    results = scheduler.start(lambda: xs.pipe(queue(scheduler=scheduler)))
    assert results.messages == [on_next(210, 1), on_next(210, 2), on_completed(220)]


def test_a_failed_attempt_is_reported_and_the_queue_moves_on() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"), on_completed(212))
    failures: list[tuple[float, Any, BaseException]] = []
    egress: list[tuple[float, Any]] = []
    q = queue(
        scheduler=scheduler,
        on_failure=lambda item, error: failures.append((scheduler.clock, item, error)),
        on_egress=lambda item: egress.append((scheduler.clock, item)),
    )
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=2, fails=[True])
    subscribe_at(scheduler, lambda: xs.pipe(q), sink)
    scheduler.start()
    assert [(time, item) for time, item, _ in failures] == [(212, "a")]
    assert isinstance(failures[0][2], Unreliable)
    assert egress == [(212, "a"), (214, "b")]  # egress whatever the outcome
    assert sink.delivered == ["b"]
    assert q.pending == 0


def test_a_raising_synchronous_sink_does_not_stop_the_queue() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(210, "b"), on_completed(220))
    failed: list[Any] = []
    q = queue(scheduler=scheduler, on_failure=lambda item, _: failed.append(item))
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True])
    subscribe_at(scheduler, lambda: xs.pipe(q), sink)
    scheduler.start()  # the raise never reaches the hot source
    assert failed == ["a"]
    assert sink.delivered == ["b"]
    assert sink.completed


def test_upstream_error_passes_on_after_everything_buffered_went() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("upstream")
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"), on_error(212, boom))
    results = scheduler.start(
        lambda: xs.pipe(queue(scheduler=scheduler), settle_after(scheduler, 3))
    )
    assert results.messages == [on_next(210, "a"), on_next(213, "b"), on_error(216, boom)]


def test_dispose_stops_delivery_and_keeps_the_counters_honest() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"), on_next(212, "c"))
    q = queue(scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(q, settle_after(scheduler, 3)), disposed=214)
    assert results.messages == [on_next(210, "a"), on_next(213, "b")]
    # b was in flight at dispose time and settled at 216; c was discarded with the buffer
    assert (q.pending, q.in_flight) == (0, 0)


def test_long_backlogs_drain_in_slices_so_the_loop_is_not_starved() -> None:
    scheduler = TestScheduler()
    source: Subject[int] = Subject()
    seen: list[int] = []
    source.pipe(queue(scheduler=scheduler)).subscribe(seen.append)
    count = 2 * _DRAIN_SLICE + 10
    for value in range(count):
        source.on_next(value)
    probes: list[int] = []
    # queued behind the first drain: it runs between two slices
    scheduler.schedule(lambda *_: probes.append(len(seen)))
    scheduler.start()
    assert probes == [_DRAIN_SLICE]
    assert seen == list(range(count))


# -- hooks and counters -----------------------------------------------------------------------


def test_ingress_egress_and_pending_follow_the_async_sink() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, ("a", "b")), on_next(211, ("c",)), on_completed(230)
    )
    ingress: list[tuple[float, Any]] = []
    egress: list[tuple[float, Any, bool]] = []
    sink: HoldingSink[tuple[str, ...]] = HoldingSink(scheduler, ticks=4)
    q = queue(
        scheduler=scheduler,
        on_ingress=lambda item: ingress.append((scheduler.clock, item)),
        # egress only after the sink settled: the item is delivered by then
        on_egress=lambda item: egress.append((scheduler.clock, item, item in sink.delivered)),
    )
    pending: list[tuple[float, int, int]] = []
    for probe in (210.5, 211.5, 214.5, 218.5):
        scheduler.schedule_absolute(
            probe, lambda *_: pending.append((scheduler.clock, q.pending, q.in_flight))
        )
    subscribe_at(scheduler, lambda: xs.pipe(q), sink)
    scheduler.start()
    assert ingress == [(210, ("a", "b")), (211, ("c",))]
    assert egress == [(214, ("a", "b"), True), (218, ("c",), True)]
    # pending counts events (a block counts its length), buffered and in flight
    assert pending == [(210.5, 2, 1), (211.5, 3, 1), (214.5, 1, 1), (218.5, 0, 0)]


def test_weight_of_counts_blocks_by_length() -> None:
    assert weight_of(("a", "b", "c")) == 3
    assert weight_of(["a"]) == 1
    assert weight_of(()) == 0
    assert weight_of("abc") == 1  # a string is one item, not a block
    assert weight_of(make_event(1)) == 1


def test_pending_counts_a_mix_of_events_and_blocks_by_weight() -> None:
    scheduler = TestScheduler()
    q: Queue[Any] = queue(scheduler=scheduler)
    subject: Subject[Any] = Subject()
    sink: HoldingSink[Any] = HoldingSink(scheduler)
    subject.pipe(q).subscribe(sink)
    for item in (make_event(1), ("a", "b", "c"), make_event(2), ["d", "e"], "f", ()):
        subject.on_next(item)
    assert q.pending == 1 + 3 + 1 + 2 + 1 + 0
    scheduler.start()
    assert q.pending == 0
    assert len(sink.delivered) == 6


def test_a_finished_subscription_is_not_kept_alive_by_its_queue() -> None:
    scheduler = TestScheduler()
    q: Queue[Any] = queue(scheduler=scheduler)
    subject: Subject[Any] = Subject()
    sink: CollectingSink[Any] = CollectingSink()
    subject.pipe(q).subscribe(sink)
    subject.on_next("a")
    subject.on_completed()
    scheduler.start()
    assert sink.items == ["a"] and q.pending == 0 and q.in_flight == 0
    alive = weakref.ref(sink)
    del sink, subject
    gc.collect()
    assert alive() is None


# -- bounds -----------------------------------------------------------------------------------


def _bounded_run(overflow: Any) -> tuple[list[Any], Queue[Any], list[Any]]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, "a"),
        on_next(211, "b"),
        on_next(212, "c"),
        on_next(213, "d"),
        on_next(214, "e"),
        on_completed(215),
    )
    drops: list[Any] = []
    q = queue(max_events=2, overflow=overflow, on_drop=drops.append, scheduler=scheduler)
    results = scheduler.start(lambda: xs.pipe(q, settle_after(scheduler, 10)))
    return results.messages, q, drops


def test_drop_oldest_keeps_the_newest() -> None:
    messages, q, drops = _bounded_run("drop_oldest")
    # a is in flight (not buffered); b, c fill the buffer; d and e push them out
    assert messages == [on_next(210, "a"), on_next(220, "d"), on_next(230, "e"), on_completed(240)]
    assert drops == ["b", "c"]
    assert q.dropped == 2
    assert q.pending == 0


def test_drop_newest_keeps_the_oldest() -> None:
    messages, q, drops = _bounded_run("drop_newest")
    assert messages == [on_next(210, "a"), on_next(220, "b"), on_next(230, "c"), on_completed(240)]
    assert drops == ["d", "e"]
    assert q.dropped == 2
    assert q.pending == 0


def test_overflow_error_raises_queue_full_to_the_writer() -> None:
    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    drops: list[Any] = []
    ingress: list[Any] = []
    q = queue(
        max_events=2,
        overflow="error",
        on_drop=drops.append,
        on_ingress=ingress.append,
        scheduler=scheduler,
    )
    seen: list[str] = []
    source.pipe(q, settle_after(scheduler, 10)).subscribe(seen.append)
    source.on_next("a")
    scheduler.advance_to(1)  # a is handed down and held until 11
    source.on_next("b")
    source.on_next("c")
    with pytest.raises(QueueFullError) as raised:
        source.on_next("d")
    assert raised.value.limit == 2
    assert "2 events" in str(raised.value)
    assert ingress == ["a", "b", "c"]  # d was refused, not accepted
    assert (q.dropped, drops) == (0, [])  # refused is not dropped
    assert q.pending == 3
    source.on_completed()
    scheduler.start()
    assert seen == ["a", "b", "c"]
    assert q.pending == 0


def test_bounds_count_events_and_an_oversized_block_is_dropped() -> None:
    scheduler = TestScheduler()
    source: Subject[tuple[str, ...]] = Subject()
    drops: list[Any] = []
    q = queue(max_events=3, overflow="drop_oldest", on_drop=drops.append, scheduler=scheduler)
    seen: list[tuple[str, ...]] = []
    source.pipe(q, settle_after(scheduler, 10)).subscribe(seen.append)
    source.on_next(("x",))
    scheduler.advance_to(1)  # x in flight
    source.on_next(("a", "b"))
    source.on_next(("c", "d"))  # 4 > 3 events: the oldest block goes
    source.on_next(("e", "f", "g", "h"))  # bigger than the bound on its own: dropped
    assert drops == [("a", "b"), ("e", "f", "g", "h")]
    assert q.dropped == 6
    source.on_completed()
    scheduler.start()
    assert seen == [("x",), ("c", "d")]
    assert q.pending == 0


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_max_events_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_events"):
        queue(max_events=bad)


def test_overflow_must_be_a_known_policy() -> None:
    with pytest.raises(ValueError, match="drop_oldest, drop_newest, error"):
        queue(overflow="block")  # type: ignore[arg-type]


# -- close semantics --------------------------------------------------------------------------


def test_lane_close_semantics() -> None:
    scheduler = TestScheduler()
    raw: RawSource[str] = RawSource()
    sink: HoldingSink[str] = HoldingSink(scheduler)
    raw.pipe(queue(scheduler=scheduler)).subscribe(sink)
    lane = raw.observer
    assert isinstance(lane, Lane)
    lane.on_next("before")
    check_close(lambda: lane.on_next("after"), lane.on_completed)
    scheduler.start()
    assert sink.delivered == ["before"]  # flushed before completion passed on
    assert sink.completed


def test_lane_completion_waits_for_the_item_in_flight() -> None:
    scheduler = TestScheduler()
    raw: RawSource[str] = RawSource()
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=7)
    raw.pipe(queue(scheduler=scheduler)).subscribe(sink)
    lane = raw.observer
    lane.on_next("a")
    scheduler.advance_to(1)  # the drain scheduled at 0 handed a down; it settles at 7
    lane.on_completed()
    assert not sink.completed
    scheduler.start()
    assert sink.received == [on_next(0, "a"), on_completed(7)]


# -- the reference catalogue ------------------------------------------------------------------


async def test_catalogue_queue_delayed_sink_flushes_on_close() -> None:
    """queue -> 1 ms delayed sink -> recording sink; 1000 writes from 100 threads."""
    subject = EventSubject()
    recorder: CollectingSink[Event] = CollectingSink()
    ingress: list[Event] = []

    async def delayed(event: Event) -> None:
        await asyncio.sleep(0.001)
        recorder.on_next(event)

    q = queue(on_ingress=ingress.append)
    subject.pipe(q).subscribe(CallbackSink(delayed))
    writers, each = 100, 10
    events = [[make_event(w * each + i) for i in range(each)] for w in range(writers)]

    def write(writer: int) -> None:
        for event in events[writer]:
            subject.on_next(event)

    await run_threads(writers, write)
    report = await subject.aclose(60)
    assert report.flushed
    delivered = ids(recorder.items)
    assert len(delivered) == writers * each
    assert len(ingress) == writers * each  # the registry's Events counter
    assert q.pending == 0 and q.in_flight == 0
    assert delivered == ids(ingress)  # one in flight at a time: delivered in accepted order
    position = {event_id: index for index, event_id in enumerate(delivered)}
    for block in events:  # each writer's events kept their order
        indexes = [position[event.id] for event in block]
        assert indexes == sorted(indexes)


async def test_queue_on_the_running_loop_by_default() -> None:
    seen: list[int] = []
    source: Subject[int] = Subject()
    source.pipe(queue()).subscribe(seen.append)
    source.on_next(1)
    assert seen == []  # the drain runs on the loop, not inside the write
    await asyncio.sleep(0)
    assert seen == [1]


def test_queue_is_usable_as_an_operator_object() -> None:
    q: Queue[int] = Queue(max_events=5)
    assert callable(q)
    assert isinstance(q(reactivex.empty()), Observable)
    assert (q.max_events, q.overflow, q.pending, q.dropped, q.in_flight) == (
        5,
        "drop_oldest",
        0,
        0,
        0,
    )


@pytest.mark.parametrize("hook", ["on_ingress", "on_egress", "on_failure", "on_drop"])
def test_a_raising_hook_is_logged_and_never_wedges_the_queue(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("hook bug")

    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    q = queue(max_events=1, overflow="drop_newest", scheduler=scheduler, **{hook: broken})
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=1, fails=[True])
    source.pipe(q).subscribe(sink)
    with caplog.at_level(logging.ERROR, logger="rxsinks.queue"):
        for item in "abc":
            source.on_next(item)  # the writer never sees the hook's error
            scheduler.advance_by(2)
        source.on_next("d")
        source.on_next("dropped")  # a full queue: on_drop is called
        source.on_completed()
        scheduler.start()
    assert [item for _, item in sink.attempts] == ["a", "b", "c", "d"]
    assert sink.completed
    assert (q.pending, q.in_flight) == (0, 0)
    assert any("raised; ignored" in record.getMessage() for record in caplog.records)


async def test_an_observer_raising_on_completion_does_not_hang_close() -> None:
    subject = EventSubject()
    seen: list[str] = []

    def broken_completion() -> None:
        raise RuntimeError("observer bug")

    subject.pipe(queue()).subscribe(lambda event: seen.append(event.id), None, broken_completion)
    subject.write(make_event(1), make_event(2))
    report = await subject.aclose(10)
    assert report.flushed  # the queue still counts as flushed
    assert seen == ["e1", "e2"]
