"""Tests of rxsinks._subject: writes from any thread, close that flushes, close reports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from reactivex import operators as ops
from reactivex.scheduler import ThreadPoolScheduler

from rxsinks._batch import batch
from rxsinks._deliver import deliver
from rxsinks._event import Event
from rxsinks._exceptions import SINK_CLOSED, SinkClosedError
from rxsinks._retry import retry_with_breaker
from rxsinks._sinks import CallbackSink, CollectingSink
from rxsinks._subject import CloseReport, EventSubject
from tests.fakes import ids, make_event, run_threads


def assert_writer_order(delivered: list[str], blocks: list[list[Event]]) -> None:
    """Every event arrived exactly once and each writer's events kept their order."""
    assert len(delivered) == len(set(delivered)) == sum(len(block) for block in blocks)
    position = {event_id: index for index, event_id in enumerate(delivered)}
    for block in blocks:
        indexes = [position[event.id] for event in block]
        assert indexes == sorted(indexes)


async def test_catalogue_broadcaster_ten_sinks_a_hundred_writers() -> None:
    subject = EventSubject()
    sinks: list[CollectingSink[Event]] = [CollectingSink() for _ in range(10)]
    for sink in sinks:
        subject.subscribe(sink)
    writers, block = 100, 10
    blocks = [[make_event(w * block + i) for i in range(block)] for w in range(writers)]
    await run_threads(writers, lambda w: subject.write(*blocks[w]))  # every write succeeds
    report = await subject.aclose(30)
    assert report == CloseReport(flushed=True)
    first = ids(sinks[0].items)
    for sink in sinks:
        assert len(sink.items) == writers * block
        assert sink.completed
        assert ids(sink.items) == first  # every sink saw the one order the subject accepted
    assert_writer_order(first, blocks)


async def test_eight_threads_at_once_nothing_lost_order_kept() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    through_queue: CollectingSink[Event] = CollectingSink()
    subject.subscribe(sink)
    subject.pipe(deliver(through_queue)).subscribe()
    threads, each = 8, 1500
    blocks = [[make_event(t * each + i) for i in range(each)] for t in range(threads)]

    def write(thread: int) -> None:
        for event in blocks[thread]:
            subject.on_next(event)

    await run_threads(threads, write)
    assert (await subject.aclose(30)).flushed
    assert_writer_order(ids(sink.items), blocks)
    assert ids(through_queue.items) == ids(sink.items)


async def test_writes_from_the_loop_dispatch_at_once() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    subject.subscribe(sink)
    event = make_event(1)
    subject.on_next(event)
    assert ids(sink.items) == ["e1"]  # on the loop's own thread: no hop through the loop
    await subject.aclose()


async def test_non_events_are_refused_with_a_type_error() -> None:
    subject = EventSubject()
    sink: CollectingSink[Any] = CollectingSink()
    subject.subscribe(sink)
    for bad in ({"action": "push"}, None, "push"):
        with pytest.raises(TypeError, match=r"Event\.from_dict"):
            subject.on_next(bad)  # type: ignore[arg-type]
    assert sink.items == []
    await subject.aclose()


async def test_close_semantics() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    subject.subscribe(sink)
    subject.on_next(make_event(1))
    assert not subject.closed
    assert (await subject.aclose()).flushed  # first close: ok
    assert subject.closed and sink.completed
    with pytest.raises(SinkClosedError) as raised:
        subject.on_next(make_event(2))
    assert raised.value is SINK_CLOSED
    with pytest.raises(SinkClosedError):
        subject.write(make_event(3))
    assert (await subject.aclose()).flushed  # second close: harmless
    subject.close()
    assert ids(sink.items) == ["e1"]


async def test_writes_from_other_threads_after_close_are_refused() -> None:
    subject = EventSubject()
    await subject.aclose()
    errors: list[BaseException] = []

    def write(_: int) -> None:
        try:
            subject.on_next(make_event(1))
        except SinkClosedError as exc:
            errors.append(exc)

    await run_threads(4, write)
    assert len(errors) == 4 and all(error is SINK_CLOSED for error in errors)


async def test_close_then_aclose_wait_for_the_same_flush() -> None:
    subject = EventSubject()
    gate = asyncio.Event()
    done: list[str] = []

    async def post(event: Event) -> None:
        await gate.wait()
        done.append(event.id)

    subject.pipe(deliver(post)).subscribe()
    subject.write(make_event(1), make_event(2))
    subject.close()  # does not wait
    assert done == []
    gate.set()
    assert (await subject.aclose(10)).flushed
    assert done == ["e1", "e2"]


async def test_aclose_reports_what_a_stuck_pipeline_still_holds() -> None:
    subject = EventSubject()
    gate = asyncio.Event()  # the sink never finishes until the test releases it
    delivered: list[str] = []

    async def stuck(event: Event) -> None:
        await gate.wait()
        delivered.append(event.id)

    subject.pipe(deliver(stuck)).subscribe()
    subject.write(*(make_event(i) for i in range(3)))
    report = await subject.aclose(0.05)
    # one in flight and two buffered in the delivery stage, which has not completed yet
    assert report == CloseReport(flushed=False, remaining=3, stages=1)
    gate.set()
    assert await subject.aclose(10) == CloseReport(flushed=True)
    assert delivered == ["e0", "e1", "e2"]


async def test_aclose_counts_the_running_deliveries_of_an_unqueued_sink() -> None:
    subject = EventSubject()
    gate = asyncio.Event()

    async def stuck(_: Event) -> None:
        await gate.wait()

    subject.subscribe(CallbackSink(stuck))  # no queue: deliveries run concurrently
    subject.write(make_event(1), make_event(2))
    report = await subject.aclose(0.05)
    assert (report.flushed, report.remaining, report.stages) == (False, 2, 1)
    gate.set()
    assert (await subject.aclose(10)).flushed


async def test_on_error_fails_every_pipeline_after_it_flushed() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    errors: list[Exception] = []
    subject.pipe(deliver(sink)).subscribe(on_error=errors.append)
    subject.on_next(make_event(1))
    boom = RuntimeError("producer failed")
    subject.on_error(boom)
    assert subject.closed
    with pytest.raises(SinkClosedError):
        subject.on_next(make_event(2))
    assert (await subject.aclose(10)).flushed
    assert ids(sink.items) == ["e1"]
    assert errors == [boom]  # after the delivery


async def test_on_completed_is_close() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    subject.subscribe(sink)
    subject.on_completed()
    assert subject.closed
    await asyncio.sleep(0)  # completion runs through the loop, behind earlier writes
    assert sink.completed


async def test_unsubscribing_removes_the_pipeline() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    subscription = subject.subscribe(sink)
    subject.on_next(make_event(1))
    subscription.dispose()
    subject.on_next(make_event(2))
    await subject.aclose()
    assert ids(sink.items) == ["e1"]


def test_without_any_event_loop_writes_are_synchronous() -> None:
    sink: CollectingSink[Event] = CollectingSink()
    subject = EventSubject(sink)
    subject.write(make_event(1), make_event(2))
    assert ids(sink.items) == ["e1", "e2"]
    subject.close()
    assert sink.completed
    with pytest.raises(SinkClosedError):
        subject.on_next(make_event(3))


@pytest.fixture
def loop_in_thread() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """An event loop running in a thread of its own (as in a sync app with a loop on the side)."""
    loop = asyncio.new_event_loop()
    running = threading.Event()
    loop.call_soon(running.set)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert running.wait(10)
    yield loop, thread
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_subject_bound_to_a_loop_in_another_thread_hands_writes_over(
    loop_in_thread: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    loop, thread = loop_in_thread
    subject = EventSubject(loop=loop)  # built here, while the loop runs in another thread
    seen_on: list[int | None] = []
    sink: CollectingSink[Event] = CollectingSink()
    subject.add(lambda _: seen_on.append(threading.get_ident()))
    subject.add(sink)
    events = [make_event(i) for i in range(50)]
    subject.write(*events)
    report = asyncio.run_coroutine_threadsafe(subject.aclose(10), loop).result(10)
    assert report.flushed
    assert set(seen_on) == {thread.ident}  # members ran on the loop's thread only
    assert ids(sink.items) == ids(events)
    assert sink.completed


async def test_a_subject_created_outside_the_loop_learns_it_from_its_subscribers() -> None:
    subject = await asyncio.to_thread(EventSubject)  # built where no loop runs
    seen_on: list[int] = []
    sink: CollectingSink[Event] = CollectingSink()
    subject.subscribe(lambda _: seen_on.append(threading.get_ident()))
    subject.subscribe(sink)
    events = [make_event(i) for i in range(20)]
    await run_threads(2, lambda w: subject.write(*events[w * 10 : (w + 1) * 10]))
    assert (await subject.aclose(10)).flushed
    assert set(seen_on) == {threading.get_ident()}  # members ran on the loop, not the writers
    assert sorted(ids(sink.items)) == sorted(ids(events))


@pytest.mark.parametrize("retrying", [False, True])
async def test_close_reports_count_events_not_blocks(retrying: bool) -> None:
    subject = EventSubject()
    gate = asyncio.Event()

    async def stuck(_: tuple[Event, ...]) -> None:
        await gate.wait()

    if retrying:  # the delivery stage holds the blocks: one in flight, one waiting
        subject.pipe(batch(5), deliver(stuck, retry=retry_with_breaker())).subscribe()
    else:  # the sink holds them: two deliveries running
        subject.pipe(batch(5)).subscribe(CallbackSink(stuck))
    subject.write(*(make_event(i) for i in range(10)))
    report = await subject.aclose(0.05)
    assert (report.flushed, report.remaining, report.stages) == (False, 10, 1)
    gate.set()
    assert (await subject.aclose(10)).flushed


def test_a_re_entrant_write_without_a_loop_neither_deadlocks_nor_reorders() -> None:
    subject = EventSubject()
    first: list[str] = []
    second: list[str] = []

    def echo(event: Event) -> None:
        first.append(event.id)
        if event.id == "e1":
            subject.on_next(make_event(2))  # from inside a member, no loop anywhere

    subject.subscribe(echo)
    subject.subscribe(lambda event: second.append(event.id))
    subject.on_next(make_event(1))
    assert first == ["e1", "e2"]
    assert second == ["e1", "e2"]  # never e2 before e1


async def test_a_re_entrant_write_on_the_loop_reaches_every_member_in_order() -> None:
    subject = EventSubject()
    first: list[str] = []
    second: list[str] = []

    def echo(event: Event) -> None:
        first.append(event.id)
        if event.id == "e1":
            subject.on_next(make_event(2))

    subject.subscribe(echo)
    subject.subscribe(lambda event: second.append(event.id))
    subject.on_next(make_event(1))
    assert (await subject.aclose(10)).flushed
    assert first == second == ["e1", "e2"]


async def test_write_after_close_raises_even_with_no_events() -> None:
    subject = EventSubject()
    await subject.aclose(1)
    with pytest.raises(SinkClosedError):
        subject.write()


async def test_the_same_observer_twice_is_two_subscriptions() -> None:
    subject = EventSubject()
    sink: CollectingSink[Event] = CollectingSink()
    first = subject.subscribe(sink)
    subject.subscribe(sink)
    subject.on_next(make_event(1))
    first.dispose()
    subject.on_next(make_event(2))
    assert ids(sink.items) == ["e1", "e1", "e2"]


async def test_aclose_waits_for_an_async_callback_sink_behind_observe_on() -> None:
    subject = EventSubject()
    delivered: list[str] = []

    async def post(event: Event) -> None:
        await asyncio.sleep(0.01)
        delivered.append(event.id)

    completions: list[str] = []
    subject.pipe(ops.observe_on(ThreadPoolScheduler(1))).subscribe(
        CallbackSink(post, on_completed=lambda: completions.append("done"))
    )
    subject.write(make_event(1), make_event(2), make_event(3))
    # the observer is handed the events on a pool thread, and runs them on the loop that
    # subscribed it: aclose waits for its last call, then for its drained signal
    report = await subject.aclose(10)
    assert report.flushed
    assert sorted(delivered) == ["e1", "e2", "e3"]
    assert completions == ["done"]
