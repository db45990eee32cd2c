"""Observer sinks for the end of a pipeline: a callback sink and a collecting sink."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from reactivex import abc

from ._exceptions import SINK_CLOSED
from ._flow import FlushToken, SettleCallback, hold, join_flush
from ._queue import weight_of

__all__ = ["CallbackSink", "CollectingSink"]

log = logging.getLogger("rxsinks.sinks")

_T = TypeVar("_T")


class CallbackSink(abc.ObserverBase[_T], Generic[_T]):
    """Ends a pipeline in a function, plain or ``async``.

    The function's outcome is the delivery's outcome: a stage above that retries (for example
    :func:`~rxsinks.retry_with_breaker`) sees an exception as a failed attempt, and a coroutine
    function is awaited before the item counts as delivered. Without such a stage, errors are
    logged, never raised into the producer. Completion waits for running coroutines (and joins
    the closing subject's flush), then calls ``on_completed``, if given.

    Example:
        >>> async def post(block):
        ...     await client.post(url, json=[e.to_dict() for e in block])
        >>> events.pipe(batch(50, 0.5), queue(), retry_with_breaker()).subscribe(CallbackSink(post))
        ... # doctest: +SKIP

    Args:
        fn: called with each item; may return an awaitable.
        on_completed: called once when the stream ends, after the last item finished.
    """

    __rxsinks_stage__ = True

    def __init__(
        self,
        fn: Callable[[_T], Awaitable[Any] | Any],
        *,
        on_completed: Callable[[], Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallbackSink needs a callable, got {fn!r}")
        self._fn = fn
        self._on_completed = on_completed
        # running deliveries -> how many events each carries (close reports count events)
        self._tasks: dict[asyncio.Task[Any], int] = {}
        self._completed = False
        self._flush: FlushToken | None = None

    def on_next(self, value: _T) -> None:
        handoff = hold()
        if handoff is None and self._completed:
            raise SINK_CLOSED
        settle = None if handoff is None else handoff.settle
        if self.accept(value, settle) and handoff is not None:
            handoff.settle(None)

    def accept(self, value: _T, handoff: SettleCallback | None) -> bool:
        """Deliver ``value``: True when done at once, else ``handoff`` is settled (``_flow``)."""
        if self._completed:
            if handoff is not None:
                handoff(SINK_CLOSED)
            return False
        try:
            result = self._fn(value)
        except Exception as exc:
            self._failed(handoff, exc)
            return False
        if result is not None and inspect.isawaitable(result):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                # nothing would ever run it: say so rather than drop the item silently
                if inspect.iscoroutine(result):
                    result.close()
                self._failed(handoff, _no_loop(self._fn))
                return False
            task = asyncio.ensure_future(result, loop=loop)
            self._tasks[task] = weight_of(value)
            task.add_done_callback(lambda done: self._task_done(done, handoff))
            return False
        return True

    def _task_done(self, task: asyncio.Task[Any], handoff: SettleCallback | None) -> None:
        self._tasks.pop(task, None)
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            error = asyncio.CancelledError()
        if error is None:
            if handoff is not None:
                handoff(None)
        else:
            self._failed(handoff, error)
        if self._completed and not self._tasks:
            self._finish()

    def _failed(self, handoff: SettleCallback | None, error: BaseException) -> None:
        if handoff is not None:
            handoff(error)
        else:
            log.error("callback sink %r failed: %s", self._fn, error)

    def on_error(self, error: Exception) -> None:
        log.error("callback sink %r: stream failed: %s", self._fn, error)
        self.on_completed()

    def on_completed(self) -> None:
        if self._completed:
            return
        self._completed = True
        self._flush = join_flush(lambda: sum(self._tasks.values()))
        if not self._tasks:
            self._finish()

    def _finish(self) -> None:
        token, self._flush = self._flush, None
        try:
            if self._on_completed is not None:
                self._on_completed()
        finally:
            if token is not None:
                token.done()


def _no_loop(fn: Callable[..., Any]) -> RuntimeError:
    name = getattr(fn, "__qualname__", repr(fn))
    return RuntimeError(
        f"{name}() returned an awaitable outside a running asyncio event loop, so nothing "
        "would run it; deliver on the loop's thread, or give a plain function"
    )


class CollectingSink(abc.ObserverBase[_T], Generic[_T]):
    """Collects everything it receives: for notebooks, tests and exploration.

    Attributes:
        items: what arrived, in order (blocks stay blocks; see :attr:`flat`).
        error: the error the stream ended with, if any.
        completed: whether the stream ended.
    """

    __rxsinks_stage__ = True

    def __init__(self) -> None:
        self.items: list[_T] = []
        self.error: Exception | None = None
        self.completed = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self.items)

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
        self._wake()

    def on_error(self, error: Exception) -> None:
        self.error = error
        self.completed = True
        self._wake()

    def on_completed(self) -> None:
        self.completed = True
        self._wake()

    def _wake(self) -> None:
        if not self._waiters:
            return
        count = len(self.items)
        still = []
        for wanted, waiter in self._waiters:
            if waiter.done():
                continue
            if count >= wanted or self.completed:
                waiter.set_result(None)
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
