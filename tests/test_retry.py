"""Tests of rxsinks._retry: the breaker's timing, tenacity policies and dead letters.

Timing tests run in virtual time (ticks are seconds), so every attempt has an exact timestamp.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from tenacity.retry import retry_if_exception_type
from tenacity.stop import stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential, wait_fixed, wait_random_exponential

from rxsinks._breaker import Breaker, BreakerState
from rxsinks._event import Event
from rxsinks._exceptions import (
    SINK_CLOSED,
    EndpointDisabledError,
    PermanentDeliveryError,
    WebhookStatusError,
)
from rxsinks._outcome import DeadLetter, Outcome, OutcomeKind
from rxsinks._queue import queue
from rxsinks._retry import retry_with_breaker
from rxsinks._sinks import CallbackSink, CollectingSink
from rxsinks._subject import EventSubject
from tests.fakes import HoldingSink, RawSource, Unreliable, ids, make_event, run_threads

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error

K = OutcomeKind


def run(
    scheduler: TestScheduler,
    messages: list[Any],
    sink: HoldingSink[Any],
    *,
    above: Any = None,
    **options: Any,
) -> Observable[Any]:
    """Subscribe ``hot(messages) [| above] | retry_with_breaker(**options)`` to ``sink`` at 200
    and run the scheduler to the end."""
    xs = scheduler.create_hot_observable(messages)
    operator = retry_with_breaker(scheduler=scheduler, **options)
    pipeline = xs.pipe(above, operator) if above is not None else xs.pipe(operator)
    scheduler.schedule_absolute(200, lambda *_: pipeline.subscribe(sink))
    scheduler.start()
    return pipeline


# -- the breaker's timing ---------------------------------------------------------------------


def test_threshold_back_to_back_then_one_attempt_per_backoff_and_success_resets() -> None:
    scheduler = TestScheduler()
    # a fails 5 times then goes; b fails 3 times then goes
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True] * 5 + [False] + [True] * 3)
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
    assert sink.delivered == ["a", "b"]


def test_asynchronous_attempts_wait_for_the_sink_and_keep_blocks_in_order() -> None:
    scheduler = TestScheduler()
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=2, fails=[True] * 4)
    run(
        scheduler,
        [on_next(210, "a"), on_next(215, "b"), on_next(216, "c"), on_completed(217)],
        sink,
        threshold=2,
        backoff=10,
    )
    # a: 210 (fails 212), 212 (fails 214, breaker opens), 224, 236, 248 (delivered 250)
    assert sink.attempts == [
        (210, "a"),
        (212, "a"),
        (224, "a"),
        (236, "a"),
        (248, "a"),
        (250, "b"),  # b and c waited behind a, in arrival order
        (252, "c"),
    ]
    assert sink.delivered == ["a", "b", "c"]
    assert sink.received[-1] == on_completed(254)  # completion after the last delivery


def test_completion_waits_for_the_block_being_retried() -> None:
    scheduler = TestScheduler()
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True, True])
    run(scheduler, [on_next(210, "a"), on_completed(211)], sink, threshold=1, backoff=10)
    assert sink.received == [
        on_next(210, "a"),
        on_next(220, "a"),
        on_next(230, "a"),
        on_completed(230),
    ]


def test_an_upstream_error_passes_on_after_the_blocks_went() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("upstream")
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True])
    run(scheduler, [on_next(210, "a"), on_error(211, boom)], sink, threshold=1, backoff=5)
    assert sink.received == [on_next(210, "a"), on_next(215, "a"), on_error(215, boom)]


@pytest.mark.parametrize("ticks", [0, 1])
def test_a_long_backlog_behind_a_retried_block_drains_without_recursion(ticks: int) -> None:
    # no queue above: 3000 blocks wait in the retry stage while the first one is retried; a
    # synchronous sink then delivers them one after the other (iteratively, not one stack
    # level deeper per block)
    scheduler = TestScheduler()
    source: Subject[int] = Subject()
    sink: HoldingSink[int] = HoldingSink(scheduler, ticks=ticks, fails=[True])
    source.pipe(retry_with_breaker(1, 10, scheduler=scheduler)).subscribe(sink)
    count = 3000
    for value in range(count):
        source.on_next(value)
    source.on_completed()
    scheduler.start()
    assert sink.delivered == list(range(count))
    assert sink.completed


def test_threshold_zero_turns_the_breaker_off() -> None:
    scheduler = TestScheduler()
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True] * 30)
    run(scheduler, [on_next(210, "a")], sink, threshold=0, backoff=10)
    assert sink.attempt_times == [210] * 31  # never waits, never gives up
    assert sink.delivered == ["a"]


def test_dispose_during_the_backoff_stops_the_attempts() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"))
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=lambda _: True)
    subscription: list[Any] = []
    pipeline = xs.pipe(retry_with_breaker(3, 10, scheduler=scheduler))
    scheduler.schedule_absolute(200, lambda *_: subscription.append(pipeline.subscribe(sink)))
    scheduler.schedule_absolute(215, lambda *_: subscription[0].dispose())
    scheduler.start()
    assert sink.attempt_times == [210, 210, 210]


# -- tenacity policies ------------------------------------------------------------------------


def test_stop_after_attempt_gives_up_and_dead_letters_with_the_last_error() -> None:
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True] * 4)
    run(
        scheduler,
        [on_next(210, "a"), on_next(300, "b")],
        sink,
        threshold=3,
        backoff=10,
        stop=stop_after_attempt(4),
        dead_letters=letters.append,
        endpoint="hook",
    )
    assert sink.attempt_times == [210, 210, 210, 220, 300]
    assert len(letters) == 1
    letter = letters[0]
    assert tuple(letter.events) == ("a",)
    assert letter.attempts == 4
    assert isinstance(letter.error, Unreliable)
    assert str(letter.error) == "attempt 3 failed"  # the last error, not the first
    assert letter.endpoint == "hook"
    assert sink.delivered == ["b"]  # the next block goes on


def test_stop_after_delay_reads_the_virtual_clock() -> None:
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=lambda _: True)
    run(
        scheduler,
        [on_next(210, "a")],
        sink,
        threshold=1,
        backoff=10,
        stop=stop_after_delay(25),
        dead_letters=letters.append,
    )
    assert sink.attempt_times == [210, 220, 230, 240]  # 30 s after the first attempt: stop
    assert [letter.attempts for letter in letters] == [4]


def test_stop_after_delay_counts_from_a_synchronous_sink_s_first_attempt() -> None:
    # a sink failing inside the call: the delay counts from the first attempt, not a later one
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    attempts: list[float] = []

    def failing(_: str) -> None:
        attempts.append(scheduler.to_seconds(scheduler.now))
        raise ConnectionError("refused")

    xs = scheduler.create_hot_observable(on_next(210, "a"))
    pipeline = xs.pipe(
        retry_with_breaker(
            1,
            10,
            stop=stop_after_delay(25),
            dead_letters=letters.append,
            scheduler=scheduler,
        )
    )
    scheduler.schedule_absolute(200, lambda *_: pipeline.subscribe(CallbackSink(failing)))
    scheduler.start()
    assert attempts == [210, 220, 230, 240]
    assert [letter.attempts for letter in letters] == [4]


def test_an_error_the_retry_policy_refuses_is_dead_lettered_at_once() -> None:
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    errors = [ConnectionError("reset"), ValueError("bad block")]
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True, True], error=lambda n: errors[n])
    run(
        scheduler,
        [on_next(210, "a"), on_next(220, "b")],
        sink,
        threshold=3,
        backoff=10,
        retry=retry_if_exception_type(ConnectionError),
        dead_letters=letters.append,
    )
    # attempt 1 (ConnectionError) is retried; attempt 2 (ValueError) is refused
    assert sink.attempt_times == [210, 210, 220]
    assert [(tuple(letter.events), letter.attempts) for letter in letters] == [(("a",), 2)]
    assert letters[0].error is errors[1]
    assert sink.delivered == ["b"]


@pytest.mark.parametrize("error_type", [PermanentDeliveryError, EndpointDisabledError])
def test_permanent_errors_dead_letter_at_once_without_touching_the_breaker(
    error_type: type[PermanentDeliveryError],
) -> None:
    scheduler = TestScheduler()
    breaker = Breaker(1, 10)
    letters: list[DeadLetter] = []
    outcomes: list[Outcome] = []
    permanent = error_type("gone", status=410)
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True], error=lambda _: permanent)
    run(
        scheduler,
        [on_next(210, "a"), on_next(211, "b")],
        sink,
        breaker=breaker,
        dead_letters=letters.append,
        outcomes=outcomes.append,
    )
    assert sink.attempts == [(210, "a"), (211, "b")]  # no retry, and b is not held back
    assert [(tuple(letter.events), letter.attempts) for letter in letters] == [(("a",), 1)]
    assert letters[0].error is permanent
    assert breaker.failures == 0 and breaker.state is BreakerState.CLOSED
    # every failed attempt is reported (the last one with no retry), then the dead letter
    assert [outcome.kind for outcome in outcomes] == [K.FAILED, K.DEAD_LETTERED, K.DELIVERED]
    assert [(o.status, o.retry_in) for o in outcomes[:2]] == [(410, None), (410, None)]


def test_retry_after_delays_the_next_attempt() -> None:
    scheduler = TestScheduler()
    outcomes: list[Outcome] = []
    busy = WebhookStatusError(503, "http://127.0.0.1/hook", reason="Unavailable", retry_after=7)
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True], error=lambda _: busy)
    run(scheduler, [on_next(210, "a")], sink, threshold=3, backoff=1, outcomes=outcomes.append)
    # the breaker alone would retry at once; the receiver asked for 7 s
    assert sink.attempt_times == [210, 217]
    failed = [outcome for outcome in outcomes if outcome.kind is K.FAILED]
    assert [(o.status, o.retry_in, o.error) for o in failed] == [(503, 7, busy)]


def test_retry_after_shorter_than_the_breaker_does_not_shorten_it() -> None:
    scheduler = TestScheduler()
    busy = WebhookStatusError(429, "http://127.0.0.1/hook", retry_after=2)
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True], error=lambda _: busy)
    run(scheduler, [on_next(210, "a")], sink, threshold=1, backoff=10)
    assert sink.attempt_times == [210, 220]


def test_sink_closed_is_terminal_for_the_block_and_everything_behind_it() -> None:
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    sink: HoldingSink[str] = HoldingSink(
        scheduler, ticks=5, fails=[True], error=lambda _: SINK_CLOSED
    )
    run(
        scheduler,
        [on_next(210, "a"), on_next(211, "b"), on_next(212, "c"), on_next(300, "d")],
        sink,
        threshold=3,
        backoff=1,
        dead_letters=letters.append,
    )
    assert sink.attempts == [(210, "a")]  # never retried, nothing else attempted
    assert [(tuple(letter.events), letter.attempts) for letter in letters] == [
        (("a",), 1),
        (("b",), 0),
        (("c",), 0),
        (("d",), 0),  # arrived after the close was seen: dead-lettered at once
    ]
    assert all(letter.error is SINK_CLOSED for letter in letters)


def test_sink_closed_behind_a_queue_drains_the_queue_into_dead_letters() -> None:
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    failed: list[Any] = []
    q = queue(scheduler=scheduler, on_failure=lambda item, error: failed.append((item, error)))
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True], error=lambda _: SINK_CLOSED)
    run(
        scheduler,
        [on_next(210, "a"), on_next(210, "b"), on_completed(220)],
        sink,
        above=q,
        dead_letters=letters.append,
    )
    assert [tuple(letter.events) for letter in letters] == [("a",), ("b",)]
    assert failed == [("a", SINK_CLOSED), ("b", SINK_CLOSED)]
    assert q.pending == 0
    assert sink.completed  # the pipeline still completes


def test_without_dead_letters_a_given_up_block_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = TestScheduler()
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True])
    with caplog.at_level(logging.ERROR, logger="rxsinks.retry"):
        run(scheduler, [on_next(210, "a")], sink, stop=stop_after_attempt(1), endpoint="hook")
    assert any(
        "hook" in record.getMessage() and "gave up" in record.getMessage()
        for record in caplog.records
    )


def test_dead_letters_and_outcomes_may_be_observers() -> None:
    scheduler = TestScheduler()
    letters: Subject[DeadLetter] = Subject()
    outcomes: Subject[Outcome] = Subject()
    got_letters: list[DeadLetter] = []
    got_outcomes: list[Outcome] = []
    letters.subscribe(got_letters.append)
    outcomes.subscribe(got_outcomes.append)
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True])
    run(
        scheduler,
        [on_next(210, "a")],
        sink,
        threshold=0,
        stop=stop_after_attempt(1),
        dead_letters=letters,
        outcomes=outcomes,
    )
    assert [letter.attempts for letter in got_letters] == [1]
    assert [outcome.kind for outcome in got_outcomes] == [K.FAILED, K.DEAD_LETTERED]
    assert got_outcomes[0].retry_in is None  # the last attempt: no retry follows


def test_the_outcome_stream() -> None:
    scheduler = TestScheduler()
    outcomes: list[Outcome] = []
    sink: HoldingSink[Any] = HoldingSink(scheduler, fails=[True, True, True])
    run(
        scheduler,
        [on_next(210, ("a", "b"))],
        sink,
        threshold=2,
        backoff=10,
        outcomes=outcomes.append,
        endpoint="hook",
    )
    assert [outcome.kind for outcome in outcomes] == [
        K.FAILED,
        K.BREAKER_OPENED,  # the breaker opens on the 2nd failure, reported before it
        K.FAILED,
        K.BREAKER_HALF_OPEN,  # 220: the trial attempt
        K.BREAKER_OPENED,
        K.FAILED,
        K.BREAKER_HALF_OPEN,  # 230
        K.BREAKER_CLOSED,
        K.DELIVERED,
    ]
    failed = [o for o in outcomes if o.kind is K.FAILED]
    assert [(o.attempt, o.retry_in) for o in failed] == [(1, 0), (2, 10), (3, 10)]
    assert all(isinstance(o.error, Unreliable) and o.events == ("a", "b") for o in failed)
    delivered = outcomes[-1]
    assert (delivered.attempt, delivered.latency, tuple(delivered.events)) == (4, 20, ("a", "b"))
    assert {o.endpoint for o in outcomes} == {"hook"}


def test_breaker_outcomes_stop_when_the_stream_ends() -> None:
    scheduler = TestScheduler()
    shared = Breaker(1, 10)
    outcomes: list[Outcome] = []
    sink: HoldingSink[str] = HoldingSink(scheduler)
    run(
        scheduler,
        [on_next(210, "a"), on_completed(211)],
        sink,
        breaker=shared,
        outcomes=outcomes.append,
    )
    shared.record_failure(500.0)  # the lane finished: it no longer listens to the breaker
    assert [outcome.kind for outcome in outcomes] == [K.DELIVERED]


# -- backoff bounds: go-events' ExponentialBackoff expressed with tenacity ---------------------

# go-events: bound = base + factor * 2**(failures - 1), capped at max (1 s, 1 s, 20 s):
# 2, 3, 5, 9, 17, 20, 20. With tenacity: the fixed base plus an exponential part capped at
# max - base (a cap of 20 on the exponential part alone would give 21 from the 6th failure on).
GO_EVENTS_BOUNDS = wait_fixed(1) + wait_exponential(multiplier=1, exp_base=2, max=19)


def test_exponential_backoff_bounds_measured_in_virtual_time() -> None:
    scheduler = TestScheduler()
    outcomes: list[Outcome] = []
    sink: HoldingSink[str] = HoldingSink(scheduler, fails=[True] * 7 + [False, True])
    run(
        scheduler,
        [on_next(210, "a"), on_next(400, "b")],
        sink,
        threshold=0,
        wait=GO_EVENTS_BOUNDS,
        outcomes=outcomes.append,
    )
    times = sink.attempt_times
    waits = [later - earlier for earlier, later in itertools.pairwise(times[:8])]
    assert waits == [2, 3, 5, 9, 17, 20, 20]
    assert [o.retry_in for o in outcomes if o.kind is K.FAILED][:7] == [2, 3, 5, 9, 17, 20, 20]
    # after a success the wait is 0: b's first attempt goes at once, and its first retry
    # starts the progression again
    assert times[8:] == [400, 402]
    assert sink.delivered == ["a", "b"]


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


async def _retry_catalogue(operator: Any) -> tuple[list[str], list[str], FlakyCount]:
    subject = EventSubject()
    accepted: CollectingSink[Event] = CollectingSink()
    delivered: CollectingSink[Event] = CollectingSink()
    letters: list[DeadLetter] = []
    flaky = FlakyCount(always=10)

    def deliver(event: Event) -> None:
        flaky(event)
        delivered.on_next(event)

    subject.subscribe(accepted)
    subject.pipe(queue(), operator(letters.append)).subscribe(CallbackSink(deliver))
    writers = 100
    events = [make_event(i) for i in range(writers)]
    await run_threads(writers, lambda i: subject.on_next(events[i]))
    report = await subject.aclose(60)
    assert report.flushed
    assert letters == []
    return ids(accepted.items), ids(delivered.items), flaky


async def test_catalogue_retrying_sink_with_breaker() -> None:
    accepted, delivered, flaky = await _retry_catalogue(
        lambda letters: retry_with_breaker(3, 0.01, dead_letters=letters)
    )
    assert len(delivered) == 100
    assert len(set(delivered)) == 100  # no duplicates, no loss
    assert delivered == accepted  # in the order the writes were accepted
    assert flaky.attempts == 10 + 100 * 10


async def test_catalogue_retrying_sink_with_exponential_wait_and_no_breaker() -> None:
    accepted, delivered, _ = await _retry_catalogue(
        lambda letters: retry_with_breaker(
            0,
            wait=wait_random_exponential(multiplier=0.001, max=0.005),
            dead_letters=letters,
        )
    )
    assert len(delivered) == 100
    assert len(set(delivered)) == 100
    assert delivered == accepted


async def test_retry_on_the_running_loop_by_default() -> None:
    sink: CollectingSink[str] = CollectingSink()
    attempts: list[str] = []

    def flaky(value: str) -> None:
        attempts.append(value)
        if len(attempts) < 3:
            raise Unreliable("not yet")
        sink.on_next(value)

    source: Subject[str] = Subject()
    source.pipe(retry_with_breaker(1, 0.001)).subscribe(CallbackSink(flaky))
    source.on_next("a")
    await sink.wait_for(1, timeout=10)
    assert attempts == ["a", "a", "a"]


# -- close semantics and validation -----------------------------------------------------------


def test_a_write_after_completion_is_dead_lettered_as_sink_closed() -> None:
    scheduler = TestScheduler()
    letters: list[DeadLetter] = []
    raw: RawSource[str] = RawSource()
    sink: HoldingSink[str] = HoldingSink(scheduler)
    raw.pipe(retry_with_breaker(scheduler=scheduler, dead_letters=letters.append)).subscribe(sink)
    lane = raw.observer
    lane.on_completed()
    lane.on_next("late")  # a retry stage never raises into its upstream: it dead-letters
    lane.on_completed()  # second close harmless
    assert [(tuple(letter.events), letter.error) for letter in letters] == [
        (("late",), SINK_CLOSED)
    ]
    assert sink.attempts == []
    assert sink.completed


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((-1,), {}, ValueError, "threshold"),
        ((2.5,), {}, ValueError, "threshold"),
        ((3, -1.0), {}, ValueError, "backoff"),
        ((), {"stop": 5}, TypeError, "stop"),
        ((), {"wait": "1s"}, TypeError, "wait"),
        ((), {"retry": True}, TypeError, "retry"),
        ((), {"dead_letters": 42}, TypeError, "observer or a callable"),
        ((), {"outcomes": "log"}, TypeError, "observer or a callable"),
    ],
)
def test_bad_arguments_raise_when_the_operator_is_built(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        retry_with_breaker(*args, **kwargs)


def test_success_on_the_first_attempt_reports_latency_zero() -> None:
    scheduler = TestScheduler()
    outcomes: list[Outcome] = []
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=3)
    run(scheduler, [on_next(210, "a")], sink, outcomes=outcomes.append)
    assert [(o.kind, o.attempt, o.latency) for o in outcomes] == [(K.DELIVERED, 1, 3)]


def test_asyncio_delivery_failure_in_a_coroutine_is_retried() -> None:
    async def main() -> list[str]:
        got: list[str] = []
        calls = 0

        async def deliver(value: str) -> None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            if calls == 1:
                raise Unreliable("first")
            got.append(value)

        subject: Subject[str] = Subject()
        done = asyncio.get_running_loop().create_future()
        subject.pipe(retry_with_breaker(3, 0.001)).subscribe(
            CallbackSink(deliver, on_completed=lambda: done.set_result(None))
        )
        subject.on_next("a")
        subject.on_completed()
        await asyncio.wait_for(done, 10)
        return got

    assert asyncio.run(main()) == ["a"]


@pytest.mark.parametrize("report", ["dead_letters", "outcomes"])
def test_a_raising_report_callback_never_wedges_the_stage(
    report: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Any) -> None:
        raise RuntimeError("report bug")

    scheduler = TestScheduler()
    sink: HoldingSink[str] = HoldingSink(scheduler, ticks=1, fails=[True])
    with caplog.at_level(logging.ERROR, logger="rxsinks.retry"):
        run(
            scheduler,
            [on_next(210, "a"), on_next(210, "b"), on_completed(220)],
            sink,
            stop=stop_after_attempt(1),
            **{report: broken},
        )
    assert sink.delivered == ["b"]  # a was given up on, b went on
    assert sink.completed
    assert any("raised" in record.getMessage() for record in caplog.records)
