"""Marble diagrams as the operators' docstrings draw them, read back for tests.

A diagram is three rows after a line ending in ``::``: the input, the operator in brackets, the
output. Every character is one tick of virtual time, starting at 0: ``-`` nothing, ``|``
completion, ``#`` an error, any other character an item named by it, and ``(xy)`` several
notifications at the tick of its ``(`` (the group still takes its width in ticks). Whatever
follows three spaces on a row is a note for the reader.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reactivex import Observable, abc
from reactivex.testing import TestScheduler

__all__ = ["Diagram", "diagram_of", "parse", "run_marbles"]

Row = list[tuple[int, str]]
"""``(tick, symbol)`` in time order; ``|`` is completion, ``#`` an error."""

_NOTE = re.compile(r"\s{3,}.*$")


def parse(row: str) -> Row:
    """The notifications of one row."""
    row = _NOTE.sub("", row.strip())
    out: Row = []
    tick = 0
    index = 0
    while index < len(row):
        char = row[index]
        if char == "(":
            end = row.index(")", index)
            out.extend((tick, symbol) for symbol in row[index + 1 : end])
            width = end - index + 1
            tick += width
            index = end + 1
            continue
        if char != "-":
            out.append((tick, char))
        tick += 1
        index += 1
    return out


@dataclass(frozen=True)
class Diagram:
    """One marble diagram: its rows, and the operator line between them."""

    source: Row
    operator: str
    expected: Row


def diagram_of(function: Callable[..., Any]) -> Diagram:
    """The marble diagram in ``function``'s docstring (exactly one is expected)."""
    doc = inspect.getdoc(function) or ""
    lines = doc.splitlines()
    for number, line in enumerate(lines):
        if line.rstrip().endswith("::") and "arble" in line + "".join(
            lines[max(0, number - 3) : number]
        ):
            rows = [row.strip() for row in lines[number + 1 :] if row.strip()][:3]
            if len(rows) == 3 and rows[1].startswith("["):
                return Diagram(parse(rows[0]), rows[1], parse(rows[2]))
    raise AssertionError(f"no marble diagram in the docstring of {function.__qualname__}")


def run_marbles(
    source: Row,
    build: Callable[[Observable[Any], TestScheduler], Observable[Any]],
    *,
    value: Callable[[str], Any] = lambda symbol: symbol,
    symbol: Callable[[Any], str] = str,
    scheduler: TestScheduler | None = None,
    error: Exception | None = None,
) -> Row:
    """Run ``build(source)`` in virtual time and return what came out, as a row.

    The source is hot: each item of ``source`` is emitted at its tick (``value`` makes the item
    from its symbol); the pipeline is subscribed at tick 0. Items that come out are named with
    ``symbol``.
    """
    scheduler = scheduler or TestScheduler()
    base = 100.0
    subject_messages: list[tuple[int, str]] = list(source)
    got: Row = []
    observers: list[abc.ObserverBase[Any]] = []

    def subscribe(
        observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        observers.append(observer)
        from reactivex.disposable import Disposable

        return Disposable(lambda: observers.remove(observer) if observer in observers else None)

    hot: Observable[Any] = Observable(subscribe)

    def emit(tick_symbol: tuple[int, str]) -> Callable[[Any, Any], None]:
        _, sym = tick_symbol

        def action(_: Any, __: Any) -> None:
            for observer in list(observers):
                if sym == "|":
                    observer.on_completed()
                elif sym == "#":
                    observer.on_error(error or RuntimeError("marble error"))
                else:
                    observer.on_next(value(sym))

        return action

    for tick_symbol in subject_messages:
        scheduler.schedule_absolute(base + tick_symbol[0], emit(tick_symbol))

    def now() -> int:
        return round(scheduler.clock - base)

    def start(_: Any, __: Any) -> None:
        build(hot, scheduler).subscribe(
            lambda item: got.append((now(), symbol(item))),
            lambda _error: got.append((now(), "#")),
            lambda: got.append((now(), "|")),
            scheduler=scheduler,
        )

    scheduler.schedule_absolute(base, start)
    scheduler.start()
    return got
