"""Tests of rxsinks._batch: blocks by count, by time or both, never empty, nothing lost."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from rxsinks._batch import batch
from rxsinks._deliver import deliver
from rxsinks._event import Event
from rxsinks._sinks import CollectingSink
from rxsinks._subject import EventSubject
from tests.fakes import ScriptedSink, ids, make_event

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error


def run(op: Any, *messages: Any, scheduler: TestScheduler | None = None) -> list[Any]:
    scheduler = scheduler or TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    return scheduler.start(lambda: xs.pipe(op(scheduler))).messages


def test_by_count() -> None:
    got = run(
        lambda _: batch(3),
        on_next(210, "a"),
        on_next(211, "b"),
        on_next(212, "c"),
        on_next(213, "d"),
        on_completed(250),
    )
    assert got == [on_next(212, ("a", "b", "c")), on_next(250, ("d",)), on_completed(250)]


def test_by_time() -> None:
    got = run(
        lambda s: batch(10, 5, scheduler=s),
        on_next(210, "a"),
        on_next(212, "b"),
        on_next(220, "c"),
        on_completed(300),
    )
    assert got == [on_next(215, ("a", "b")), on_next(225, ("c",)), on_completed(300)]


def test_by_count_or_time_whichever_first() -> None:
    # the docstring's marble, max_events=2 and max_delay=4 ticks
    got = run(
        lambda s: batch(2, 4, scheduler=s),
        on_next(210, "a"),
        on_next(212, "b"),
        on_next(215, "c"),
        on_next(230, "d"),
        on_next(231, "e"),
        on_next(233, "f"),
        on_completed(235),
    )
    assert got == [
        on_next(212, ("a", "b")),
        on_next(219, ("c",)),
        on_next(231, ("d", "e")),
        on_next(235, ("f",)),
        on_completed(235),
    ]


def test_the_timer_of_a_block_flushed_by_count_does_not_cut_the_next_block_short() -> None:
    got = run(
        lambda s: batch(2, 10, scheduler=s),
        on_next(210, "a"),
        on_next(211, "b"),  # full: flushed at 211; a's timer (due 220) must not fire for c
        on_next(215, "c"),
        on_completed(300),
    )
    assert got == [on_next(211, ("a", "b")), on_next(225, ("c",)), on_completed(300)]


def test_never_emits_an_empty_block_when_idle() -> None:
    # unlike buffer_with_time_or_count (trap 6): long idle stretches emit nothing
    got = run(lambda s: batch(5, 10, scheduler=s), on_next(210, "a"), on_completed(400))
    assert got == [on_next(220, ("a",)), on_completed(400)]
    assert run(lambda s: batch(5, 10, scheduler=s), on_completed(400)) == [on_completed(400)]


def test_partial_block_is_flushed_before_an_error() -> None:
    boom = RuntimeError("upstream")
    got = run(
        lambda s: batch(5, 100, scheduler=s),
        on_next(210, "a"),
        on_next(211, "b"),
        on_error(215, boom),
    )
    assert got == [on_next(215, ("a", "b")), on_error(215, boom)]


def test_partial_block_is_flushed_on_completion_without_a_delay() -> None:
    got = run(lambda _: batch(4), on_next(210, 1), on_next(220, 2), on_completed(230))
    assert got == [on_next(230, (1, 2)), on_completed(230)]


def test_zero_delay_groups_only_what_arrives_together() -> None:
    # max_delay=0: a partial block waits no time at all (it does not wait forever)
    got = run(
        lambda s: batch(3, 0, scheduler=s),
        on_next(210, "a"),
        on_next(210, "b"),
        on_next(220, "c"),
        on_completed(300),
    )
    assert got == [on_next(210, ("a", "b")), on_next(220, ("c",)), on_completed(300)]


def test_one_event_per_block_by_default() -> None:
    got = run(lambda _: batch(), on_next(210, "a"), on_next(211, "b"), on_completed(212))
    assert got == [on_next(210, ("a",)), on_next(211, ("b",)), on_completed(212)]


def test_blocks_wait_in_the_delivery_stage_while_the_sink_is_busy() -> None:
    # batch(2) -> deliver(a sink taking 5 ticks): blocks form as events arrive, and the stage
    # hands them to the sink one at a time
    scheduler = TestScheduler()
    sink: ScriptedSink[tuple[str, ...]] = ScriptedSink(scheduler, ticks=5)
    xs = scheduler.create_hot_observable(
        on_next(210, "a"), on_next(211, "b"), on_next(212, "c"), on_next(213, "d")
    )
    scheduler.start(lambda: xs.pipe(batch(2), deliver(sink, scheduler=scheduler)))
    assert sink.attempts == [(211, ("a", "b")), (216, ("c", "d"))]


def test_outside_a_loop_the_timer_never_blocks_the_producer() -> None:
    # no loop, no scheduler given: the timer runs on rxsinks' scheduler thread, so on_next
    # returns before the block is due, and the block arrives later from that thread
    source: Subject[str] = Subject()
    arrived: list[tuple[tuple[str, ...], str]] = []
    done = threading.Event()

    def record(block: tuple[str, ...]) -> None:
        arrived.append((block, threading.current_thread().name))
        done.set()

    source.pipe(batch(10, 0.3)).subscribe(record)
    source.on_next("a")
    assert arrived == []  # on_next did not wait 0.3 s for the timer
    assert done.wait(10)
    assert arrived == [(("a",), "rxsinks-scheduler")]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_max_events_must_be_an_int_of_at_least_one(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_events"):
        batch(bad)


@pytest.mark.parametrize("bad", [-0.1, True, "1"])
def test_max_delay_must_be_seconds(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_delay"):
        batch(2, bad)


async def test_batches_on_the_running_loop_flush_on_close() -> None:
    subject = EventSubject()
    sink: CollectingSink[tuple[Event, ...]] = CollectingSink()
    subject.pipe(batch(3, 0.01), deliver(sink)).subscribe()
    events = [make_event(i) for i in range(10)]
    subject.write(*events)
    report = await subject.aclose(10)
    assert report.flushed
    assert [len(block) for block in sink.items] == [3, 3, 3, 1]
    assert ids(sink.items) == ids(events)
