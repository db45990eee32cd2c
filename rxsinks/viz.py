"""Pictures of event streams: marble timelines, endpoint outcomes over time, grouped counts.

Two recorders and three drawing helpers, each drawing in one call with matplotlib:

* :class:`Timeline` is an observer that records ``(time, value)`` for every item, and when the
  stream completed or failed. Subscribe it anywhere, or put :meth:`Timeline.tap` between two
  stages of a pipeline to watch what passes there (``tap`` is ``reactivex.operators.do``, so it
  changes nothing: items, errors and completion pass through).
* :class:`OutcomeRecorder` watches an :class:`~rxsinks.Endpoint`: it records every outcome on
  ``endpoint.outcomes`` and samples ``endpoint.metrics()`` every ``interval`` seconds on the
  running asyncio loop, until :meth:`OutcomeRecorder.stop`.
* :func:`marbles` draws timelines as a marble diagram (one row per stream, a dot per item, a bar
  where it completed, an x where it failed); :func:`plot_outcomes` draws an endpoint's pending
  events, breaker state, attempts and deliveries over time; :func:`bar_counts` draws counts,
  grouped or not.

matplotlib is an optional dependency (the ``notebook`` extra). The recorders work without it; the
drawing helpers import it when called and say how to install it when it is missing::

    pip install 'rxsinks[notebook]'

Example:
    >>> from rxsinks.viz import Timeline, marbles
    >>> seen, kept = Timeline("subject"), Timeline("ignore(pull)")
    >>> subject.pipe(seen.tap(), rxsinks.ignore(actions=["pull"]), kept.tap()).subscribe(sink)
    ... # doctest: +SKIP
    >>> marbles(seen, kept)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import math
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from reactivex import Observable, abc
from reactivex import operators as ops

from ._breaker import BreakerState
from ._endpoint import Endpoint
from ._event import Event
from ._metrics import MetricsSnapshot
from ._outcome import DeadLetter, Outcome, OutcomeKind

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "INSTALL_HINT",
    "Clock",
    "OutcomeRecorder",
    "Timeline",
    "bar_counts",
    "marbles",
    "plot_outcomes",
]

_T = TypeVar("_T")

INSTALL_HINT = "pip install 'rxsinks[notebook]'"
"""What to run when matplotlib is missing."""

Clock = Callable[[], float] | abc.SchedulerBase | asyncio.AbstractEventLoop
"""Where a :class:`Timeline` reads the time: a function returning seconds, a reactivex
scheduler (its virtual clock with a ``TestScheduler``), or an asyncio loop (``loop.time()``)."""

OUTCOME_COLORS: dict[OutcomeKind, str] = {
    OutcomeKind.DELIVERED: "tab:green",
    OutcomeKind.FAILED: "tab:red",
    OutcomeKind.DEAD_LETTERED: "black",
    OutcomeKind.DROPPED: "tab:gray",
    OutcomeKind.BREAKER_OPENED: "tab:orange",
    OutcomeKind.BREAKER_HALF_OPEN: "gold",
    OutcomeKind.BREAKER_CLOSED: "tab:cyan",
    OutcomeKind.DISABLED: "tab:purple",
}
"""The colour :func:`marbles` gives an :class:`~rxsinks.Outcome` marble, by kind."""

_BREAKER_WORDS = {
    OutcomeKind.BREAKER_OPENED: "open",
    OutcomeKind.BREAKER_HALF_OPEN: "half",
    OutcomeKind.BREAKER_CLOSED: "closed",
    OutcomeKind.DISABLED: "off",
}
_BREAKER_LEVELS = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
_BREAKER_OF_KIND = {
    OutcomeKind.BREAKER_CLOSED: BreakerState.CLOSED,
    OutcomeKind.BREAKER_HALF_OPEN: BreakerState.HALF_OPEN,
    OutcomeKind.BREAKER_OPENED: BreakerState.OPEN,
}
_LETTERS = string.ascii_lowercase + string.ascii_uppercase
# rows of plain items take these; green, red, orange, yellow and cyan are kept for outcomes
_ROW_COLOURS = ("tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:gray")
_MAX_LEVEL = 3
_LEVEL_STEP = 0.2
_CHAR_INCHES = 0.075  # width of one character of an 8 pt label, with a little room


def _pyplot() -> Any:
    """Import ``matplotlib.pyplot`` on first use, so ``import rxsinks.viz`` never needs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"rxsinks.viz needs matplotlib to draw; install it with: {INSTALL_HINT}"
        ) from exc
    return plt


def _loop_or_monotonic() -> float:
    # asyncio's loop.time() is time.monotonic() by default, so both give one time line
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def _as_clock(clock: Clock | None) -> Callable[[], float]:
    if clock is None:
        return _loop_or_monotonic
    if isinstance(clock, abc.SchedulerBase):
        scheduler = clock
        return lambda: scheduler.to_seconds(scheduler.now)
    if isinstance(clock, asyncio.AbstractEventLoop):
        return clock.time
    if callable(clock):
        return clock
    raise TypeError(
        "clock must be a function returning seconds, a reactivex scheduler or an asyncio "
        f"loop, got {clock!r}"
    )


class Timeline(abc.ObserverBase[Any]):
    """An observer recording when each item, the completion or the error went past.

    Subscribe it to any observable (a delivery stage's outcomes, say), or put :meth:`tap` inside
    a ``pipe``. Recording never raises into the stream.

    Args:
        label: the stream's name (the row title in :func:`marbles`).
        clock: where to read the time; by default the running asyncio loop's ``loop.time()``
            (``time.monotonic()`` outside a loop). Pass the ``TestScheduler`` in virtual-time
            tests to record exact ticks.

    Attributes:
        label: the stream's name.
        items: ``(time, value)`` for every item, in arrival order.
        completed_at: when the stream completed, or ``None``.
        error_at: when the stream failed, or ``None``.
        error: the error it failed with, or ``None``.

    Example:
        >>> from reactivex.testing import TestScheduler
        >>> scheduler = TestScheduler()
        >>> timeline = Timeline("numbers", clock=scheduler)
        >>> reactivex.timer(5.0, scheduler=scheduler).subscribe(timeline)  # doctest: +SKIP
        >>> scheduler.start(); timeline.items  # doctest: +SKIP
        [(5.0, 0)]
    """

    def __init__(self, label: str, *, clock: Clock | None = None) -> None:
        if not isinstance(label, str):
            raise TypeError(f"a timeline's label must be a str, got {label!r}")
        self.label = label
        self._now = _as_clock(clock)
        self.items: list[tuple[float, Any]] = []
        self.completed_at: float | None = None
        self.error_at: float | None = None
        self.error: Exception | None = None

    def __repr__(self) -> str:
        end = ""
        if self.completed_at is not None:
            end = ", completed"
        elif self.error_at is not None:
            end = f", failed: {self.error!r}"
        return f"Timeline({self.label!r}, {len(self.items)} item(s){end})"

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[float, Any]]:
        return iter(self.items)

    @property
    def times(self) -> list[float]:
        """When each item arrived."""
        return [when for when, _ in self.items]

    @property
    def values(self) -> list[Any]:
        """The items, in arrival order."""
        return [value for _, value in self.items]

    @property
    def ended_at(self) -> float | None:
        """When the stream completed or failed, or ``None`` while it runs."""
        return self.completed_at if self.completed_at is not None else self.error_at

    def on_next(self, value: Any) -> None:
        """Record ``value`` now."""
        self.items.append((self._now(), value))

    def on_error(self, error: Exception) -> None:
        """Record that the stream failed with ``error`` now."""
        self.error_at = self._now()
        self.error = error

    def on_completed(self) -> None:
        """Record that the stream completed now."""
        self.completed_at = self._now()

    def tap(self) -> Callable[[Observable[_T]], Observable[_T]]:
        """An operator that records everything passing through it and changes nothing.

        Example:
            >>> events.pipe(rxsinks.batch(10, 0.5), batched.tap(), rxsinks.deliver(post))
            ... # doctest: +SKIP
        """
        return ops.do(self)


class OutcomeRecorder:
    """Records an endpoint's outcomes and samples its metrics over time, for :func:`plot_outcomes`.

    Create it inside a coroutine (or a notebook cell: the kernel's loop is running) before the
    events flow; it samples ``endpoint.metrics()`` now and every ``interval`` seconds with
    ``loop.call_later``, and timestamps every outcome with ``loop.time()``. Call :meth:`stop`
    when the run is over (it takes a last sample); it is also a context manager that stops on
    exit.

    Args:
        endpoint: the endpoint to watch.
        interval: seconds between two samples of the metrics (> 0).

    Attributes:
        endpoint: the endpoint watched.
        start: the loop time when recording started.
        samples: ``(time, MetricsSnapshot)``, the first at :attr:`start`.
        outcomes: ``(time, Outcome)`` for every outcome, in order.

    Raises:
        ValueError: ``interval`` is not a positive number.
        RuntimeError: no asyncio loop is running.
    """

    def __init__(self, endpoint: Endpoint, *, interval: float = 0.05) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "OutcomeRecorder samples on the running asyncio loop: create it inside a "
                "coroutine, or in a notebook cell"
            ) from None
        self.endpoint = endpoint
        self.interval = float(interval)
        self._loop = loop
        self.start = loop.time()
        self.samples: list[tuple[float, MetricsSnapshot]] = [(self.start, endpoint.metrics())]
        self.outcomes: list[tuple[float, Outcome]] = []
        self._subscription: abc.DisposableBase | None = endpoint.outcomes.subscribe(self._record)
        self._timer: asyncio.TimerHandle | None = loop.call_later(self.interval, self._sample)

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "recording"
        return (
            f"OutcomeRecorder({self.endpoint.name!r}, {len(self.samples)} sample(s), "
            f"{len(self.outcomes)} outcome(s), {state})"
        )

    def __enter__(self) -> OutcomeRecorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._subscription is None

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append((self._loop.time(), outcome))

    def _sample(self) -> None:
        self.samples.append((self._loop.time(), self.endpoint.metrics()))
        self._timer = self._loop.call_later(self.interval, self._sample)

    def stop(self) -> None:
        """Take a last sample and stop recording; calling it again does nothing."""
        if self._subscription is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._subscription.dispose()
        self._subscription = None
        self.samples.append((self._loop.time(), self.endpoint.metrics()))

    def count(self, kind: OutcomeKind | str) -> int:
        """How many outcomes of ``kind`` were recorded (``"failed"`` or ``OutcomeKind.FAILED``)."""
        wanted = OutcomeKind(kind)
        return sum(1 for _, outcome in self.outcomes if outcome.kind is wanted)


class _Labels:
    """Default marble labels: the same event gets the same letter on every row."""

    def __init__(self) -> None:
        self._letters: dict[str, str] = {}

    def letter(self, event: Event) -> str:
        found = self._letters.get(event.id)
        if found is None:
            index = len(self._letters)
            found = _LETTERS[index % len(_LETTERS)] + (
                str(index // len(_LETTERS)) if index >= len(_LETTERS) else ""
            )
            self._letters[event.id] = found
        return found

    def __call__(self, value: Any) -> str:
        if isinstance(value, Event):
            return self.letter(value)
        if isinstance(value, Outcome):
            return self._block(value.events) if value.events else _BREAKER_WORDS.get(value.kind, "")
        if isinstance(value, DeadLetter):
            return self._block(value.events)
        if isinstance(value, tuple | list):
            return self._block(value)
        if isinstance(value, bool | int | float | str):
            return str(value)[:8]
        return repr(value)[:8]

    def _block(self, items: Sequence[Any]) -> str:
        parts = [self(item) for item in items]
        return "".join(parts) if all(len(part) == 1 for part in parts) else ",".join(parts)


def _default_color(value: Any) -> str | None:
    if isinstance(value, Outcome):
        return OUTCOME_COLORS.get(value.kind)
    if isinstance(value, DeadLetter):
        return OUTCOME_COLORS[OutcomeKind.DEAD_LETTERED]
    return None


def _stack_levels(xs: Sequence[float], widths: Sequence[float]) -> list[int]:
    """Lift a marble whose label would touch the label before it, so every label stays readable.

    ``widths`` are the labels' widths in data units; a marble goes on the lowest level where it
    clears the last label drawn there.
    """
    levels: list[int] = []
    right_edge: dict[int, float] = {}  # level -> right end of the last label drawn on it
    for x, width in zip(xs, widths, strict=True):
        level = 0
        while level < _MAX_LEVEL and x - width / 2 < right_edge.get(level, -math.inf):
            level += 1
        right_edge[level] = x + width / 2
        levels.append(level)
    return levels


def marbles(
    *timelines: Timeline,
    ax: Axes | None = None,
    label: Callable[[Any], str] | None = None,
    color: Callable[[Any], str | None] | None = None,
    title: str | None = None,
    origin: float | None = None,
    unit: str = "s",
) -> Axes:
    """Draw timelines as a marble diagram: one row per stream, first on top.

    Each item is a dot at the time it passed, labelled above (by default events get letters, the
    same event the same letter on every row; blocks show their letters together, ``"abc"``;
    :class:`~rxsinks.Outcome` marbles are coloured by kind: delivered green, failed red,
    dead-lettered black, breaker transitions orange/yellow/cyan). A bar marks where a stream
    completed and a red x where it failed. A marble whose label would overlap the label before it
    is lifted a little (up to three levels), so that bursts stay readable.

    Args:
        timelines: the streams to draw.
        ax: the matplotlib Axes to draw on; by default a new figure sized for the rows.
        label: text of each marble from its value (return ``""`` for none).
        color: colour of each marble from its value; ``None`` gives the row's colour.
        title: the Axes title.
        origin: the time drawn as 0; by default the earliest time recorded on any row.
        unit: the time unit shown on the x axis (``"s"``, or ``"ticks"`` with a
            ``TestScheduler``).

    Returns:
        The Axes drawn on. Items are one scatter collection per row (gid ``"marbles:items"``),
        completions and errors are lines with gid ``"marbles:completed"`` / ``"marbles:error"``.

    Raises:
        ValueError: no timeline was given.
        TypeError: an argument is not a :class:`Timeline`.
        ImportError: matplotlib is not installed (``pip install 'rxsinks[notebook]'``).
    """
    if not timelines:
        raise ValueError("marbles() needs at least one Timeline")
    for name, function in (("label", label), ("color", color)):
        if function is not None and not callable(function):
            raise TypeError(
                f"marbles(): {name}= takes a function of a marble's value, got {function!r}"
                + ("; use title= for the chart's title" if name == "label" else "")
            )
    for position, timeline in enumerate(timelines):
        if not isinstance(timeline, Timeline):
            raise TypeError(
                f"marbles() takes Timeline objects; argument {position} is "
                f"{type(timeline).__name__} ({timeline!r})"
            )
    plt = _pyplot()
    from matplotlib.lines import Line2D

    name_of = label or _Labels()
    colour_of = color or _default_color
    rows = len(timelines)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.85 * rows + 1.3), layout="constrained")
    assert ax is not None
    moments = [when for timeline in timelines for when, _ in timeline.items]
    moments += [when for timeline in timelines if (when := timeline.ended_at) is not None]
    zero = origin if origin is not None else (min(moments) if moments else 0.0)
    span = max((max(moments) - zero) if moments else 1.0, 1e-9)
    axes_inches = ax.get_window_extent().width / ax.figure.dpi
    char_width = _CHAR_INCHES / max(axes_inches, 1.0) * span * 1.1  # xlim spans 1.1 * span
    kinds_seen: dict[OutcomeKind, None] = {}

    for row, timeline in enumerate(timelines):
        y = rows - 1 - row
        row_colour = _ROW_COLOURS[row % len(_ROW_COLOURS)]
        ax.plot([0.0, span * 1.04], [y, y], color="0.6", lw=1, zorder=1, gid="marbles:axis")
        xs = [when - zero for when, _ in timeline.items]
        texts = [name_of(value) for _, value in timeline.items]
        widths = [max(len(text), 1) * char_width for text in texts]
        ys = [y + _LEVEL_STEP * level for level in _stack_levels(xs, widths)]
        colours = []
        for _, value in timeline.items:
            colours.append(colour_of(value) or row_colour)
            if isinstance(value, Outcome):
                kinds_seen[value.kind] = None
        ax.scatter(
            xs,
            ys,
            s=60,
            c=colours or row_colour,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            gid="marbles:items",
        )
        for x, y_item, text in zip(xs, ys, texts, strict=True):
            if text:
                ax.annotate(
                    text,
                    (x, y_item),
                    xytext=(0, 5),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    zorder=5,
                    # readable over a completion bar or the row's line
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"},
                )
        if timeline.completed_at is not None:
            x = timeline.completed_at - zero
            ax.plot(
                [x, x],
                [y - 0.18, y + 0.18],
                color="black",
                lw=2.5,
                zorder=2,  # under a marble emitted at the same instant, like "(j|)"
                gid="marbles:completed",
            )
        if timeline.error_at is not None:
            x = timeline.error_at - zero
            ax.plot(
                [x],
                [y],
                marker="x",
                ms=12,
                mew=3,
                color="tab:red",
                ls="",
                zorder=4,
                gid="marbles:error",
            )
            ax.annotate(
                type(timeline.error).__name__,
                (x, y),
                xytext=(0, -14),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=8,
                color="tab:red",
            )

    ax.set_yticks(range(rows), [timeline.label for timeline in reversed(timelines)])
    ax.set_ylim(-0.6, rows - 0.2)
    ax.set_xlim(-span * 0.04, span * 1.06)
    ax.set_xlabel(f"time ({unit}) since the first marble" if origin is None else f"time ({unit})")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    if title:
        ax.set_title(title)
    if kinds_seen:
        handles: list[Artist] = [
            Line2D([], [], marker="o", ls="", color=OUTCOME_COLORS[kind], label=kind.value)
            for kind in kinds_seen
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return ax


def plot_outcomes(records: OutcomeRecorder, ax: Sequence[Axes] | None = None) -> Figure:
    """Draw what an endpoint went through, over time, in three panels sharing the time axis.

    1. pending events (the registry's *Pending* gauge, as sampled);
    2. the breaker's state (closed / half open / open), switching at the exact moments;
    3. running totals: attempts, failed attempts, events delivered and events dead-lettered.

    Args:
        records: an :class:`OutcomeRecorder` (stopped or still recording).
        ax: three Axes to draw on, top to bottom; by default a new figure.

    Returns:
        The figure drawn on.

    Raises:
        TypeError: ``records`` is not an :class:`OutcomeRecorder`.
        ValueError: ``ax`` is not three Axes.
        ImportError: matplotlib is not installed (``pip install 'rxsinks[notebook]'``).
    """
    if not isinstance(records, OutcomeRecorder):
        raise TypeError(
            f"plot_outcomes() takes an OutcomeRecorder, got {type(records).__name__}; "
            "record with OutcomeRecorder(endpoint) while the events flow"
        )
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, created = plt.subplots(
            3, 1, sharex=True, figsize=(10, 6.5), layout="constrained", height_ratios=(3, 1.4, 3)
        )
        axes: list[Axes] = list(created)
    else:
        axes = list(ax)
        if len(axes) != 3:
            raise ValueError(f"plot_outcomes() draws three panels: pass 3 Axes, got {len(axes)}")
    from matplotlib.figure import Figure

    parent = axes[0].figure
    # Axes inside a subfigure belong to it; return the figure that is shown
    figure = parent if isinstance(parent, Figure) else parent.figure
    start = records.start
    end = max(records.samples[-1][0], records.outcomes[-1][0] if records.outcomes else start)
    pending_ax, breaker_ax, totals_ax = axes

    times = [when - start for when, _ in records.samples]
    pending = [snapshot.pending for _, snapshot in records.samples]
    pending_ax.step(times, pending, where="post", color="tab:blue", gid="outcomes:pending")
    pending_ax.fill_between(times, pending, step="post", alpha=0.25, color="tab:blue")
    pending_ax.set_ylabel("pending events")
    pending_ax.set_ylim(bottom=0)
    pending_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    pending_ax.set_title(f"endpoint {records.endpoint.name!r}")

    state = BreakerState(records.samples[0][1].breaker)
    states_t, states_y = [0.0], [_BREAKER_LEVELS[state]]
    for when, outcome in records.outcomes:
        changed = _BREAKER_OF_KIND.get(outcome.kind)
        if changed is not None:
            states_t.append(when - start)
            states_y.append(_BREAKER_LEVELS[changed])
    states_t.append(end - start)
    states_y.append(states_y[-1])
    breaker_ax.step(states_t, states_y, where="post", color="tab:orange", gid="outcomes:breaker")
    breaker_ax.set_yticks(range(3), ["closed", "half open", "open"])
    breaker_ax.set_ylim(-0.3, 2.3)
    breaker_ax.set_ylabel("breaker")

    lines: dict[str, tuple[list[float], list[int], str]] = {
        "attempts": ([0.0], [0], "tab:gray"),
        "failed attempts": ([0.0], [0], "tab:red"),
        "events delivered": ([0.0], [0], "tab:green"),
        "events dead-lettered": ([0.0], [0], "black"),
    }
    for when, outcome in records.outcomes:
        steps: list[tuple[str, int]] = []
        if outcome.kind is OutcomeKind.DELIVERED:
            steps = [("attempts", 1), ("events delivered", len(outcome.events))]
        elif outcome.kind is OutcomeKind.FAILED:
            steps = [("attempts", 1), ("failed attempts", 1)]
        elif outcome.kind is OutcomeKind.DEAD_LETTERED:
            steps = [("events dead-lettered", len(outcome.events))]
        for name, amount in steps:
            xs, ys, _ = lines[name]
            xs.append(when - start)
            ys.append(ys[-1] + amount)
    for name, (xs, ys, colour) in lines.items():
        xs.append(end - start)
        ys.append(ys[-1])
        totals_ax.step(xs, ys, where="post", color=colour, label=f"{name} ({ys[-1]})", gid=name)
    totals_ax.set_ylabel("running total")
    totals_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    totals_ax.set_xlabel("seconds since recording started")
    totals_ax.legend(loc="upper left", fontsize=8)
    for panel in axes:
        panel.grid(True, alpha=0.3)
    return figure


def bar_counts(
    mapping: Mapping[str, int] | Mapping[str, Mapping[str, int]],
    ax: Axes | None = None,
    *,
    title: str | None = None,
    order: Sequence[str] | None = None,
    xlabel: str = "count",
) -> Axes:
    """Draw counts as horizontal bars, one bar per key, or grouped bars for nested mappings.

    ``{"push": 9, "pull": 5}`` draws two bars. ``{"endpoint a": {"push": 9, "pull": 5},
    "endpoint b": {"push": 9}}`` draws one group per outer key and one coloured series per inner
    key (missing counts are 0), with a legend. Bars are labelled with their counts (zeros are
    left unlabelled); the first key is drawn on top.

    Args:
        mapping: counts (``collections.Counter`` works), or groups of counts.
        ax: the matplotlib Axes to draw on; by default a new figure sized for the bars.
        title: the Axes title.
        order: the order of the bars (plain counts) or of the series (groups), so that several
            charts give each key the same place and colour; keys not listed follow, in the order
            first seen; listed keys that are absent count 0.
        xlabel: the label of the count axis.

    Returns:
        The Axes drawn on; each series is one bar container in ``ax.containers``.

    Raises:
        TypeError: ``mapping`` is not a mapping, a count is not an int, or groups and plain
            counts are mixed.
        ValueError: ``mapping`` is empty.
        ImportError: matplotlib is not installed (``pip install 'rxsinks[notebook]'``).
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(
            f"bar_counts() takes a mapping of counts (a dict or a Counter), got {mapping!r}"
        )
    if not mapping:
        raise ValueError("bar_counts() needs at least one count; the mapping is empty")
    table = _count_table(mapping)
    grouped = "" not in table
    series = list(dict.fromkeys([*(order or ()), *(key for row in table.values() for key in row)]))
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        height = len(table) * (0.2 * len(series) + 0.3) if grouped else 0.35 * len(series)
        _, ax = plt.subplots(figsize=(9, height + 1.1), layout="constrained")
    assert ax is not None
    if grouped:
        names = list(table)
        width = 0.8 / len(series)
        for index, key in enumerate(series):
            # the y axis is inverted below, so the first series is drawn on top of its group
            offset = (index - (len(series) - 1) / 2) * width
            positions = [group + offset for group in range(len(names))]
            values = [table[name].get(key, 0) for name in names]
            bars = ax.barh(positions, values, height=width * 0.92, label=key, color=f"C{index}")
            ax.bar_label(bars, labels=_count_labels(values), padding=2, fontsize=8)
        ax.set_yticks(range(len(names)), names)
        ax.legend(loc="lower right", fontsize=8)
    else:
        values = [table[""].get(key, 0) for key in series]
        bars = ax.barh(range(len(series)), values, color="C0")
        ax.bar_label(bars, labels=_count_labels(values), padding=2, fontsize=8)
        ax.set_yticks(range(len(series)), series)
    ax.invert_yaxis()  # first key on top, as it reads
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.margins(x=0.1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def _count_table(mapping: Mapping[Any, Any]) -> dict[str, dict[str, int]]:
    """Check and normalise counts: group -> key -> count, with group ``""`` for plain counts."""
    groups: dict[str, Mapping[Any, Any]] = {}
    plain: dict[Any, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            groups[str(key)] = value
        else:
            plain[key] = value
    if groups and plain:
        raise TypeError("bar_counts(): either every value is a count or every value is a mapping")
    table: dict[str, dict[str, int]] = {}
    for group, counts in (groups or {"": plain}).items():
        row = table[group] = {}
        for key, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int):
                where = f"{group!r} -> {key!r}" if group else repr(key)
                raise TypeError(f"bar_counts(): the count of {where} is not an int: {count!r}")
            row[str(key)] = count
    return table


def _count_labels(values: Sequence[int]) -> list[str]:
    return [str(value) if value else "" for value in values]
