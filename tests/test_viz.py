"""Tests of rxsinks.viz: the recorders, and what the drawing helpers put on the Axes (Agg)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: draw into memory, before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
import pytest
import reactivex
import reactivex.operators as ops
from matplotlib.axes import Axes
from matplotlib.collections import Collection
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from reactivex.testing import ReactiveTest, TestScheduler

from rxsinks import (
    Endpoint,
    Event,
    EventSubject,
    Outcome,
    OutcomeKind,
    deliver,
    retry_with_breaker,
)
from rxsinks.viz import (
    INSTALL_HINT,
    OUTCOME_COLORS,
    OutcomeRecorder,
    Timeline,
    bar_counts,
    marbles,
    plot_outcomes,
)

from .conftest import Receiver


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def event(name: str, action: str = "push") -> Event:
    return Event.from_dict({"id": name, "action": action, "target": {"repository": "demo/app"}})


def items_of(ax: Axes) -> list[Collection]:
    return [c for c in ax.collections if c.get_gid() == "marbles:items"]


def offsets(collection: Collection) -> list[tuple[float, float]]:
    """The (x, y) of every dot of a scatter collection, as plain floats."""
    return [(x, y) for x, y in np.asarray(collection.get_offsets(), dtype=float).tolist()]


def xs_of(collection: Collection) -> list[float]:
    return [x for x, _ in offsets(collection)]


def colours_of(collection: Collection) -> list[tuple[float, ...]]:
    return [tuple(rgba) for rgba in np.asarray(collection.get_facecolor(), dtype=float).tolist()]


def xdata(line: Line2D) -> list[float]:
    return list(np.asarray(line.get_xdata(), dtype=float).tolist())


def ydata(line: Line2D) -> list[float]:
    return list(np.asarray(line.get_ydata(), dtype=float).tolist())


def lines_of(ax: Axes, gid: str) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def texts_of(ax: Axes) -> list[str]:
    return [text.get_text() for text in ax.texts]


# -- Timeline ----------------------------------------------------------------------------------


def test_timeline_records_exact_virtual_times_with_a_test_scheduler() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        ReactiveTest.on_next(210, "a"),
        ReactiveTest.on_next(225, "b"),
        ReactiveTest.on_completed(250),
    )
    timeline = Timeline("source", clock=scheduler)
    source.subscribe(timeline)
    scheduler.start()
    assert timeline.items == [(210.0, "a"), (225.0, "b")]
    assert timeline.times == [210.0, 225.0]
    assert timeline.values == ["a", "b"]
    assert timeline.completed_at == 250.0
    assert timeline.ended_at == 250.0
    assert timeline.error is None
    assert repr(timeline) == "Timeline('source', 2 item(s), completed)"


def test_timeline_records_an_error_and_when() -> None:
    now = iter([1.0, 2.5])
    timeline = Timeline("failing", clock=lambda: next(now))
    boom = ValueError("boom")
    reactivex.concat(reactivex.of(1), reactivex.throw(boom)).subscribe(timeline)
    assert timeline.items == [(1.0, 1)]
    assert timeline.error is boom
    assert timeline.error_at == 2.5
    assert timeline.completed_at is None
    assert timeline.ended_at == 2.5
    assert "failed" in repr(timeline)


def test_tap_records_and_changes_nothing() -> None:
    timeline = Timeline("numbers", clock=lambda: 0.0)
    out: list[int] = []
    completed: list[bool] = []

    def tenfold(x: int) -> int:
        return x * 10

    reactivex.of(1, 2, 3).pipe(timeline.tap(), ops.map(tenfold)).subscribe(
        out.append, on_completed=lambda: completed.append(True)
    )
    assert out == [10, 20, 30]
    assert completed == [True]
    assert timeline.values == [1, 2, 3]
    assert timeline.completed_at == 0.0
    assert len(timeline) == 3
    assert list(timeline) == [(0.0, 1), (0.0, 2), (0.0, 3)]


async def test_tap_is_transparent_to_a_retrying_pipeline() -> None:
    # the retry stage must still see the sink's failures through the tap (rxsinks._flow offers)
    calls = 0
    delivered: list[Event] = []

    async def flaky(item: Event) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls <= 2:
            raise ConnectionError("down")
        delivered.append(item)

    written = Timeline("written")
    outcomes = Timeline("outcomes")
    subject = EventSubject()
    subject.pipe(
        written.tap(), deliver(flaky, retry=retry_with_breaker(5, 0.0)), outcomes.tap()
    ).subscribe()
    first, second = event("first"), event("second")
    subject.write(first, second)
    report = await subject.aclose(timeout=10)

    assert report.flushed
    assert delivered == [first, second]
    assert calls == 4
    assert [item.id for item in written.values] == ["first", "second"]
    kinds = [o.kind for o in outcomes.values]
    assert kinds == [OutcomeKind.FAILED] * 2 + [OutcomeKind.DELIVERED] * 2
    assert outcomes.completed_at is not None


async def test_timeline_reads_the_running_loop_by_default() -> None:
    loop = asyncio.get_running_loop()
    timeline = Timeline("loop")
    before = loop.time()
    timeline.on_next("x")
    assert before <= timeline.times[0] <= loop.time()
    timeline_of_loop = Timeline("explicit", clock=loop)
    timeline_of_loop.on_next("y")
    assert before <= timeline_of_loop.times[0] <= loop.time()


def test_timeline_refuses_a_bad_label_or_clock() -> None:
    with pytest.raises(TypeError, match="label must be a str"):
        Timeline(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be"):
        Timeline("x", clock=42)  # type: ignore[arg-type]


# -- marbles -----------------------------------------------------------------------------------


def timelines_of_a_pipeline() -> tuple[Timeline, Timeline, Timeline]:
    a, b, c = event("a"), event("b"), event("c", "pull")
    source = Timeline("source")
    source.items = [(0.0, a), (1.0, b), (2.0, c)]
    source.completed_at = 3.0
    blocks = Timeline("blocks")
    blocks.items = [(1.0, (a, b))]
    blocks.error_at = 3.0
    blocks.error = RuntimeError("broken")
    empty = Timeline("nothing yet")
    return source, blocks, empty


def test_marbles_draws_a_dot_per_item_a_bar_per_completion_an_x_per_error() -> None:
    source, blocks, empty = timelines_of_a_pipeline()
    ax = marbles(source, blocks, empty, title="pipeline")

    rows = items_of(ax)
    assert [len(offsets(row)) for row in rows] == [3, 1, 0]
    assert xs_of(rows[0]) == [0.0, 1.0, 2.0]
    (completed,) = lines_of(ax, "marbles:completed")
    assert xdata(completed) == [3.0, 3.0]
    (failed,) = lines_of(ax, "marbles:error")
    assert xdata(failed) == [3.0]
    # one row per timeline, first on top
    assert [t.get_text() for t in ax.get_yticklabels()] == ["nothing yet", "blocks", "source"]
    # the same event has the same letter on every row; a block shows its letters together
    assert texts_of(ax) == ["a", "b", "c", "ab", "RuntimeError"]
    assert ax.get_title() == "pipeline"


def test_marbles_draws_on_a_given_axes_with_custom_labels_and_colours() -> None:
    source, _, _ = timelines_of_a_pipeline()
    _, ax = plt.subplots()
    returned = marbles(
        source, ax=ax, label=lambda e: e.action, color=lambda e: "red", origin=-1.0, unit="ticks"
    )
    assert returned is ax
    assert texts_of(ax) == ["push", "push", "pull"]
    assert xs_of(items_of(ax)[0]) == [1.0, 2.0, 3.0]
    assert ax.get_xlabel() == "time (ticks)"
    assert colours_of(items_of(ax)[0]) == [(1.0, 0.0, 0.0, 1.0)] * 3


def test_marbles_stacks_marbles_too_close_to_read() -> None:
    timeline = Timeline("burst")
    timeline.items = [(0.0, "x"), (0.001, "y"), (0.002, "z"), (10.0, "w")]
    ax = marbles(timeline)
    heights = [y for _, y in offsets(items_of(ax)[0])]
    assert heights[0] < heights[1] < heights[2]  # lifted one level each
    assert heights[3] == heights[0]  # far away: back on the row


def test_marbles_colours_outcomes_by_kind_with_a_legend() -> None:
    a = event("a")
    timeline = Timeline("outcomes")
    timeline.items = [
        (0.0, Outcome(OutcomeKind.FAILED, (a,), 1)),
        (1.0, Outcome(OutcomeKind.BREAKER_OPENED)),
        (2.0, Outcome(OutcomeKind.DELIVERED, (a,), 2)),
    ]
    ax = marbles(timeline)
    colours = colours_of(items_of(ax)[0])
    expected = [
        to_rgba(OUTCOME_COLORS[kind])
        for kind in (OutcomeKind.FAILED, OutcomeKind.BREAKER_OPENED, OutcomeKind.DELIVERED)
    ]
    assert colours == expected
    assert texts_of(ax) == ["a", "open", "a"]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["failed", "breaker_opened", "delivered"]


def test_marbles_refuses_nothing_and_non_timelines() -> None:
    with pytest.raises(ValueError, match="at least one Timeline"):
        marbles()
    with pytest.raises(TypeError, match="argument 1 is list"):
        marbles(Timeline("ok"), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="use title= for the chart's title"):
        marbles(Timeline("ok"), label="pipeline")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="color= takes a function"):
        marbles(Timeline("ok"), color="red")  # type: ignore[arg-type]


# -- OutcomeRecorder and plot_outcomes ---------------------------------------------------------


async def test_outcome_recorder_and_plot_outcomes_show_an_outage(receiver: Receiver) -> None:
    receiver.answer_next(500, 500)
    endpoint = Endpoint("hooks", receiver.url(), threshold=1, backoff=0.01)
    subject = EventSubject(endpoint)
    with OutcomeRecorder(endpoint, interval=0.01) as recorder:
        subject.write(event("a"), event("b"), event("c"))
        report = await subject.aclose(timeout=10)
    await endpoint.aclose()

    assert report.flushed
    assert recorder.endpoint is endpoint
    assert recorder.stopped
    assert recorder.count("failed") == 2
    assert recorder.count(OutcomeKind.DELIVERED) == 3
    assert recorder.samples[-1][1].pending == 0
    assert recorder.samples[-1][1].successes == 3
    outcome_times = [when for when, _ in recorder.outcomes]
    assert outcome_times == sorted(outcome_times)
    assert recorder.start <= outcome_times[0]

    figure = plot_outcomes(recorder)
    pending_ax, breaker_ax, totals_ax = figure.axes
    assert pending_ax.get_title() == "endpoint 'hooks'"
    finals = {line.get_gid(): ydata(line)[-1] for line in totals_ax.get_lines()}
    assert finals == {
        "attempts": 5,
        "failed attempts": 2,
        "events delivered": 3,
        "events dead-lettered": 0,
    }
    (breaker,) = lines_of(breaker_ax, "outcomes:breaker")
    levels = ydata(breaker)
    assert levels[0] == 0 and levels[-1] == 0  # closed before and after
    assert 2 in levels and 1 in levels  # opened, then half open for the trials
    (pending,) = lines_of(pending_ax, "outcomes:pending")
    assert len(xdata(pending)) == len(recorder.samples)
    assert max(ydata(pending)) <= 3


async def test_outcome_recorder_stops_once_and_plots_on_given_axes(receiver: Receiver) -> None:
    endpoint = Endpoint("hooks", receiver.url())
    recorder = OutcomeRecorder(endpoint, interval=0.5)
    assert "recording" in repr(recorder)
    recorder.stop()
    samples = len(recorder.samples)
    recorder.stop()
    assert len(recorder.samples) == samples == 2
    assert "stopped" in repr(recorder)
    await endpoint.aclose()

    figure, axes = plt.subplots(3)
    assert plot_outcomes(recorder, ax=axes) is figure
    with pytest.raises(ValueError, match="pass 3 Axes, got 2"):
        plot_outcomes(recorder, ax=axes[:2])
    with pytest.raises(TypeError, match="takes an OutcomeRecorder"):
        plot_outcomes([])  # type: ignore[arg-type]


def test_outcome_recorder_needs_a_loop_and_a_positive_interval() -> None:
    endpoint = Endpoint("hooks", "http://127.0.0.1:9/hook")
    with pytest.raises(ValueError, match="interval must be a positive number"):
        OutcomeRecorder(endpoint, interval=0)
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        OutcomeRecorder(endpoint)


# -- bar_counts --------------------------------------------------------------------------------


def test_bar_counts_draws_one_bar_per_key_labelled_with_its_count() -> None:
    ax = bar_counts(Counter({"push": 8, "pull": 5, "mount": 0}), title="by action")
    (bars,) = ax.containers
    assert [patch.get_width() for patch in bars] == [8, 5, 0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["push", "pull", "mount"]
    assert [t.get_text() for t in ax.texts] == ["8", "5", ""]  # zeros are left unlabelled
    assert ax.get_title() == "by action"


def test_bar_counts_groups_nested_counts_in_the_given_order() -> None:
    counts: dict[str, dict[str, int]] = {
        "everything": {"pull": 5, "push": 8},
        "no-pulls": {"push": 8, "delete": 2},
    }
    _, ax = plt.subplots()
    assert bar_counts(counts, ax=ax, order=["push", "pull", "mount"]) is ax
    series = [container.get_label() for container in ax.containers]
    assert series == ["push", "pull", "mount", "delete"]
    widths = {
        str(container.get_label()): [patch.get_width() for patch in container]
        for container in ax.containers
    }
    assert widths == {"push": [8, 8], "pull": [5, 0], "mount": [0, 0], "delete": [0, 2]}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["everything", "no-pulls"]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == series


@pytest.mark.parametrize(
    ("mapping", "error", "message"),
    [
        ({}, ValueError, "the mapping is empty"),
        ([("push", 1)], TypeError, "takes a mapping of counts"),
        ({"push": 1.5}, TypeError, "count of 'push' is not an int"),
        ({"a": {"push": "3"}}, TypeError, "count of 'a' -> 'push' is not an int"),
        ({"a": {"push": 3}, "b": 4}, TypeError, "either every value is a count"),
    ],
)
def test_bar_counts_says_what_is_wrong(mapping: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        bar_counts(mapping)


# -- without matplotlib ------------------------------------------------------------------------


async def test_without_matplotlib_drawing_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a None entry in sys.modules makes `import matplotlib...` raise ImportError
    for name in [name for name in sys.modules if name.startswith("matplotlib")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # the recorders do not need matplotlib
    timeline = Timeline("still records", clock=lambda: 1.0)
    timeline.on_next("x")
    assert timeline.items == [(1.0, "x")]
    endpoint = Endpoint("hooks", "http://127.0.0.1:9/hook")
    with OutcomeRecorder(endpoint) as recorder:
        pass
    await endpoint.aclose()

    draws: list[Callable[[], object]] = [
        lambda: marbles(timeline),
        lambda: plot_outcomes(recorder),
        lambda: bar_counts({"push": 1}),
    ]
    for draw in draws:
        with pytest.raises(ImportError, match=r"rxsinks\.viz needs matplotlib") as caught:
            draw()
        assert str(caught.value).endswith("pip install 'rxsinks[notebook]'")
        assert INSTALL_HINT == "pip install 'rxsinks[notebook]'"


def test_importing_rxsinks_and_viz_does_not_import_matplotlib() -> None:
    code = (
        "import sys, rxsinks, rxsinks.viz; "
        "print(any(name.startswith('matplotlib') for name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
