"""Property tests: whatever the writes and the failures, nothing is lost, duplicated or reordered.

Every example runs in virtual time: one :class:`EventSubject` fans out to 2-3 endpoints, each
``[filter] -> [batch] -> [plain Rx] -> deliver(sink, retry) -> [plain Rx]``, where the sink takes
a few ticks per attempt and fails the attempts a generated script says, and plain reactivex
operators (``observe_on``, ``delay``) are spliced in above and below the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import reactivex.operators as ops
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex.testing import TestScheduler
from tenacity.stop import stop_after_attempt

from rxsinks._batch import batch
from rxsinks._deliver import deliver
from rxsinks._event import Event
from rxsinks._filter import ignore
from rxsinks._outcome import Outcome, OutcomeKind
from rxsinks._retry import retry_with_breaker
from rxsinks._subject import EventSubject
from tests.fakes import ScriptedSink, make_event

ACTIONS = ("push", "pull", "delete", "mount")
FILTERS: dict[str, Callable[[Event], bool]] = {
    "none": lambda _: True,
    "ignore_pull": lambda event: event.action != "pull",  # through rxsinks' ignore()
    "no_delete": lambda event: event.action != "delete",  # through reactivex ops.filter
}


@dataclass(frozen=True)
class EndpointPlan:
    filter: str
    fails: tuple[bool, ...]
    ticks: int
    threshold: int
    backoff: int
    block: int
    above: str
    below: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[str, ...]
    times: tuple[int, ...]
    endpoints: tuple[EndpointPlan, ...]


endpoint_plans = st.builds(
    EndpointPlan,
    filter=st.sampled_from(sorted(FILTERS)),
    fails=st.lists(st.booleans(), max_size=40).map(tuple),
    ticks=st.integers(0, 3),
    threshold=st.integers(0, 3),
    backoff=st.integers(0, 5),
    block=st.integers(1, 3),
    above=st.sampled_from(["none", "observe_on", "delay"]),
    below=st.sampled_from(["none", "observe_on", "delay"]),
)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    actions = draw(st.lists(st.sampled_from(ACTIONS), max_size=25))
    # non-decreasing write times: several writes may share a tick
    times = sorted(
        draw(st.lists(st.integers(201, 300), min_size=len(actions), max_size=len(actions)))
    )
    endpoints = draw(st.lists(endpoint_plans, min_size=2, max_size=3))
    return Plan(tuple(actions), tuple(times), tuple(endpoints))


def _filter_operator(name: str) -> Callable[[Observable[Event]], Observable[Event]]:
    if name == "ignore_pull":
        return ignore(actions=["pull"])
    return ops.filter(FILTERS[name])


def _splice(name: str, scheduler: TestScheduler) -> Callable[[Observable[Any]], Observable[Any]]:
    if name == "observe_on":
        return ops.observe_on(scheduler)
    if name == "delay":
        return ops.delay(1, scheduler=scheduler)
    return lambda source: source


def _flat_ids(items: list[Any]) -> list[str]:
    return [event.id for block in items for event in block]


def _run(plan: Plan, attempts: int | None) -> None:
    scheduler = TestScheduler()
    subject = EventSubject()  # no event loop: writes dispatch synchronously
    events = [make_event(i, action) for i, action in enumerate(plan.actions)]
    sinks: list[ScriptedSink[tuple[Event, ...]]] = []
    letters: list[list[Outcome]] = []
    completed: list[list[bool]] = []
    for endpoint in plan.endpoints:
        sink: ScriptedSink[tuple[Event, ...]] = ScriptedSink(
            scheduler, ticks=endpoint.ticks, fails=endpoint.fails
        )
        dead: list[Outcome] = []
        retry = retry_with_breaker(
            endpoint.threshold,
            endpoint.backoff,
            stop=None if attempts is None else stop_after_attempt(attempts),
            scheduler=scheduler,
        )
        done: list[bool] = []
        subject.pipe(
            _filter_operator(endpoint.filter),
            batch(endpoint.block, 2, scheduler=scheduler),
            _splice(endpoint.above, scheduler),
            deliver(sink, retry=retry, scheduler=scheduler),
            _splice(endpoint.below, scheduler),
        ).subscribe(
            lambda outcome, dead=dead: (
                dead.append(outcome) if outcome.kind is OutcomeKind.DEAD_LETTERED else None
            ),
            on_completed=lambda done=done: done.append(True),
        )
        sinks.append(sink)
        letters.append(dead)
        completed.append(done)
    for event, time in zip(events, plan.times, strict=True):
        scheduler.schedule_absolute(time, lambda *_, event=event: subject.on_next(event))
    scheduler.schedule_absolute(400, lambda *_: subject.close())
    scheduler.start()

    for endpoint, sink, dead, done in zip(plan.endpoints, sinks, letters, completed, strict=True):
        keep = FILTERS[endpoint.filter]
        expected = [event.id for event in events if keep(event)]
        delivered = _flat_ids(sink.delivered)
        assert done == [True]  # close flushed the whole pipeline, whatever was spliced in
        if attempts is None:
            # unbounded: every event not filtered out, exactly once, in write order
            assert delivered == expected
            assert dead == []
        else:
            given_up = [event.id for letter in dead for event in letter.events]
            position = {event_id: index for index, event_id in enumerate(expected)}
            # delivered + dead-lettered is everything, each exactly once
            assert sorted(delivered + given_up, key=position.__getitem__) == expected
            # and both keep the write order
            assert [position[i] for i in delivered] == sorted(position[i] for i in delivered)
            assert [position[i] for i in given_up] == sorted(position[i] for i in given_up)
            assert all(1 <= letter.attempt <= attempts for letter in dead)
            # no block was attempted more often than the policy allows
            per_block: dict[tuple[str, ...], int] = {}
            for _, block in sink.attempts:
                key = tuple(event.id for event in block)
                per_block[key] = per_block.get(key, 0) + 1
            assert max(per_block.values(), default=0) <= attempts


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(plans())
def test_unbounded_policy_delivers_everything_exactly_once_in_order(plan: Plan) -> None:
    _run(plan, attempts=None)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(plans(), st.integers(1, 4))
def test_bounded_policy_delivers_or_dead_letters_everything_exactly_once(
    plan: Plan, attempts: int
) -> None:
    _run(plan, attempts=attempts)
