"""Every marble diagram in an operator's docstring, run under a TestScheduler and compared.

Each diagram says, in words, what the sink or the events are like; the setups below build
exactly that, and the output row of the docstring must be what comes out, tick for tick.
"""

from __future__ import annotations

from typing import Any

from reactivex import Observable, abc
from reactivex.testing import TestScheduler

import rxsinks
from rxsinks import Event, EventFilter, Outcome, OutcomeKind
from tests.fakes import ScriptedSink
from tests.marbles import diagram_of, run_marbles

_KINDS = {
    OutcomeKind.DELIVERED: None,  # named after the block's item, upper case
    OutcomeKind.FAILED: "x",
    OutcomeKind.DROPPED: "x",
    OutcomeKind.BREAKER_OPENED: "o",
    OutcomeKind.BREAKER_HALF_OPEN: "h",
    OutcomeKind.BREAKER_CLOSED: "c",
}


def outcome_symbol(outcome: Outcome) -> str:
    letter = _KINDS.get(outcome.kind, "?")
    if letter is None:
        return str(outcome.events[0]).upper()
    return letter


def test_deliver() -> None:
    diagram = diagram_of(rxsinks.deliver)

    def build(source: Observable[Any], scheduler: TestScheduler) -> Observable[Any]:
        sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=2)
        return source.pipe(rxsinks.deliver(sink, scheduler=scheduler))

    assert diagram.operator == "[ deliver(sink) ]"
    assert run_marbles(diagram.source, build, symbol=outcome_symbol) == diagram.expected


def test_queue() -> None:
    diagram = diagram_of(rxsinks.queue)

    def build(source: Observable[Any], scheduler: TestScheduler) -> Observable[Any]:
        sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=3)
        bounded = rxsinks.queue(max_events=1, overflow="drop_newest")
        return source.pipe(rxsinks.deliver(sink, queue=bounded, scheduler=scheduler))

    assert "queue(max_events=1" in diagram.operator
    assert run_marbles(diagram.source, build, symbol=outcome_symbol) == diagram.expected


def test_retry_with_breaker() -> None:
    diagram = diagram_of(rxsinks.retry_with_breaker)

    def build(source: Observable[Any], scheduler: TestScheduler) -> Observable[Any]:
        sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True] * 4)
        policy = rxsinks.retry_with_breaker(2, 5, scheduler=scheduler)
        return source.pipe(rxsinks.deliver(sink, retry=policy, scheduler=scheduler))

    assert "retry_with_breaker(2, 5)" in diagram.operator
    assert run_marbles(diagram.source, build, symbol=outcome_symbol) == diagram.expected


def test_batch() -> None:
    diagram = diagram_of(rxsinks.batch)
    names = {("a", "b"): "x", ("c",): "y", ("d", "e"): "z", ("f",): "w"}

    def build(source: Observable[Any], scheduler: TestScheduler) -> Observable[Any]:
        return source.pipe(rxsinks.batch(2, 4, scheduler=scheduler))

    assert diagram.operator.replace(" ", "") == "[batch(2,4)]"
    got = run_marbles(diagram.source, build, symbol=lambda block: names[block])
    assert got == diagram.expected


def _events(**special: dict[str, Any]) -> Any:
    def value(symbol: str) -> Event:
        fields = special.get(symbol, {})
        return Event.new(
            fields.get("action", "push"),
            target={"repository": fields.get("repository", "library/app")},
            id=symbol,
        )

    return value


def test_filter_events() -> None:
    diagram = diagram_of(rxsinks.filter_events)

    def build(source: Observable[Any], _: TestScheduler) -> Observable[Any]:
        return source.pipe(rxsinks.filter_events(EventFilter(ignore_actions={"pull"})))

    got = run_marbles(
        diagram.source, build, value=_events(b={"action": "pull"}), symbol=lambda e: e.id
    )
    assert got == diagram.expected


def test_ignore() -> None:
    diagram = diagram_of(rxsinks.ignore)

    def build(source: Observable[Any], _: TestScheduler) -> Observable[Any]:
        return source.pipe(rxsinks.ignore(actions={"pull"}))

    got = run_marbles(
        diagram.source, build, value=_events(b={"action": "pull"}), symbol=lambda e: e.id
    )
    assert got == diagram.expected


def test_match() -> None:
    diagram = diagram_of(rxsinks.match)

    def build(source: Observable[Any], _: TestScheduler) -> Observable[Any]:
        return source.pipe(rxsinks.match(repositories=["library/*"]))

    got = run_marbles(
        diagram.source, build, value=_events(a={"repository": "team/app"}), symbol=lambda e: e.id
    )
    assert got == diagram.expected


def test_broadcast() -> None:
    diagram = diagram_of(rxsinks.broadcast)
    second: list[str] = []

    def m2(item: str) -> None:
        if item == "b":
            raise RuntimeError("m2 fails on b")
        second.append(item)

    def build(source: Observable[Any], _: TestScheduler) -> Observable[Any]:
        return source.pipe(rxsinks.broadcast(m2))  # m1 is the subscriber that records

    assert run_marbles(diagram.source, build) == diagram.expected
    assert second == ["a", "c"]


def test_every_operator_with_a_diagram_is_covered() -> None:
    # a new operator with a diagram needs a test here: list them all from the public API
    tested = {
        "deliver",
        "queue",
        "retry_with_breaker",
        "batch",
        "filter_events",
        "ignore",
        "match",
        "broadcast",
    }
    with_diagrams = set()
    for name in rxsinks.__all__:
        obj = getattr(rxsinks, name)
        if callable(obj) and "Marble diagram" in (obj.__doc__ or ""):
            with_diagrams.add(name)
    assert with_diagrams == tested


class _Unused(abc.ObserverBase[Any]):  # keeps mypy's view of abc used in build signatures
    def on_next(self, value: Any) -> None: ...
    def on_error(self, error: Exception) -> None: ...
    def on_completed(self) -> None: ...
