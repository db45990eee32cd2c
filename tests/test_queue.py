"""Tests of rxsinks.queue: a delivery stage's buffer, its bound, overflow policies, hooks and
counters. The stage is driven in virtual time (ticks are seconds)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from rxsinks import (
    Event,
    EventSubject,
    Outcome,
    OutcomeKind,
    Queue,
    QueueFullError,
    deliver,
    queue,
)
from rxsinks._queue import weight_of
from tests.fakes import ScriptedSink, ids, make_event, run_threads


def bounded_run(
    overflow: str, items: list[Any], *, max_events: int = 2, ticks: int = 10
) -> tuple[ScriptedSink[Any], Queue[Any], list[Any], list[Outcome]]:
    """Write ``items`` at once into ``deliver(sink taking `ticks`, queue(bound))``; the first
    one goes in flight before the rest arrive."""
    scheduler = TestScheduler()
    source: Subject[Any] = Subject()
    drops: list[Any] = []
    bounded = queue(max_events=max_events, overflow=overflow, on_drop=drops.append)  # type: ignore[arg-type]
    sink: ScriptedSink[Any] = ScriptedSink(scheduler, ticks=ticks)
    outcomes: list[Outcome] = []
    source.pipe(deliver(sink, queue=bounded, scheduler=scheduler)).subscribe(outcomes.append)
    source.on_next(items[0])
    scheduler.advance_to(1)  # the first item is in flight: not buffered any more
    for item in items[1:]:
        source.on_next(item)
    source.on_completed()
    scheduler.start()
    return sink, bounded, drops, outcomes


def test_unbounded_by_default_like_the_registry() -> None:
    q = queue()
    assert q.max_events is None and q.overflow == "drop_oldest"
    assert repr(q) == "queue(unbounded, overflow='drop_oldest')"


def test_drop_oldest_keeps_the_newest() -> None:
    sink, q, drops, outcomes = bounded_run("drop_oldest", list("abcde"))
    # a is in flight (not buffered); b, c fill the buffer; d and e push them out
    assert sink.delivered == ["a", "d", "e"]
    assert drops == ["b", "c"]
    assert [o.events for o in outcomes if o.kind is OutcomeKind.DROPPED] == [("b",), ("c",)]
    assert q.dropped == 2 and q.pending == 0


def test_drop_newest_keeps_the_oldest() -> None:
    sink, q, drops, _ = bounded_run("drop_newest", list("abcde"))
    assert sink.delivered == ["a", "b", "c"]
    assert drops == ["d", "e"]
    assert q.dropped == 2 and q.pending == 0


def test_overflow_error_raises_queue_full_to_the_writer() -> None:
    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    drops: list[Any] = []
    ingress: list[Any] = []
    q = queue(max_events=2, overflow="error", on_drop=drops.append, on_ingress=ingress.append)
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=10)
    source.pipe(deliver(sink, queue=q, scheduler=scheduler)).subscribe()
    source.on_next("a")
    scheduler.advance_to(1)  # a is in flight until 11
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
    assert sink.delivered == ["a", "b", "c"]
    assert q.pending == 0


def test_bounds_count_events_and_an_oversized_block_is_dropped() -> None:
    sink, q, drops, _ = bounded_run(
        "drop_oldest", [("x",), ("a", "b"), ("c", "d"), ("e", "f", "g", "h")], max_events=3
    )
    # (c, d) pushed (a, b) out: 4 > 3 events; (e, f, g, h) is bigger than the bound alone
    assert drops == [("a", "b"), ("e", "f", "g", "h")]
    assert q.dropped == 6
    assert sink.delivered == [("x",), ("c", "d")]
    assert q.pending == 0


def test_a_keyed_buffer_drops_the_oldest_across_keys() -> None:
    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    bounded = queue(max_events=2)
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=10)
    source.pipe(
        deliver(sink, queue=bounded, concurrency=2, key=lambda item: item[0], scheduler=scheduler)
    ).subscribe()
    for item in ("a1", "b1"):  # both in flight
        source.on_next(item)
    scheduler.advance_to(1)
    for item in ("a2", "b2", "a3"):  # a2 is the oldest buffered when a3 arrives
        source.on_next(item)
    source.on_completed()
    scheduler.start()
    assert bounded.dropped == 1
    assert sorted(sink.delivered) == ["a1", "a3", "b1", "b2"]


def test_ingress_egress_and_pending_follow_the_deliveries() -> None:
    scheduler = TestScheduler()
    source: Subject[tuple[str, ...]] = Subject()
    ingress: list[Any] = []
    egress: list[Any] = []
    q = queue(on_ingress=ingress.append, on_egress=egress.append)
    sink: ScriptedSink[tuple[str, ...]] = ScriptedSink(scheduler, ticks=5, fails=[True])
    source.pipe(deliver(sink, queue=q, scheduler=scheduler)).subscribe()
    source.on_next(("a", "b"))
    source.on_next(("c",))
    assert q.pending == 3 and ingress == [("a", "b"), ("c",)]
    scheduler.advance_to(5)  # a, b failed (no retry: given up), c in flight
    assert egress == [("a", "b")]
    assert q.pending == 1 and q.in_flight == 1
    scheduler.start()
    assert egress == [("a", "b"), ("c",)]
    assert q.pending == 0 and q.in_flight == 0


def test_weight_of_counts_blocks_by_length() -> None:
    assert weight_of(("a", "b")) == 2
    assert weight_of(["a"]) == 1
    assert weight_of("abc") == 1  # an item is one event, even a str
    assert weight_of(make_event(1)) == 1


def test_a_custom_weight() -> None:
    scheduler = TestScheduler()
    source: Subject[int] = Subject()
    q = queue(max_events=10, overflow="drop_newest", weigh=lambda n: n)
    source.pipe(deliver(lambda _: None, queue=q, scheduler=scheduler)).subscribe()
    for size in (4, 4, 4):
        source.on_next(size)
    assert q.pending == 8 and q.dropped == 4


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_max_events_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_events"):
        queue(max_events=bad)


def test_overflow_must_be_a_known_policy() -> None:
    with pytest.raises(ValueError, match="drop_oldest, drop_newest, error"):
        queue(overflow="block")  # type: ignore[arg-type]


def test_a_queue_is_not_an_operator_of_its_own() -> None:
    with pytest.raises(TypeError, match=r"deliver\(sink, queue=queue\(\.\.\.\)\)"):
        Subject().pipe(queue())


@pytest.mark.parametrize("hook", ["on_ingress", "on_egress", "on_drop"])
def test_a_raising_hook_is_logged_and_never_wedges_the_stage(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("hook bug")

    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    q = queue(max_events=1, overflow="drop_newest", **{hook: broken})
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=1, fails=[True])
    completed: list[bool] = []
    source.pipe(deliver(sink, queue=q, scheduler=scheduler)).subscribe(
        on_completed=lambda: completed.append(True)
    )
    with caplog.at_level(logging.ERROR, logger="rxsinks.queue"):
        for item in "abc":
            source.on_next(item)  # the writer never sees the hook's error
            scheduler.advance_by(2)
        source.on_next("d")
        source.on_next("dropped")  # a full buffer: on_drop is called
        source.on_completed()
        scheduler.start()
    assert [item for _, item in sink.attempts] == ["a", "b", "c", "d"]
    assert completed == [True]
    assert (q.pending, q.in_flight) == (0, 0)
    assert any("raised; ignored" in record.getMessage() for record in caplog.records)


def test_one_queue_serves_several_stages_and_counts_over_them() -> None:
    scheduler = TestScheduler()
    shared = queue()
    source: Subject[str] = Subject()
    slow: ScriptedSink[str] = ScriptedSink(scheduler, ticks=10)
    source.pipe(deliver(slow, queue=shared, scheduler=scheduler)).subscribe()
    source.pipe(deliver(slow, queue=shared, scheduler=scheduler)).subscribe()
    source.on_next("a")
    source.on_next("b")
    assert shared.pending == 4
    scheduler.start()
    assert shared.pending == 0


# -- the reference catalogue ------------------------------------------------------------------


async def test_catalogue_queue_delayed_sink_flushes_on_close() -> None:
    """queue -> 1 ms delayed sink -> recording sink; 1000 writes from 100 threads."""
    subject = EventSubject()
    delivered: list[Event] = []
    ingress: list[Event] = []

    async def delayed(event: Event) -> None:
        await asyncio.sleep(0.001)
        delivered.append(event)

    q = queue(on_ingress=ingress.append)
    subject.pipe(deliver(delayed, queue=q)).subscribe()
    writers, each = 100, 10
    events = [[make_event(w * each + i) for i in range(each)] for w in range(writers)]

    def write(writer: int) -> None:
        for event in events[writer]:
            subject.on_next(event)

    await run_threads(writers, write)
    report = await subject.aclose(60)
    assert report.flushed
    assert len(delivered) == writers * each
    assert len(ingress) == writers * each  # the registry's Events counter
    assert q.pending == 0 and q.in_flight == 0
    assert ids(delivered) == ids(ingress)  # one in flight at a time: in accepted order
    position = {event.id: index for index, event in enumerate(delivered)}
    for block in events:  # each writer's events kept their order
        indexes = [position[event.id] for event in block]
        assert indexes == sorted(indexes)


async def test_the_stage_drains_on_the_running_loop_by_default() -> None:
    seen: list[int] = []
    source: Subject[int] = Subject()
    source.pipe(deliver(seen.append)).subscribe()
    source.on_next(1)
    assert seen == []  # the drain runs on the loop, not inside the write
    await asyncio.sleep(0)
    assert seen == [1]


async def test_an_observer_raising_on_completion_does_not_hang_close() -> None:
    subject = EventSubject()
    seen: list[str] = []

    def broken_completion() -> None:
        raise RuntimeError("observer bug")

    subject.pipe(deliver(lambda event: seen.append(event.id))).subscribe(
        None, None, broken_completion
    )
    subject.write(make_event(1), make_event(2))
    report = await subject.aclose(10)
    assert report.flushed
    assert seen == ["e1", "e2"]
