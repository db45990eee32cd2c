"""Fakes shared by the operator tests, modelled on go-events' ``common_test.go``.

* :class:`ScriptedSink`: a virtual-time sink (the sink contract of ``rxsinks.deliver``): each
  attempt takes a number of ticks (it returns a cold observable that completes or errors then;
  with 0 ticks it returns or raises at once), failing the attempts a script says should fail.
  It records every attempt with its virtual time.
* :class:`RawSource`: a source that keeps the *raw* observers subscribed to it (reactivex wraps
  observers in an ``AutoDetachObserver`` that swallows writes after completion, which would hide
  what a stage itself does on a write after close).
* :func:`check_close`: first close ok, write after close raises the shared ``SINK_CLOSED``,
  second close harmless.
* :func:`run_threads`: start writer threads together (a barrier) and await them from a coroutine.
* :func:`make_event`: an event with a predictable id; :func:`ids`: the ids of events or blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import pytest
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.testing import TestScheduler

from rxsinks._event import Event
from rxsinks._exceptions import SINK_CLOSED, SinkClosedError

__all__ = [
    "FailScript",
    "RawSource",
    "ScriptedSink",
    "Unreliable",
    "check_close",
    "ids",
    "make_event",
    "run_threads",
]

_T = TypeVar("_T")

FailScript = Sequence[bool] | Callable[[int], bool]
"""Which attempts fail: ``script[n]`` (True = fail) for the n-th attempt (0-based), every attempt
past the end succeeds; or a function of the attempt number."""


class Unreliable(Exception):
    """The error a scripted fake fails with, numbered by attempt."""


def make_event(index: int, action: str = "push", **target: Any) -> Event:
    """An event whose id is ``e<index>``, so tests can compare by id."""
    return Event.new(action, target={"repository": f"repo/{index}", **target}, id=f"e{index}")


def _fails(script: FailScript, attempt: int) -> bool:
    if callable(script):
        return script(attempt)
    return attempt < len(script) and script[attempt]


class ScriptedSink(Generic[_T]):
    """A virtual-time sink taking ``ticks`` ticks per attempt, failing as ``fails`` says.

    With ``ticks == 0`` an attempt finishes inside the call (a failure raises, as a plain
    synchronous sink would); otherwise the call returns a cold observable that completes (or
    errors) ``ticks`` later. A failing attempt fails with ``error(attempt)``, an
    :class:`Unreliable` by default.

    Attributes:
        attempts: ``(virtual time, item)`` of every attempt, in order.
        settled: ``(virtual time, item, error)`` of every finished attempt.
        delivered: the items whose attempt succeeded, in order.
    """

    def __init__(
        self,
        scheduler: TestScheduler,
        *,
        ticks: float = 0,
        fails: FailScript = (),
        error: Callable[[int], BaseException] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.ticks = ticks
        self.fails = fails
        self.error = error or (lambda n: Unreliable(f"attempt {n} failed"))
        self.attempts: list[tuple[float, _T]] = []
        self.settled: list[tuple[float, _T, BaseException | None]] = []
        self.delivered: list[_T] = []

    @property
    def attempt_times(self) -> list[float]:
        """The virtual time of each attempt."""
        return [time for time, _ in self.attempts]

    def __call__(self, value: _T) -> Observable[Any] | None:
        attempt = len(self.attempts)
        self.attempts.append((self.scheduler.clock, value))
        error = self.error(attempt) if _fails(self.fails, attempt) else None
        if self.ticks == 0:
            self._finish(value, error)
            if error is not None:
                raise error
            return None

        def subscribe(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def finish(_: abc.SchedulerBase, __: Any = None) -> None:
                self._finish(value, error)
                if error is None:
                    observer.on_completed()
                else:
                    observer.on_error(error)  # type: ignore[arg-type]

            return self.scheduler.schedule_relative(self.ticks, finish)

        return Observable(subscribe)

    def _finish(self, value: _T, error: BaseException | None) -> None:
        self.settled.append((self.scheduler.clock, value, error))
        if error is None:
            self.delivered.append(value)


class RawSource(Observable[_T], Generic[_T]):
    """A source that keeps every observer subscribed to it, unwrapped, in :attr:`observers`."""

    def __init__(self) -> None:
        super().__init__()
        self.observers: list[abc.ObserverBase[_T]] = []

    def subscribe(
        self,
        on_next: abc.ObserverBase[_T] | Callable[[_T], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        assert isinstance(on_next, abc.ObserverBase), "RawSource takes observers only"
        self.observers.append(on_next)
        return Disposable()

    @property
    def observer(self) -> abc.ObserverBase[_T]:
        """The one observer subscribed."""
        assert len(self.observers) == 1, f"{len(self.observers)} observers subscribed"
        return self.observers[0]


def check_close(write: Callable[[], object], close: Callable[[], object]) -> None:
    """go-events' ``checkClose``: close, write (must raise ``SINK_CLOSED``), close again."""
    close()
    with pytest.raises(SinkClosedError) as raised:
        write()
    assert raised.value is SINK_CLOSED
    close()  # a second close is harmless: it must not raise


async def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``count`` threads released together; await them all.

    An exception in any thread is re-raised here, so a failed write fails the test.
    """
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported to the awaiting test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join()

    # join in a worker thread: the event loop must keep running to receive the writes
    await asyncio.to_thread(join_all)
    if errors:
        raise errors[0]


def ids(events: Iterable[Any]) -> list[str]:
    """The ids of events (or of the events in blocks), in order."""
    out: list[str] = []
    for item in events:
        if isinstance(item, tuple | list):
            out.extend(event.id for event in item)
        else:
            out.append(item.id)
    return out
