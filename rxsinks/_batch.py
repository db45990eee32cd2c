"""Grouping events into blocks: up to N events or T seconds, never an empty block."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable

from ._scheduling import default_scheduler

__all__ = ["batch"]

_T = TypeVar("_T")


def batch(
    max_events: int = 1,
    max_delay: float | None = None,
    *,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[_T]], Observable[tuple[_T, ...]]]:
    """Group items into blocks (tuples) of up to ``max_events``, waiting at most ``max_delay``.

    A block is emitted as soon as it holds ``max_events`` items, or ``max_delay`` seconds after
    its first item arrived, whichever comes first; an idle stream emits nothing (unlike
    ``reactivex.operators.buffer_with_time_or_count``, which emits empty lists when idle). On
    completion or error, the partial block is emitted first, so nothing is lost. With the
    defaults every item is its own block: the registry's one event per POST.

    Place it before :func:`~rxsinks.deliver`, so each delivery carries one block. The timer
    runs on the scheduler (outside a running loop, rxsinks' scheduler thread): ``on_next`` never
    waits for it.

    The sink contract: a sink is any callable taking one block; it returns when the block was
    delivered and raises when the attempt failed (or returns an awaitable or a cold observable
    that does the same); see :func:`~rxsinks.deliver`. Plain reactivex operators mix in
    anywhere, as the example shows.

    Example:
        >>> from reactivex import from_iterable, operators as ops
        >>> _ = from_iterable(range(5)).pipe(
        ...     ops.map(lambda n: n * 10),  # a plain reactivex operator
        ...     batch(2, None),
        ... ).subscribe(print)
        (0, 10)
        (20, 30)
        (40,)
        >>> events.pipe(batch(100, 0.2), deliver(post))  # doctest: +SKIP

    Marble diagram (``max_events=2``, ``max_delay`` = 4 ticks)::

        --a-b--c--------d-e-f-|
        [     batch(2, 4)     ]
        ----x------y------z---(w|)      x=(a,b) y=(c,) z=(d,e) w=(f,)

    Args:
        max_events: the most items in one block (>= 1).
        max_delay: seconds a partial block may wait for more items; ``None`` waits until it is
            full or the stream ends (only sensible with ``max_events > 1`` on a finite stream).
        scheduler: the clock for ``max_delay``; by default the running asyncio loop.

    Returns:
        An operator from items to blocks.
    """
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise ValueError(f"max_events must be an int >= 1, got {max_events!r}")
    if max_delay is not None and (
        isinstance(max_delay, bool) or not isinstance(max_delay, int | float) or max_delay < 0
    ):
        raise ValueError(f"max_delay must be seconds >= 0 or None, got {max_delay!r}")
    # None means "no timer"; 0 is a real bound: a partial block waits no time, so only the items
    # that arrive together (in the same scheduler turn) share a block
    delay = None if max_delay is None else float(max_delay)

    def operator(source: Observable[_T]) -> Observable[tuple[_T, ...]]:
        if max_events == 1:
            return _singles(source)

        def subscribe(
            observer: abc.ObserverBase[tuple[_T, ...]],
            scheduler_: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            clock = scheduler or scheduler_ or default_scheduler()
            block: list[_T] = []
            generation = 0
            timer = SerialDisposable()
            # the timer may fire on another thread than the producer's (outside a loop): the
            # lock keeps the block whole and the emissions in order
            lock = threading.RLock()

            def flush() -> None:
                nonlocal block, generation
                if not block:
                    return
                out, block = tuple(block), []
                generation += 1
                timer.disposable = None
                observer.on_next(out)

            def on_timer(_: abc.SchedulerBase, expected: Any) -> None:
                with lock:
                    if expected == generation:
                        flush()

            def on_next(item: _T) -> None:
                with lock:
                    block.append(item)
                    if len(block) >= max_events:
                        flush()
                    elif len(block) == 1 and delay is not None:
                        timer.disposable = clock.schedule_relative(delay, on_timer, generation)

            def on_error(error: Exception) -> None:
                with lock:
                    flush()
                    observer.on_error(error)

            def on_completed() -> None:
                with lock:
                    flush()
                    observer.on_completed()

            upstream = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            return CompositeDisposable(upstream, timer)

        return Observable(subscribe)

    return operator


def _singles(source: Observable[_T]) -> Observable[tuple[_T, ...]]:
    # one item per block: no timer, no buffer, the cheapest path (the registry's default)
    def subscribe(
        observer: abc.ObserverBase[tuple[_T, ...]], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        def on_next(item: _T) -> None:
            observer.on_next((item,))

        return source.subscribe(
            on_next, observer.on_error, observer.on_completed, scheduler=scheduler_
        )

    return Observable(subscribe)
