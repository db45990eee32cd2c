"""Observers that end a pipeline: a function as an observer, and a collecting observer.

Delivery with a buffer, retries and outcomes is :func:`~rxsinks.deliver`'s job; these are for
the plain end of a pipeline: :class:`CallbackSink` calls a function (plain or ``async``) with
each item and lets the subject know when the last call finished; :class:`CollectingSink` keeps
everything, for notebooks and tests (and is a sink for :func:`~rxsinks.deliver` too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.subject import AsyncSubject

from ._exceptions import SINK_CLOSED
from ._queue import weight_of

__all__ = ["CallbackSink", "CollectingSink"]

log = logging.getLogger("rxsinks.sinks")

_T = TypeVar("_T")


class CallbackSink(abc.ObserverBase[_T], Generic[_T]):
    """Ends a pipeline in a function, plain or ``async``: the observer form of a sink.

    ``fn`` follows the sink contract of :func:`~rxsinks.deliver`: it returns, raises, or returns
    an awaitable or an observable, which is awaited (subscribed). An awaitable runs on the loop
    running where the call is made, else on the loop the sink was made on, so an item handed
    over on another thread (an ``observe_on`` above) is still awaited there. Items are
    not buffered nor retried: each call starts at once, and a failure is logged at WARNING with
    the item's size (use :func:`~rxsinks.deliver` for a buffer, retries and outcomes).

    Completion waits for every call still running, then calls ``on_completed`` once; an
    upstream error waits the same way, then calls ``on_error`` (or logs it at ERROR).
    :attr:`drained` completes after that, which is what
    :meth:`~rxsinks.EventSubject.aclose` waits for.

    Example:
        >>> async def post(event):
        ...     await client.post(url, json=event.to_dict())
        >>> subject.pipe(ops.filter(wanted)).subscribe(CallbackSink(post))  # doctest: +SKIP

    Args:
        fn: called with each item.
        on_completed: called once when the stream ended and the last call finished.
        on_error: called with the upstream error once the last call finished.
    """

    def __init__(
        self,
        fn: Callable[[_T], object],
        *,
        on_completed: Callable[[], Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallbackSink needs a callable, got {type(fn).__name__}")
        for name, callback in (("on_completed", on_completed), ("on_error", on_error)):
            if callback is not None and not callable(callback):
                raise TypeError(f"{name} must be callable, got {type(callback).__name__}")
        self._fn = fn
        self._on_completed = on_completed
        self._on_error = on_error
        # running calls -> how many events each carries (close reports count events)
        self._running: dict[int, int] = {}
        # items may arrive on another thread (an observe_on above); their awaitables still run
        # on the loop the sink was made on
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._error: Exception | None = None
        self._ended = False
        self._drained: AsyncSubject[None] = AsyncSubject()

    def __repr__(self) -> str:
        return f"CallbackSink({getattr(self._fn, '__qualname__', self._fn)!r})"

    @property
    def drained(self) -> Observable[None]:
        """Completes once the stream ended and every call finished."""
        return self._drained

    @property
    def pending(self) -> int:
        """Events in calls still running."""
        return sum(self._running.values())

    def on_next(self, value: _T) -> None:
        if self._stopped:
            raise SINK_CLOSED
        try:
            result = self._fn(value)
        except Exception as exc:
            self._failed(value, exc)
            return
        if result is None:
            return
        if isinstance(result, Observable):
            token = object()
            with self._lock:
                self._running[id(token)] = weight_of(value)
            result.subscribe(
                on_error=lambda exc: self._finished(token, value, exc),
                on_completed=lambda: self._finished(token, value, None),
            )
            return
        if inspect.isawaitable(result):
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            loop = running or self._loop
            if loop is None or loop.is_closed():
                if inspect.iscoroutine(result):
                    result.close()
                self._failed(value, _no_loop(self._fn))
                return
            future: asyncio.Future[Any] | concurrent.futures.Future[Any]
            if loop is running:
                future = asyncio.ensure_future(result, loop=loop)
            else:
                future = asyncio.run_coroutine_threadsafe(_awaited(result), loop)
            with self._lock:
                self._running[id(future)] = weight_of(value)
            future.add_done_callback(lambda done: self._task_done(done, value))

    def _task_done(
        self, future: asyncio.Future[Any] | concurrent.futures.Future[Any], value: _T
    ) -> None:
        error: BaseException | None
        if future.cancelled():
            error = asyncio.CancelledError("the call was cancelled")
        else:
            error = future.exception()
        self._finished(future, value, error)

    def _finished(self, token: object, value: _T, error: BaseException | None) -> None:
        with self._lock:
            self._running.pop(id(token), None)
            last = self._stopped and not self._running
        if error is not None:
            self._failed(value, error)
        if last:
            self._end()

    def _failed(self, value: _T, error: BaseException) -> None:
        log.warning(
            "callback sink %s failed on an item of %d event(s): %s",
            getattr(self._fn, "__qualname__", self._fn),
            weight_of(value),
            error,
        )

    def on_error(self, error: Exception) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._error = error
            idle = not self._running
        if idle:
            self._end()

    def on_completed(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            idle = not self._running
        if idle:
            self._end()

    def _end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        try:
            if self._error is not None:
                if self._on_error is not None:
                    self._on_error(self._error)
                else:
                    log.error("callback sink %r: the stream failed: %s", self, self._error)
            elif self._on_completed is not None:
                self._on_completed()
        finally:
            self._drained.on_completed()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _no_loop(fn: Callable[..., Any]) -> RuntimeError:
    name = getattr(fn, "__qualname__", repr(fn))
    return RuntimeError(
        f"{name}() returned an awaitable outside a running asyncio event loop, so nothing "
        "would run it; subscribe on the loop's thread, or give a plain function"
    )


class CollectingSink(abc.ObserverBase[_T], Generic[_T]):
    """Collects everything it receives: for notebooks, tests and exploration.

    It is an observer (``outcomes.subscribe(CollectingSink())``) and a sink for
    :func:`~rxsinks.deliver` (calling it appends, and always succeeds).

    Attributes:
        items: what arrived, in order (blocks stay blocks; see :attr:`flat`).
        error: the error the stream ended with, if any.
        completed: whether the stream ended.
    """

    def __init__(self) -> None:
        self.items: list[_T] = []
        self.error: Exception | None = None
        self.completed = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self.items)

    def __call__(self, value: _T) -> None:
        """Append ``value`` (the sink form)."""
        self.items.append(value)
        if self._waiters:
            self._wake()

    @property
    def flat(self) -> list[Any]:
        """Items with blocks (tuples and lists) flattened: the events, in order."""
        out: list[Any] = []
        for item in self.items:
            if isinstance(item, tuple | list):
                out.extend(item)
            else:
                out.append(item)
        return out

    def on_next(self, value: _T) -> None:
        if self.completed:
            raise SINK_CLOSED
        self.items.append(value)
        if self._waiters:
            self._wake()

    def on_error(self, error: Exception) -> None:
        self.error = error
        self.completed = True
        self._wake()

    def on_completed(self) -> None:
        self.completed = True
        self._wake()

    def _wake(self) -> None:
        count = len(self.items)
        still = []
        for wanted, waiter in self._waiters:
            if waiter.done():
                continue
            if count >= wanted or self.completed:
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
            else:
                still.append((wanted, waiter))
        self._waiters = still

    async def wait_for(self, count: int, timeout: float | None = 10.0) -> list[_T]:
        """Wait until ``count`` items arrived (or the stream ended); returns the items.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        if len(self.items) < count and not self.completed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((count, waiter))
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"{len(self.items)} of {count} items arrived within {timeout}s"
                ) from None
        return self.items

    async def wait_completed(self, timeout: float | None = 10.0) -> list[_T]:
        """Wait until the stream ended; returns the items."""
        return await self.wait_for(2**62, timeout) if not self.completed else self.items


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
