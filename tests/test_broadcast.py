"""Tests of rxsinks._broadcast: fan-out with isolation, members added and removed at run time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from reactivex import abc
from reactivex.testing import ReactiveTest, TestScheduler

from rxsinks._broadcast import Broadcast, broadcast
from rxsinks._event import Event
from rxsinks._sinks import CallbackSink, CollectingSink
from rxsinks._subject import EventSubject
from tests.fakes import HoldingSink, Unreliable, check_close, ids, make_event

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


@pytest.mark.parametrize("queued", [False, True])
def test_a_raising_member_stops_nothing(queued: bool, caplog: pytest.LogCaptureFixture) -> None:
    log: list[tuple[str, Any]] = []
    bad = Raising()
    before, after = Logged("before", log), Logged("after", log)
    fan: Broadcast[str] = Broadcast(scheduler=TestScheduler())
    fan.add(before)
    fan.add(bad, queued=queued)
    fan.add(after)
    with caplog.at_level(logging.WARNING, logger="rxsinks.broadcast"):
        fan.on_next("a")  # the producer never sees the member's exception
        fan.on_next("b")
        scheduler = fan._scheduler
        assert isinstance(scheduler, TestScheduler)
        scheduler.start()  # drains the queued member's private lane
    assert log == [("before", "a"), ("after", "a"), ("before", "b"), ("after", "b")]
    assert bad.calls == 2
    assert bad in fan.members  # an ordinary error does not remove a member
    assert any(
        "member broke" in record.getMessage() or record.exc_info for record in caplog.records
    )


@pytest.mark.parametrize("queued", [False, True])
def test_a_member_answering_sink_closed_is_removed(queued: bool) -> None:
    scheduler = TestScheduler()
    closed: CollectingSink[str] = CollectingSink()
    closed.on_completed()  # now it answers SINK_CLOSED
    live: CollectingSink[str] = CollectingSink()
    fan: Broadcast[str] = Broadcast(scheduler=scheduler)
    fan.add(closed, queued=queued)
    fan.add(live)
    fan.on_next("a")
    scheduler.start()
    assert closed not in fan.members
    assert fan.members == (live,)
    fan.on_next("b")
    scheduler.start()
    assert live.items == ["a", "b"]


@pytest.mark.parametrize("queued", [False, True])
def test_adding_the_same_member_twice_is_a_no_op(queued: bool) -> None:
    scheduler = TestScheduler()
    sink: CollectingSink[str] = CollectingSink()
    fan: Broadcast[str] = Broadcast(scheduler=scheduler)
    fan.add(sink, queued=queued)
    fan.add(sink, queued=queued)
    fan.on_next("a")
    scheduler.start()
    assert fan.members == (sink,)
    assert sink.items == ["a"]


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


def test_a_removed_queued_member_still_gets_what_it_had_buffered() -> None:
    scheduler = TestScheduler()
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=5)
    fan: Broadcast[str] = Broadcast(scheduler=scheduler)
    fan.add(sink, queued=True)
    fan.on_next("a")
    fan.on_next("b")
    fan.remove(sink)
    fan.on_next("c")
    scheduler.start()
    assert sink.delivered == ["a", "b"]


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


def test_members_flush_before_completion_and_errors_reach_them() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("source failed")
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"), on_error(212, boom))
    slow: HoldingSink[str] = HoldingSink(scheduler, ticks=10)
    fast: HoldingSink[str] = HoldingSink(scheduler)
    fan: Broadcast[str] = Broadcast(scheduler=scheduler)
    fan.add(slow, queued=True)
    fan.add(fast)
    scheduler.schedule_absolute(200, lambda *_: xs.subscribe(fan))
    scheduler.start()
    # the slow member has a private queue: it never delays the fast one
    assert fast.received == [on_next(210, "a"), on_next(211, "b"), on_error(212, boom)]
    assert slow.received == [on_next(210, "a"), on_next(220, "b"), on_error(230, boom)]


def test_broadcast_operator_connects_on_first_subscription() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(220, "b"), on_completed(230))
    member: HoldingSink[str] = HoldingSink(scheduler)
    fan = xs.pipe(broadcast(member, scheduler=scheduler))
    assert isinstance(fan, Broadcast)
    results = scheduler.start(lambda: fan)
    assert results.messages == [on_next(210, "a"), on_next(220, "b"), on_completed(230)]
    assert member.received == results.messages
    assert fan.connect() is fan.connect()  # idempotent


def test_connect_without_a_source_is_harmless() -> None:
    fan: Broadcast[str] = Broadcast()
    fan.connect().dispose()
    fan.on_next("a")  # no members: nothing happens
    assert fan.members == ()


# -- isolation on a real loop -----------------------------------------------------------------


@pytest.mark.parametrize("queued", [False, True])
async def test_slow_and_raising_members_never_hold_back_the_producer_or_a_fast_member(
    queued: bool,
) -> None:
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
    subject.add(CallbackSink(slow), queued=queued)
    subject.add(lambda event: order.append(("fast", event.id)))
    subject.add(fast)
    events = [make_event(i) for i in range(count)]
    subject.write(*events)  # returns although the slow member has not finished anything
    assert not [entry for entry in order if entry[0] == "slow"]
    await fast.wait_for(count, timeout=10)  # the fast member got everything meanwhile
    assert ids(fast.items) == ids(events)
    assert not [entry for entry in order if entry[0] == "slow"]
    gate.set()
    report = await subject.aclose(30)
    assert report.flushed  # close waits for the slow member to finish
    fast_done = [event_id for who, event_id in order if who == "fast"]
    slow_done = [event_id for who, event_id in order if who == "slow"]
    assert fast_done == ids(events)
    assert sorted(slow_done) == sorted(ids(events))
    if queued:
        assert slow_done == ids(events)  # one at a time through its private queue
    first_slow = order.index(("slow", slow_done[0]))
    assert all(who == "fast" for who, _ in order[:first_slow])
    assert first_slow == count
