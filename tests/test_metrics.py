"""EndpointMetrics fed by hand-made outcome sequences: the registry's counters and rxsinks' own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reactivex.subject import Subject

from rxsinks import EndpointMetrics, MetricsSnapshot, Outcome, OutcomeKind, WebhookStatusError
from rxsinks._metrics import LATENCY_BUCKETS, status_text

BLOCK = ("e1", "e2", "e3")


def failed(status: int | None, events: tuple[str, ...] = BLOCK) -> Outcome:
    error: Exception = (
        WebhookStatusError(status, "http://127.0.0.1/hook")
        if status is not None
        else ConnectionRefusedError("connection refused")
    )
    return Outcome(OutcomeKind.FAILED, events, 1, error=error, status=status, retry_in=0.0)


def delivered(latency: float, events: tuple[str, ...] = BLOCK, status: int = 200) -> Outcome:
    return Outcome(OutcomeKind.DELIVERED, events, 1, status=status, latency=latency)


@pytest.mark.parametrize(
    ("code", "key"),
    [
        (200, "200 OK"),
        (307, "307 Temporary Redirect"),
        (400, "400 Bad Request"),
        (410, "410 Gone"),
        (500, "500 Internal Server Error"),
        # Go's texts where Python's differ, or changed in Python 3.13
        (413, "413 Request Entity Too Large"),
        (414, "414 Request URI Too Long"),
        (416, "416 Requested Range Not Satisfiable"),
        (418, "418 I'm a teapot"),
        (422, "422 Unprocessable Entity"),
        # unknown codes: Go's empty text after the space
        (306, "306 "),
        (599, "599 "),
    ],
)
def test_status_text_is_gos(code: int, key: str) -> None:
    assert status_text(code) == key


def test_a_block_failing_twice_then_delivered() -> None:
    metrics = EndpointMetrics()
    metrics.accepted(3)
    for outcome in (failed(500), failed(500), delivered(0.02)):
        metrics.on_next(outcome)
    assert metrics.snapshot().pending == 3  # until the queue's egress
    metrics.finished(3)

    snapshot = metrics.snapshot()
    assert snapshot.registry_dict() == {
        "Pending": 0,
        "Events": 3,
        "Successes": 3,
        "Failures": 6,
        "Errors": 0,
        "Statuses": {"500 Internal Server Error": 6, "200 OK": 3},
    }
    assert snapshot.delivered_blocks == 1
    assert snapshot.last_error == "http://127.0.0.1/hook answered 500"


def test_attempts_without_an_answer_are_errors_without_a_status() -> None:
    metrics = EndpointMetrics()
    metrics.accepted(1)
    metrics.on_next(failed(None, ("e1",)))
    metrics.on_next(failed(None, ("e1",)))
    snapshot = metrics.snapshot()
    assert (snapshot.errors, snapshot.failures, snapshot.statuses) == (2, 0, {})
    assert snapshot.last_error == "connection refused"
    assert snapshot.pending == 1


def test_latency_buckets_are_cumulative() -> None:
    metrics = EndpointMetrics()
    # on a bound (le is inclusive), between bounds, and beyond the last bound
    for latency in (0.001, 0.002, 0.3, 100.0):
        metrics.on_next(delivered(latency, ("e",)))
    snapshot = metrics.snapshot()
    buckets = dict(zip(LATENCY_BUCKETS, snapshot.latency_buckets, strict=True))
    assert buckets[0.001] == 1
    assert buckets[0.0025] == 2
    assert buckets[0.25] == 2
    assert buckets[0.5] == 3
    assert buckets[60.0] == 3  # 100 s is only in +Inf, which is delivered_blocks
    assert snapshot.delivered_blocks == 4
    assert snapshot.latency_sum == pytest.approx(100.303)
    assert snapshot.latency_max == 100.0
    assert snapshot.to_dict()["latency_mean"] == pytest.approx(100.303 / 4)


@given(st.lists(st.floats(min_value=0.0, max_value=120.0), max_size=50))
def test_buckets_count_every_latency_up_to_their_bound(latencies: list[float]) -> None:
    metrics = EndpointMetrics()
    for latency in latencies:
        metrics.on_next(delivered(latency, ("e",)))
    snapshot = metrics.snapshot()
    expected = [sum(latency <= bound for latency in latencies) for bound in LATENCY_BUCKETS]
    assert list(snapshot.latency_buckets) == expected
    assert snapshot.delivered_blocks == len(latencies)


def test_breaker_dead_letters_drops_and_disabling() -> None:
    metrics = EndpointMetrics()
    states = []
    for kind in (
        OutcomeKind.BREAKER_OPENED,
        OutcomeKind.BREAKER_HALF_OPEN,
        OutcomeKind.BREAKER_OPENED,
    ):
        metrics.on_next(Outcome(kind))
        states.append(metrics.snapshot().breaker)
    assert states == ["open", "half_open", "open"]

    metrics.on_next(
        Outcome(OutcomeKind.DEAD_LETTERED, BLOCK, 3, error=RuntimeError("gave up"), status=None)
    )
    metrics.on_next(Outcome(OutcomeKind.DROPPED, ("e4", "e5")))
    metrics.on_next(Outcome(OutcomeKind.DISABLED, status=410))
    metrics.on_next(Outcome(OutcomeKind.BREAKER_CLOSED))

    snapshot = metrics.snapshot()
    assert (snapshot.dead_letters, snapshot.dropped) == (3, 2)
    assert snapshot.disabled is True
    assert snapshot.breaker == "closed"
    assert snapshot.last_error == "gave up"
    # none of these is an attempt: the registry's counters are untouched
    assert snapshot.registry_dict() == MetricsSnapshot().registry_dict()


def test_a_snapshot_is_a_frozen_copy() -> None:
    metrics = EndpointMetrics()
    metrics.on_next(delivered(0.01))
    before = metrics.snapshot()
    before.statuses["200 OK"] = 1000  # the dict is the snapshot's own
    metrics.on_next(delivered(0.01))

    assert metrics.snapshot().statuses == {"200 OK": 6}
    assert before.successes == 3
    with pytest.raises(AttributeError):
        before.successes = 7  # type: ignore[misc]


def test_subscribed_to_an_outcome_stream() -> None:
    outcomes: Subject[Outcome] = Subject()
    metrics = EndpointMetrics()
    outcomes.subscribe(metrics)
    outcomes.on_next(delivered(0.01, status=307))
    outcomes.on_error(RuntimeError("the stream broke"))

    snapshot = metrics.snapshot()
    assert snapshot.statuses == {"307 Temporary Redirect": 3}
    assert snapshot.last_error == "the stream broke"
    assert snapshot.to_dict()["statuses"] == {"307 Temporary Redirect": 3}
    assert MetricsSnapshot().to_dict()["latency_mean"] is None
