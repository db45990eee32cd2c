"""Tests of rxsinks._flow: handoffs offered by ``emit`` and taken by ``hold``, and flush groups."""

from __future__ import annotations

from typing import Any

import pytest
import reactivex.operators as ops
from reactivex import abc
from reactivex.subject import Subject

from rxsinks._flow import (
    FlushGroup,
    Handoff,
    direct_on_next,
    emit,
    flush_scope,
    hold,
    isolated,
    join_flush,
)


class Recorder:
    """An ``on_settled`` callback that records its calls and whether it was called re-entrantly."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self.inside = False
        self.reentrant = False

    def __call__(self, error: BaseException | None) -> None:
        self.reentrant = self.reentrant or self.inside
        self.calls.append(error)


class Observer:
    """A plain observer whose ``on_next`` runs ``action`` while the recorder marks 'inside'."""

    def __init__(self, recorder: Recorder, action: Any = None) -> None:
        self.recorder = recorder
        self.action = action
        self.handoffs: list[Handoff | None] = []

    def on_next(self, value: Any) -> None:
        self.recorder.inside = True
        try:
            if self.action is not None:
                self.action(self, value)
        finally:
            self.recorder.inside = False


def test_nobody_holds_settles_after_on_next_returns() -> None:
    recorder = Recorder()
    emit(Observer(recorder), "a", recorder)
    assert recorder.calls == [None]
    assert not recorder.reentrant


def test_a_raising_observer_is_a_failed_attempt_not_an_exception() -> None:
    recorder = Recorder()
    boom = RuntimeError("boom")

    def fail(_: Observer, __: Any) -> None:
        raise boom

    emit(Observer(recorder, fail), "a", recorder)  # must not raise
    assert recorder.calls == [boom]


def test_a_holder_settles_later_exactly_once() -> None:
    recorder = Recorder()

    def take(observer: Observer, _: Any) -> None:
        observer.handoffs.append(hold())

    observer = Observer(recorder, take)
    emit(observer, "a", recorder)
    handoff = observer.handoffs[0]
    assert handoff is not None
    assert recorder.calls == []  # held: not settled when on_next returned
    assert not handoff.settled
    error = ValueError("late")
    handoff.settle(error)
    handoff.settle(None)  # settling twice is harmless: only the first counts
    assert handoff.settled
    assert recorder.calls == [error]


def test_a_holder_settling_inside_on_next_is_reported_after_it_returns() -> None:
    recorder = Recorder()

    def take_and_settle(_: Observer, __: Any) -> None:
        handoff = hold()
        assert handoff is not None
        handoff.settle(None)

    emit(Observer(recorder, take_and_settle), "a", recorder)
    assert recorder.calls == [None]
    assert not recorder.reentrant  # emitters never see re-entrant settles


def test_held_then_raised_settles_with_the_error() -> None:
    recorder = Recorder()
    boom = RuntimeError("after hold")

    def take_then_raise(observer: Observer, _: Any) -> None:
        observer.handoffs.append(hold())
        raise boom

    observer = Observer(recorder, take_then_raise)
    emit(observer, "a", recorder)
    assert recorder.calls == [boom]
    handoff = observer.handoffs[0]
    assert handoff is not None
    handoff.settle(None)  # the holder's own late settle no longer counts
    assert recorder.calls == [boom]


def test_hold_outside_emit_returns_none_and_only_the_first_holder_wins() -> None:
    assert hold() is None
    recorder = Recorder()
    taken: list[Handoff | None] = []

    def take_twice(_: Observer, __: Any) -> None:
        taken.append(hold())
        taken.append(hold())

    emit(Observer(recorder, take_twice), "a", recorder)
    assert taken[0] is not None
    assert taken[1] is None
    assert hold() is None  # the offer does not outlive the on_next call


def test_isolated_hides_the_offer() -> None:
    recorder = Recorder()
    taken: list[Handoff | None] = []

    def take_isolated(_: Observer, __: Any) -> None:
        with isolated():
            taken.append(hold())
        taken.append(hold())  # the offer is current again after the block

    emit(Observer(recorder, take_isolated), "a", recorder)
    assert taken[0] is None
    assert taken[1] is not None


def test_nested_emits_have_their_own_offers() -> None:
    outer_recorder, inner_recorder = Recorder(), Recorder()
    taken: dict[str, Handoff | None] = {}

    def inner_take(_: Observer, __: Any) -> None:
        taken["inner"] = hold()

    def outer_take(_: Observer, value: Any) -> None:
        taken["outer"] = hold()
        emit(Observer(inner_recorder, inner_take), value, inner_recorder)
        # after the nested emit, the outer offer is current again (and already held)
        taken["outer_again"] = hold()

    emit(Observer(outer_recorder, outer_take), "a", outer_recorder)
    outer, inner = taken["outer"], taken["inner"]
    assert outer is not None and inner is not None and outer is not inner
    assert taken["outer_again"] is None
    inner.settle(None)
    assert inner_recorder.calls == [None]
    assert outer_recorder.calls == []  # settling the inner handoff does not settle the outer
    outer.settle(None)
    assert outer_recorder.calls == [None]


def test_plain_reactivex_operators_are_transparent() -> None:
    # emit -> Subject -> map -> filter -> holder: the offer stays current through the operators
    subject: Subject[int] = Subject()
    held: list[Handoff | None] = []

    def double(value: int) -> int:
        return value * 2

    def big(value: int) -> bool:
        return value > 2

    subject.pipe(ops.map(double), ops.filter(big)).subscribe(lambda _: held.append(hold()))
    first, second = Recorder(), Recorder()
    emit(subject, 1, first)  # filtered out: nobody holds, settled at once
    emit(subject, 2, second)
    assert first.calls == [None]
    assert len(held) == 1 and held[0] is not None
    assert second.calls == []
    held[0].settle(None)
    assert second.calls == [None]


def test_emit_takes_a_bare_on_next_callable() -> None:
    recorder = Recorder()
    seen: list[Any] = []
    emit(seen.append, "a", recorder)
    assert seen == ["a"]
    assert recorder.calls == [None]


def test_direct_on_next_unwraps_only_rxsinks_stages() -> None:
    class Stage(abc.ObserverBase[int]):
        __rxsinks_stage__ = True

        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_next(self, value: int) -> None:
            self.seen.append(value)

        def on_error(self, error: Exception) -> None:
            pass

        def on_completed(self) -> None:
            pass

    captured: list[Any] = []
    source: Subject[int] = Subject()
    stage = Stage()
    source.subscribe(stage)
    source.subscribe(lambda _: None)
    captured.extend(source.observers)
    wrapped_stage, wrapped_plain = captured
    direct = direct_on_next(wrapped_stage)
    direct(7)
    assert stage.seen == [7]
    assert getattr(direct, "__self__", None) is stage
    assert direct_on_next(wrapped_plain) == wrapped_plain.on_next


def test_flush_group_tracks_stages_until_each_leaves() -> None:
    group = FlushGroup()
    emptied: list[str] = []
    group.on_empty(lambda: emptied.append("at once"))
    assert emptied == ["at once"]  # empty group: called at once
    assert join_flush() is None  # outside any group
    with group.active():
        first = join_flush(lambda: 3)
        second = join_flush(lambda: 4)
    assert first is not None and second is not None
    assert group.flushing == 2
    assert group.remaining() == 7
    group.on_empty(lambda: emptied.append("later"))
    first.done()
    assert emptied == ["at once"]
    assert group.remaining() == 4
    second.done()
    second.done()  # leaving twice is harmless
    assert emptied == ["at once", "later"]
    assert group.flushing == 0


def test_flush_scope_passes_completion_on_inside_the_group() -> None:
    group = FlushGroup()
    with group.active():
        token = join_flush()
    assert token is not None
    assert join_flush() is None
    with flush_scope(token):
        inner = join_flush(lambda: 1)  # a stage completed from here joins the same group
    with token.scope():
        scoped = join_flush()
    with flush_scope(None), group.active(), flush_scope(None):
        assert join_flush() is None  # flush_scope(None) leaves any group
    assert inner is not None and scoped is not None
    assert group.flushing == 3
    for member in (token, inner, scoped):
        member.done()
    assert group.flushing == 0


@pytest.mark.parametrize("error", [None, KeyError("k")])
def test_handoff_settle_without_binding_keeps_the_outcome(error: BaseException | None) -> None:
    handoff = Handoff()
    handoff.settle(error)
    seen: list[BaseException | None] = []
    handoff._bind(seen.append)  # the emitter learns of it afterwards: reported at once
    assert seen == [error]
