"""Tests of rxsinks._broadcast: fan-out with isolation, members added and removed at run time,
re-entrant writes, one disposable per subscription, and knowing when members finished."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from reactivex import abc
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from rxsinks._broadcast import Broadcast, broadcast
from rxsinks._event import Event
from rxsinks._sinks import CallbackSink, CollectingSink
from rxsinks._subject import EventSubject
from tests.fakes import Unreliable, check_close, ids, make_event

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error


class Logged(abc.ObserverBase[Any]):
    """A member that appends ``(name, item)`` to a shared log."""

    def __init__(self, name: str, log: list[tuple[str, Any]]) -> None:
        self.name = name
        self.log = log
        self.completed = False
        self.error: Exception | None = None

    def on_next(self, value: Any) -> None:
        self.log.append((self.name, value))

    def on_error(self, error: Exception) -> None:
        self.error = error

    def on_completed(self) -> None:
        self.completed = True


class Raising(abc.ObserverBase[Any]):
    """A member that raises on every item."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or Unreliable("member broke")
        self.calls = 0

    def on_next(self, value: Any) -> None:
        self.calls += 1
        raise self.error

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass


def test_every_member_gets_every_item_in_the_order_members_were_added() -> None:
    log: list[tuple[str, Any]] = []
    first, second = Logged("first", log), Logged("second", log)
    fan: Broadcast[str] = Broadcast(first, second)
    fan.on_next("a")
    fan.on_next("b")
    assert log == [("first", "a"), ("second", "a"), ("first", "b"), ("second", "b")]
    assert fan.members == (first, second)


def test_a_raising_member_stops_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log: list[tuple[str, Any]] = []
    bad = Raising()
    before, after = Logged("before", log), Logged("after", log)
    fan: Broadcast[str] = Broadcast(before, bad, after)
    with caplog.at_level(logging.WARNING, logger="rxsinks.broadcast"):
        fan.on_next("a")  # the producer never sees the member's exception
        fan.on_next("b")
    assert log == [("before", "a"), ("after", "a"), ("before", "b"), ("after", "b")]
    assert bad.calls == 2
    assert bad in fan.members  # an ordinary error does not remove a member
    assert any(record.exc_info for record in caplog.records)


def test_a_member_answering_sink_closed_is_removed() -> None:
    closed: CollectingSink[str] = CollectingSink()
    closed.on_completed()  # now it answers SINK_CLOSED
    live: CollectingSink[str] = CollectingSink()
    fan: Broadcast[str] = Broadcast(closed, live)
    fan.on_next("a")
    assert fan.members == (live,)
    fan.on_next("b")
    assert live.items == ["a", "b"]


def test_adding_the_same_member_twice_is_a_no_op() -> None:
    # go-events' broadcaster: add() is idempotent
    sink: CollectingSink[str] = CollectingSink()
    fan: Broadcast[str] = Broadcast()
    fan.add(sink)
    fan.add(sink)
    fan.on_next("a")
    assert fan.members == (sink,)
    assert sink.items == ["a"]


def test_each_subscribe_is_a_subscription_of_its_own() -> None:
    # Rx: the same observer subscribed twice gets every item twice, and disposing the first
    # subscription leaves the second
    sink: CollectingSink[str] = CollectingSink()
    fan: Broadcast[str] = Broadcast()
    first = fan.subscribe(sink)
    fan.subscribe(sink)
    fan.on_next("a")
    first.dispose()
    fan.on_next("b")
    assert sink.items == ["a", "a", "b"]


def test_duck_typed_observers_are_observers() -> None:
    class Duck:
        def __init__(self) -> None:
            self.seen: list[str] = []
            self.done = False

        def on_next(self, value: str) -> None:
            self.seen.append(value)

        def on_error(self, error: Exception) -> None:
            raise AssertionError(error)

        def on_completed(self) -> None:
            self.done = True

    duck = Duck()
    fan: Broadcast[str] = Broadcast()
    fan.subscribe(duck)  # type: ignore[arg-type]
    fan.on_next("a")
    fan.on_completed()
    assert duck.seen == ["a"] and duck.done


def test_members_are_removed_at_run_time() -> None:
    log: list[tuple[str, Any]] = []
    first, second, third = Logged("1", log), Logged("2", log), Logged("3", log)
    fan: Broadcast[str] = Broadcast(first, second)
    detach = fan.add(third)
    fan.on_next("a")
    assert fan.remove(second) is True
    assert fan.remove(second) is False  # already gone
    detach.dispose()  # what add() returned removes the member too
    fan.on_next("b")
    assert log == [("1", "a"), ("2", "a"), ("3", "a"), ("1", "b")]
    assert fan.members == (first,)
    fan.on_completed()
    assert first.completed and not second.completed  # a removed member is left alone


def test_a_re_entrant_write_reaches_every_member_after_the_current_item() -> None:
    log: list[tuple[str, Any]] = []
    fan: Broadcast[str] = Broadcast()

    class Echo(abc.ObserverBase[str]):
        def on_next(self, value: str) -> None:
            log.append(("echo", value))
            if value == "a":
                fan.on_next("b")  # written while "a" is being handed out

        def on_error(self, error: Exception) -> None:
            pass

        def on_completed(self) -> None:
            pass

    fan.add(Echo())
    fan.add(Logged("second", log))
    fan.on_next("a")
    # every member sees a, then b: never b before a
    assert log == [("echo", "a"), ("second", "a"), ("echo", "b"), ("second", "b")]


def test_completion_written_during_an_item_comes_after_it() -> None:
    log: list[tuple[str, Any]] = []
    fan: Broadcast[str] = Broadcast()
    closer = Logged("closer", log)
    closer.on_next = lambda value: (log.append(("closer", value)), fan.on_completed())  # type: ignore[method-assign]
    second = Logged("second", log)
    fan.add(closer)
    fan.add(second)
    fan.on_next("a")
    assert log == [("closer", "a"), ("second", "a")]
    assert second.completed


def test_callables_are_members_and_anything_else_is_refused() -> None:
    seen: list[str] = []
    fan: Broadcast[str] = Broadcast(seen.append)
    fan.on_next("a")
    assert seen == ["a"]
    with pytest.raises(TypeError, match="observer or callable"):
        fan.add(42)  # type: ignore[arg-type]


def test_close_semantics_and_completion_of_every_member() -> None:
    log: list[tuple[str, Any]] = []
    first, second = Logged("1", log), Logged("2", log)
    fan: Broadcast[str] = Broadcast(first, second)
    check_close(lambda: fan.on_next("late"), fan.on_completed)
    assert first.completed and second.completed
    assert fan.is_stopped
    assert log == []
    late = Logged("late", log)
    fan.add(late)  # a member added after completion is completed at once
    assert late.completed


def test_errors_reach_every_member() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("source failed")
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_error(212, boom))
    log: list[tuple[str, Any]] = []
    one, two = Logged("1", log), Logged("2", log)
    fan: Broadcast[str] = Broadcast(one, two)
    scheduler.schedule_absolute(200, lambda *_: xs.subscribe(fan))
    scheduler.start()
    assert log == [("1", "a"), ("2", "a")]
    assert one.error is boom and two.error is boom


def test_broadcast_operator_connects_on_first_subscription() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(220, "b"), on_completed(230))
    member: CollectingSink[str] = CollectingSink()
    fan = xs.pipe(broadcast(member))
    assert isinstance(fan, Broadcast)
    results = scheduler.start(lambda: fan)
    assert results.messages == [on_next(210, "a"), on_next(220, "b"), on_completed(230)]
    assert member.items == ["a", "b"] and member.completed
    assert fan.connect() is fan.connect()  # idempotent


def test_connect_without_a_source_is_harmless() -> None:
    fan: Broadcast[str] = Broadcast()
    fan.connect().dispose()
    fan.on_next("a")  # no members: nothing happens
    assert fan.members == ()


def test_when_finished_waits_for_the_end_of_every_pipeline() -> None:
    scheduler = TestScheduler()
    fan: Broadcast[str] = Broadcast()
    finished: list[float] = []
    fan.pipe(ops.delay(5, scheduler=scheduler)).subscribe()
    fan.subscribe(lambda _: None)
    fan.on_next("a")
    fan.on_completed()
    fan.when_finished(lambda: finished.append(scheduler.clock))
    assert finished == []  # the delayed pipeline has not completed yet
    assert fan.unfinished == 1
    scheduler.start()
    assert finished == [5]


def test_a_disposed_pipeline_counts_as_finished() -> None:
    fan: Broadcast[str] = Broadcast()
    subscription = fan.pipe(ops.map(str.upper)).subscribe()
    finished: list[bool] = []
    fan.on_completed()  # (a map passes completion on at once: finished already)
    fan.when_finished(lambda: finished.append(True))
    assert finished == [True]
    other: Broadcast[str] = Broadcast()
    held = other.pipe(ops.delay(100)).subscribe()
    other.on_completed()
    other.when_finished(lambda: finished.append(False))
    held.dispose()
    assert finished == [True, False]
    subscription.dispose()


# -- isolation on a real loop -----------------------------------------------------------------


async def test_slow_and_raising_members_never_hold_back_the_producer_or_a_fast_member() -> None:
    count = 200
    order: list[tuple[str, str]] = []  # completions, in the order they happened
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        await gate.wait()
        await asyncio.sleep(0.001)
        order.append(("slow", event.id))

    fast: CollectingSink[Event] = CollectingSink()
    subject = EventSubject()
    subject.add(Raising())
    subject.add(CallbackSink(slow))
    subject.add(lambda event: order.append(("fast", event.id)))
    subject.add(fast)
    events = [make_event(i) for i in range(count)]
    subject.write(*events)  # returns although the slow member has not finished anything
    assert not [entry for entry in order if entry[0] == "slow"]
    await fast.wait_for(count, timeout=10)  # the fast member got everything meanwhile
    assert ids(fast.items) == ids(events)
    gate.set()
    report = await subject.aclose(30)
    assert report.flushed  # close waits for the slow member to finish (its drained)
    fast_done = [event_id for who, event_id in order if who == "fast"]
    slow_done = [event_id for who, event_id in order if who == "slow"]
    assert fast_done == ids(events)
    assert sorted(slow_done) == sorted(ids(events))
    first_slow = order.index(("slow", slow_done[0]))
    assert first_slow == count
