"""Tests of rxsinks._breaker: the registry's breaker, exactly, with its states."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from rxsinks._breaker import Breaker, BreakerState
from rxsinks._deliver import deliver
from rxsinks._retry import retry_with_breaker
from tests.fakes import ScriptedSink

on_next = ReactiveTest.on_next


def test_first_threshold_failures_pass_then_one_attempt_per_backoff() -> None:
    breaker = Breaker(3, 10)
    for now in (100.0, 100.0):
        breaker.record_failure(now)
        assert breaker.delay(now) == 0.0  # fewer than threshold: go at once
    breaker.record_failure(100.0)
    assert breaker.failures == 3
    assert breaker.delay(100.0) == 10.0
    assert breaker.delay(104.0) == 6.0  # only the remaining part (go-events), not a full backoff
    assert breaker.delay(110.0) == 0.0
    assert breaker.delay(500.0) == 0.0
    breaker.record_failure(110.0)  # the trial failed: wait a backoff from the last failure
    assert breaker.delay(110.0) == 10.0


def test_one_success_resets_everything() -> None:
    breaker = Breaker(2, 5)
    breaker.record_failure(1.0)
    breaker.record_failure(1.0)
    assert breaker.delay(1.0) == 5.0
    breaker.record_success()
    assert breaker.failures == 0
    assert breaker.delay(1.0) == 0.0
    breaker.record_failure(2.0)
    assert breaker.delay(2.0) == 0.0  # counting starts again from zero


def test_states_and_transitions() -> None:
    seen: list[BreakerState] = []
    breaker = Breaker(2, 10, on_change=seen.append)
    states = [breaker.state]
    breaker.record_failure(0.0)
    states.append(breaker.state)
    breaker.record_failure(0.0)
    states.append(breaker.state)
    breaker.before_attempt(5.0)  # still inside the backoff: stays open
    states.append(breaker.state)
    breaker.before_attempt(10.0)  # the backoff has passed: a trial attempt
    states.append(breaker.state)
    breaker.record_failure(10.0)
    states.append(breaker.state)
    breaker.before_attempt(20.0)
    breaker.record_success()
    states.append(breaker.state)
    assert [state.value for state in states] == [
        "closed",
        "closed",
        "open",
        "open",
        "half_open",
        "open",
        "closed",
    ]
    breaker.record_success()  # no transition: no callback
    assert seen == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    assert [state.value for state in seen[:3]] == ["open", "half_open", "open"]


def test_listen_and_stop_listening() -> None:
    breaker = Breaker(1, 1)
    seen: list[BreakerState] = []
    stop = breaker.listen(seen.append)
    breaker.record_failure(0.0)
    stop()
    stop()  # stopping twice is harmless
    breaker.record_success()
    assert seen == [BreakerState.OPEN]


def test_repr_shows_the_configuration_and_state() -> None:
    breaker = Breaker(4, 2.5)
    breaker.record_failure(0.0)
    text = repr(breaker)
    assert "threshold=4" in text and "backoff=2.5" in text
    assert "state=closed" in text and "failures=1" in text


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_threshold_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="threshold"):
        Breaker(bad, 1.0)


@pytest.mark.parametrize("bad", [-1, True, "1", None])
def test_backoff_must_be_seconds(bad: Any) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Breaker(3, bad)


def test_zero_backoff_never_waits() -> None:
    breaker = Breaker(1, 0)
    breaker.record_failure(3.0)
    assert breaker.delay(3.0) == 0.0


def test_a_shared_breaker_holds_back_every_endpoint_behind_it() -> None:
    # two endpoints of one receiver share a breaker: a's failures open it, so b's first
    # attempt waits for the backoff although b itself never failed; when the backoff is over,
    # a goes first as the single trial, and b once it succeeded
    scheduler = TestScheduler()
    shared = Breaker(3, 10)
    xs = scheduler.create_hot_observable(on_next(210, "a"))
    ys = scheduler.create_hot_observable(on_next(215, "b"))
    sink_a: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True, True, True])
    sink_b: ScriptedSink[str] = ScriptedSink(scheduler)
    policy = retry_with_breaker(breaker=shared, scheduler=scheduler)

    def subscribe(*_: Any) -> None:
        xs.pipe(deliver(sink_a, retry=policy)).subscribe()
        ys.pipe(deliver(sink_b, retry=policy)).subscribe()

    scheduler.schedule_absolute(200, subscribe)
    scheduler.start()
    assert sink_a.attempt_times == [210, 210, 210, 220]
    assert sink_b.attempt_times == [220]
    assert shared.state is BreakerState.CLOSED


def test_half_open_lets_one_trial_through_and_the_others_wait_for_it() -> None:
    breaker = Breaker(1, 10)
    breaker.record_failure(0.0)
    assert breaker.permit(5.0) == 5.0
    assert breaker.permit(10.0) == 0.0  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.permit(10.0) > 0  # everybody else waits for its result
    breaker.record_success()
    assert breaker.permit(10.0) == 0.0


def test_an_abandoned_trial_lets_the_next_attempt_be_the_trial() -> None:
    breaker = Breaker(1, 10)
    breaker.record_failure(0.0)
    assert breaker.permit(10.0) == 0.0
    breaker.abandon()
    assert breaker.permit(10.0) == 0.0


def test_a_raising_listener_neither_stops_the_others_nor_the_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: BreakerState) -> None:
        raise RuntimeError("listener bug")

    seen: list[BreakerState] = []
    breaker = Breaker(1, 1, on_change=broken)
    breaker.listen(seen.append)
    with caplog.at_level(logging.ERROR, logger="rxsinks.breaker"):
        breaker.record_failure(0.0)  # must not raise
    assert breaker.state is BreakerState.OPEN
    assert seen == [BreakerState.OPEN]
    assert any("listener" in record.getMessage() for record in caplog.records)
