"""Tests of rxsinks.retry_with_breaker: the breaker's timing, tenacity policies and dead letters,
as a delivery stage's policy and as an operator over a cold observable of one delivery.

Timing tests run in virtual time (ticks are seconds), so every attempt has an exact timestamp.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from tenacity.retry import retry_if_exception_type
from tenacity.stop import stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential, wait_fixed, wait_random_exponential

import rxsinks
from rxsinks import (
    Breaker,
    BreakerState,
    Event,
    EventSubject,
    Outcome,
    OutcomeKind,
    PermanentDeliveryError,
    WebhookStatusError,
    deliver,
    retry_with_breaker,
)
from tests.fakes import ScriptedSink, Unreliable, ids, make_event, run_threads

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
K = OutcomeKind


def run(scheduler: TestScheduler, messages: list[Any], sink: Any, **policy: Any) -> list[Outcome]:
    """``hot(messages) | deliver(sink, retry=retry_with_breaker(**policy))`` from 200 on."""
    xs = scheduler.create_hot_observable(messages)
    outcomes: list[Outcome] = []
    stage = deliver(sink, retry=retry_with_breaker(scheduler=scheduler, **policy))
    scheduler.schedule_absolute(200, lambda *_: xs.pipe(stage).subscribe(outcomes.append))
    scheduler.start()
    return outcomes


# -- the breaker's timing ---------------------------------------------------------------------


def test_threshold_back_to_back_then_one_attempt_per_backoff_and_success_resets() -> None:
    scheduler = TestScheduler()
    # a fails 5 times then goes; b fails 3 times then goes
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True] * 5 + [False] + [True] * 3)
    run(scheduler, [on_next(210, "a"), on_next(300, "b")], sink, threshold=3, backoff=10)
    assert sink.attempts == [
        (210, "a"),
        (210, "a"),
        (210, "a"),  # threshold 3: back to back
        (220, "a"),  # then one attempt per backoff
        (230, "a"),
        (240, "a"),  # delivered
        (300, "b"),  # the success reset the breaker: b goes at once...
        (300, "b"),
        (300, "b"),  # ...and again gets 3 back to back
        (310, "b"),
    ]


def test_asynchronous_attempts_wait_for_the_sink_and_keep_blocks_in_order() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, ticks=5, fails=[True, False, False])
    run(scheduler, [on_next(210, "a"), on_next(211, "b")], sink, threshold=3, backoff=10)
    # a fails at 215 and is retried at once (the breaker is still closed); b waits its turn
    assert sink.attempts == [(210, "a"), (215, "a"), (220, "b")]
    assert sink.delivered == ["a", "b"]


def test_completion_waits_for_the_block_being_retried() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True, True])
    outcomes: list[Any] = []
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_completed(211))
    stage = deliver(sink, retry=retry_with_breaker(1, 10, scheduler=scheduler))
    scheduler.schedule_absolute(
        200,
        lambda *_: xs.pipe(stage).subscribe(
            outcomes.append, on_completed=lambda: outcomes.append(scheduler.clock)
        ),
    )
    scheduler.start()
    assert sink.attempt_times == [210, 220, 230]
    assert outcomes[-1] == 230


def test_threshold_zero_turns_the_breaker_off() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True] * 3)
    outcomes = run(scheduler, [on_next(210, "a")], sink, threshold=0, wait=wait_fixed(1))
    assert sink.attempt_times == [210, 211, 212, 213]
    assert not [o for o in outcomes if o.kind.value.startswith("breaker")]


def test_a_long_backlog_behind_a_retried_block_drains_without_recursion() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[int] = ScriptedSink(scheduler, fails=[True])
    messages = [on_next(210, i) for i in range(5000)]
    run(scheduler, messages, sink, threshold=1, backoff=1)
    assert sink.delivered == list(range(5000))


# -- tenacity policies and dead letters -------------------------------------------------------


def test_stop_after_attempt_gives_up_and_dead_letters_with_the_last_error() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=lambda n: n < 3)
    outcomes = run(
        scheduler,
        [on_next(210, "a"), on_next(211, "b")],
        sink,
        threshold=0,
        wait=wait_fixed(2),
        stop=stop_after_attempt(2),
    )
    dead = [o for o in outcomes if o.kind is K.DEAD_LETTERED]
    assert [(o.events, o.attempt, str(o.error)) for o in dead] == [(("a",), 2, "attempt 1 failed")]
    assert sink.attempts == [(210, "a"), (212, "a"), (212, "b"), (214, "b")]
    assert sink.delivered == ["b"]


def test_stop_after_delay_reads_the_virtual_clock() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=lambda n: True)
    outcomes = run(
        scheduler,
        [on_next(210, "a")],
        sink,
        threshold=0,
        wait=wait_fixed(3),
        stop=stop_after_delay(7),
    )
    assert sink.attempt_times == [210, 213, 216, 219]  # 9 ticks after the first: stop
    assert outcomes[-1].kind is K.DEAD_LETTERED


def test_an_error_the_retry_policy_refuses_is_dead_lettered_at_once() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(
        scheduler, fails=[True], error=lambda _: ValueError("not retryable")
    )
    outcomes = run(
        scheduler,
        [on_next(210, "a")],
        sink,
        retry=retry_if_exception_type(Unreliable),
    )
    assert sink.attempt_times == [210]
    assert [o.kind for o in outcomes] == [K.FAILED, K.DEAD_LETTERED]
    assert outcomes[0].retry_in is None


def test_permanent_errors_dead_letter_at_once_without_touching_the_breaker() -> None:
    scheduler = TestScheduler()
    breaker = Breaker(1, 100)
    sink: ScriptedSink[str] = ScriptedSink(
        scheduler,
        fails=[True],
        error=lambda _: PermanentDeliveryError("422: never", status=422),
    )
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"))
    outcomes: list[Outcome] = []
    stage = deliver(sink, retry=retry_with_breaker(breaker=breaker, scheduler=scheduler))
    scheduler.schedule_absolute(200, lambda *_: xs.pipe(stage).subscribe(outcomes.append))
    scheduler.start()
    assert [o.kind for o in outcomes] == [K.FAILED, K.DEAD_LETTERED, K.DELIVERED]
    assert outcomes[1].status == 422
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0
    assert sink.attempt_times == [210, 211]  # b went at once: the breaker never opened


def test_retry_after_delays_the_next_attempt() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(
        scheduler,
        fails=[True],
        error=lambda _: WebhookStatusError(503, "http://x", retry_after=30),
    )
    run(scheduler, [on_next(210, "a")], sink, threshold=10, backoff=1)
    assert sink.attempt_times == [210, 240]


def test_retry_after_shorter_than_the_breaker_does_not_shorten_it() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(
        scheduler,
        fails=[True],
        error=lambda _: WebhookStatusError(429, "http://x", retry_after=1),
    )
    run(scheduler, [on_next(210, "a")], sink, threshold=1, backoff=10)
    assert sink.attempt_times == [210, 220]


# -- backoff bounds: go-events' ExponentialBackoff expressed with tenacity ---------------------

# go-events: bound = base + factor * 2**(failures - 1), capped at max (1 s, 1 s, 20 s):
# 2, 3, 5, 9, 17, 20, 20. With tenacity: the fixed base plus an exponential part capped at
# max - base (a cap of 20 on the exponential part alone would give 21 from the 6th failure on).
GO_EVENTS_BOUNDS = wait_fixed(1) + wait_exponential(multiplier=1, exp_base=2, max=19)


def test_exponential_backoff_bounds_measured_in_virtual_time() -> None:
    scheduler = TestScheduler()
    sink: ScriptedSink[str] = ScriptedSink(scheduler, fails=[True] * 7 + [False, True])
    outcomes = run(
        scheduler,
        [on_next(210, "a"), on_next(400, "b")],
        sink,
        threshold=0,
        wait=GO_EVENTS_BOUNDS,
    )
    times = sink.attempt_times
    waits = [later - earlier for earlier, later in itertools.pairwise(times[:8])]
    assert waits == [2, 3, 5, 9, 17, 20, 20]
    assert [o.retry_in for o in outcomes if o.kind is K.FAILED][:7] == [2, 3, 5, 9, 17, 20, 20]
    # after a success the wait is 0: b's first attempt goes at once, and its first retry
    # starts the progression again
    assert times[8:] == [400, 402]
    assert sink.delivered == ["a", "b"]


# -- the operator form: a cold observable of one delivery -------------------------------------


def test_the_operator_re_subscribes_a_cold_delivery_through_the_breaker() -> None:
    scheduler = TestScheduler()
    attempts: list[float] = []

    def post() -> reactivex.Observable[Any]:
        def subscribe(observer: Any, _: Any = None) -> Any:
            attempts.append(scheduler.clock)
            if len(attempts) < 4:
                observer.on_error(Unreliable("down"))
            else:
                observer.on_next("ok")
                observer.on_completed()

        return reactivex.create(subscribe)

    results = scheduler.start(
        lambda: post().pipe(retry_with_breaker(2, 10, scheduler=scheduler)), created=0
    )
    assert attempts == [200, 200, 210, 220]
    assert [message.value.kind for message in results.messages] == ["N", "C"]


def test_the_operator_in_a_concat_map_pipeline_the_reactor_way() -> None:
    scheduler = TestScheduler()
    calls: list[tuple[float, str]] = []

    def post(block: str) -> reactivex.Observable[Any]:
        def subscribe(observer: Any, _: Any = None) -> Any:
            calls.append((scheduler.clock, block))
            if len(calls) == 1:
                observer.on_error(Unreliable("first"))
            else:
                observer.on_completed()

        return reactivex.create(subscribe)

    policy = retry_with_breaker(1, 5, scheduler=scheduler)
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(211, "b"), on_completed(212))
    scheduler.start(lambda: xs.pipe(ops.concat_map(lambda b: post(b).pipe(policy))))
    assert calls == [(210, "a"), (215, "a"), (215, "b")]


def test_the_operator_gives_up_with_the_last_error() -> None:
    scheduler = TestScheduler()
    boom = Unreliable("always")
    results = scheduler.start(
        lambda: reactivex.throw(boom).pipe(
            retry_with_breaker(0, stop=stop_after_attempt(3), scheduler=scheduler)
        )
    )
    assert results.messages == [on_error(200, boom)]


def test_the_operator_refuses_a_hot_source() -> None:
    for hot in (Subject(), EventSubject(), EventSubject().pipe(ops.map(lambda e: e))):
        with pytest.raises(TypeError, match="lost, not repeated"):
            hot.pipe(retry_with_breaker())


# -- the reference catalogue (real threads, a real loop, real time) ----------------------------


class FlakyCount:
    """Fails every attempt while ``attempt < always``, then 9 attempts of every 10."""

    def __init__(self, always: int) -> None:
        self.always = always
        self.attempts = 0

    def __call__(self, event: Event) -> None:
        attempt = self.attempts
        self.attempts += 1
        if attempt < self.always or (attempt - self.always) % 10 != 9:
            raise Unreliable(f"attempt {attempt} failed")


async def _retry_catalogue(policy: Any) -> tuple[list[str], list[str], FlakyCount, list[Any]]:
    subject = EventSubject()
    accepted: list[Event] = []
    delivered: list[Event] = []
    flaky = FlakyCount(always=10)

    def post(event: Event) -> None:
        flaky(event)
        delivered.append(event)

    outcomes: list[Outcome] = []
    subject.subscribe(accepted.append)
    subject.pipe(deliver(post, retry=policy)).subscribe(outcomes.append)
    writers = 100
    events = [make_event(i) for i in range(writers)]
    await run_threads(writers, lambda i: subject.on_next(events[i]))
    report = await subject.aclose(60)
    assert report.flushed
    dead = [o for o in outcomes if o.kind is K.DEAD_LETTERED]
    return ids(accepted), ids(delivered), flaky, dead


async def test_catalogue_retrying_sink_with_breaker() -> None:
    accepted, delivered, flaky, dead = await _retry_catalogue(retry_with_breaker(3, 0.01))
    assert dead == []
    assert len(delivered) == 100
    assert len(set(delivered)) == 100  # no duplicates, no loss
    assert delivered == accepted  # in the order the writes were accepted
    assert flaky.attempts == 10 + 100 * 10


async def test_catalogue_retrying_sink_with_exponential_wait_and_no_breaker() -> None:
    accepted, delivered, _, dead = await _retry_catalogue(
        retry_with_breaker(0, wait=wait_random_exponential(multiplier=0.001, max=0.005))
    )
    assert dead == []
    assert len(delivered) == 100
    assert len(set(delivered)) == 100
    assert delivered == accepted


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": -1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"backoff": -1}, "backoff"),
        ({"breaker": "no"}, "Breaker"),
        ({"stop": 3}, "stop must be a tenacity strategy"),
        ({"wait": "x"}, "wait must be a tenacity strategy"),
    ],
)
def test_bad_arguments_raise_when_the_policy_is_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        retry_with_breaker(**kwargs)


def test_a_policy_reads_back_as_it_was_written() -> None:
    policy = retry_with_breaker(3, 0.5, stop=stop_after_attempt(20))
    assert repr(policy).startswith("retry_with_breaker(3, 0.5, stop=")
    assert isinstance(policy, rxsinks.RetryWithBreaker)
