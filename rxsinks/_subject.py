"""The entry point: a subject of events that producers write to from any thread or coroutine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from ._broadcast import Broadcast, Member
from ._event import Event
from ._exceptions import SINK_CLOSED, SinkClosedError

__all__ = ["CloseReport", "EventSubject"]

log = logging.getLogger("rxsinks.subject")


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What :meth:`EventSubject.aclose` found.

    Attributes:
        flushed: every subscription finished (delivered or dead-lettered everything) before the
            deadline.
        remaining: events still held by subscribers that had not finished and say how many
            they hold (an :class:`~rxsinks.Endpoint` does).
        stages: how many subscriptions had not finished.
    """

    flushed: bool
    remaining: int = 0
    stages: int = 0


class EventSubject(Broadcast[Event]):
    """Where events enter: a hot, closable fan-out of :class:`~rxsinks.Event` to pipelines.

    Write with :meth:`on_next` (or :meth:`write`) from the event loop, from any coroutine, or from
    any other thread: writes from other threads are handed to the loop with
    ``call_soon_threadsafe``, so nothing is lost and each producer's writes keep their order.
    A write made while an event is being handed out (a subscriber writing back, re-entrantly)
    is queued and handed to every subscriber after it, in order; it never deadlocks, with a loop
    or without one. Subscribers are isolated from each other and from the producer, and every
    ``subscribe`` is a subscription of its own (see :class:`~rxsinks.Broadcast`).

    :meth:`aclose` completes the stream and returns once every subscription has *finished*: a
    pipeline built with ``subject.pipe(...)`` once the observer at its end received completion
    (so a delivery stage has delivered or given up everything, whatever operators sit in
    between), an observer subscribed directly once its ``on_completed`` returned and, if it has
    a ``drained`` observable (an :class:`~rxsinks.Endpoint`, a :class:`~rxsinks.CallbackSink`),
    once that completed. A write after close raises :class:`~rxsinks.SinkClosedError`; closing
    twice is harmless.

    Args:
        members: observers to subscribe at once.
        loop: the event loop pipelines run on; by default the loop running when the subject is
            created or first written to from a coroutine.
    """

    def __init__(self, *members: Member, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._loop_thread: int | None = None
        if loop is None:
            with contextlib.suppress(RuntimeError):
                self._bind(asyncio.get_running_loop())
        else:
            self._bind(loop)
        self._closing = False
        self._close_lock = threading.Lock()
        self._close_started = False
        super().__init__(*members)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # the loop's thread is known only if the loop runs in *this* thread: a loop running in
        # another thread (EventSubject(loop=...) built elsewhere) must not make this thread's
        # writes look local; until _late_bind learns the thread, every write is handed over
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                self._loop_thread = threading.get_ident()

    def _late_bind(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is None or self._loop is running:
            self._loop = running
            self._loop_thread = threading.get_ident()

    def _attach(self, observer: Any, ticket: Any = None) -> Any:
        # a subject created outside the loop learns it from its first subscriber on the loop at
        # the latest, so writes from other threads are handed over instead of running there
        if self._loop_thread is None:
            self._late_bind()
        return super()._attach(observer, ticket)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`aclose` was called."""
        return self._closing

    def on_next(self, value: Event) -> None:
        """Write one event. Never blocks on delivery.

        Raises:
            SinkClosedError: the subject was closed.
            TypeError: ``value`` is not an :class:`~rxsinks.Event`.
        """
        if self._closing:
            raise SINK_CLOSED
        if not isinstance(value, Event):
            raise TypeError(
                f"EventSubject takes rxsinks.Event objects, got {type(value).__name__}; "
                "wrap a dict with Event.from_dict(...)"
            )
        if self._loop_thread is None:
            self._late_bind()
        loop = self._loop
        if loop is not None and self._loop_thread != threading.get_ident():
            # checked again under the lock that close() sets _closing with: a write from another
            # thread is either refused or queued on the loop ahead of the completion, never
            # dispatched after it (where it would be dropped although on_next returned)
            with self._close_lock:
                if self._closing:
                    raise SINK_CLOSED
                try:
                    loop.call_soon_threadsafe(self._handed_over, value)
                except RuntimeError as exc:  # the loop was closed under us
                    raise SINK_CLOSED from exc
            return
        Broadcast.on_next(self, value)

    def _handed_over(self, value: Event) -> None:
        try:
            Broadcast.on_next(self, value)
        except SinkClosedError:
            # cannot happen: close() completes through the same loop queue, behind every write
            # accepted before it
            log.error("event %s arrived after completion; dropped", value.id)

    def write(self, *events: Event) -> None:
        """Write several events, in order.

        Raises:
            SinkClosedError: the subject was closed (even when no event is given).
        """
        if self._closing:
            raise SINK_CLOSED
        for event in events:
            self.on_next(event)

    def on_completed(self) -> None:
        """Same as :meth:`close`."""
        self.close()

    def on_error(self, error: Exception) -> None:
        """Fail every pipeline (each delivers what it accepted first); the subject is closed."""
        self._start_close(error)

    def close(self) -> None:
        """Complete the stream without waiting for pipelines to finish (see :meth:`aclose`)."""
        self._start_close(None)

    def _start_close(self, error: Exception | None) -> None:
        with self._close_lock:
            if self._close_started:
                return
            self._close_started = True
            self._closing = True

        def complete() -> None:
            if error is None:
                Broadcast.on_completed(self)
            else:
                Broadcast.on_error(self, error)

        loop = self._loop
        if loop is not None and self._loop_thread != threading.get_ident():
            loop.call_soon_threadsafe(complete)
        elif loop is not None and loop.is_running():
            # through the loop's queue, behind every write another thread already handed over
            loop.call_soon(complete)
        else:
            complete()

    async def aclose(self, timeout: float | None = None) -> CloseReport:
        """Complete the stream and wait until every subscription has finished.

        Args:
            timeout: seconds to wait at most; ``None`` waits for as long as it takes.

        Returns:
            A :class:`CloseReport`; ``flushed`` is False if the deadline passed first.
        """
        if self._loop is None:
            self._bind(asyncio.get_running_loop())
        elif self._loop_thread is None:
            self._late_bind()
        self._start_close(None)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not finished.done():
                finished.set_result(None)

        def resolve_from_anywhere() -> None:
            # the last subscription may finish on another thread (a thread-based scheduler)
            loop.call_soon_threadsafe(resolve)

        # asked on the loop, behind the completion queued there
        loop.call_soon(self.when_finished, resolve_from_anywhere)
        try:
            await asyncio.wait_for(finished, timeout)
        except TimeoutError:
            return CloseReport(False, remaining=self.remaining(), stages=self.unfinished)
        return CloseReport(flushed=True)
