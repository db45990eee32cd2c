"""The entry point: a subject of events that producers write to from any thread or coroutine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

from reactivex import abc

from ._broadcast import Broadcast, Member
from ._event import Event
from ._exceptions import SINK_CLOSED
from ._flow import FlushGroup

__all__ = ["CloseReport", "EventSubject"]

log = logging.getLogger("rxsinks.subject")


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What :meth:`EventSubject.aclose` found.

    Attributes:
        flushed: every pipeline delivered (or dead-lettered) everything before the deadline.
        remaining: events still buffered or in flight in pipelines that had not flushed.
        stages: how many pipeline stages were still flushing.
    """

    flushed: bool
    remaining: int = 0
    stages: int = 0


class EventSubject(Broadcast[Event]):
    """Where events enter: a hot, closable fan-out of :class:`~rxsinks.Event` to pipelines.

    Write with :meth:`on_next` (or :meth:`write`) from the event loop, from any coroutine, or from
    any other thread: writes from other threads are handed to the loop with
    ``call_soon_threadsafe``, so nothing is lost and each producer's writes keep their order
    (trap 4). Subscribers are isolated from each other and from the producer (see
    :class:`Broadcast`).

    :meth:`aclose` completes the stream and returns once every subscribed pipeline has flushed
    (each endpoint delivered or dead-lettered what it had queued), or when its deadline passes,
    with a :class:`CloseReport` of what was left. A write after close raises
    :class:`~rxsinks.SinkClosedError`; closing twice is harmless.

    Args:
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
        self._lock = threading.Lock()
        self._group: FlushGroup | None = None
        self._flushed = False
        self._waiters: list[asyncio.Future[None]] = []
        # after the loop attributes: add() (called for each member) reads them
        super().__init__(*members)

    def add(self, member: Member, *, queued: bool = False) -> abc.DisposableBase:
        """Add a member, as :meth:`Broadcast.add`; from a coroutine, it also binds the loop.

        A subject created outside the loop learns it here at the latest, so that writes from
        other threads are handed over to the loop instead of running the members in the
        writer's thread.
        """
        if self._loop_thread is None:
            self._late_bind()
        return super().add(member, queued=queued)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # the loop's thread is known only if the loop runs in *this* thread: a loop running in
        # another thread (EventSubject(loop=...) built elsewhere) must not make this thread's
        # writes look local; until _late_bind learns the thread, every write is handed over
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                self._loop_thread = threading.get_ident()

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
        loop = self._loop
        if loop is None or self._loop_thread is None:
            self._late_bind()
            loop = self._loop
        if loop is not None and self._loop_thread != threading.get_ident():
            # checked again under the lock that close() sets _closing with: a write from another
            # thread is either refused or queued on the loop ahead of the completion, never
            # dispatched after it (where it would be dropped although on_next returned)
            with self._lock:
                if self._closing:
                    raise SINK_CLOSED
                try:
                    loop.call_soon_threadsafe(self._dispatch, value)
                except RuntimeError as exc:  # the loop was closed under us
                    raise SINK_CLOSED from exc
            return
        if loop is None:
            # no event loop anywhere: serialise writers ourselves
            with self._lock:
                self._dispatch(value)
            return
        self._dispatch(value)

    def _late_bind(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is None or self._loop is running:
            self._loop = running
            self._loop_thread = threading.get_ident()

    def write(self, *events: Event) -> None:
        """Write several events, in order."""
        for event in events:
            self.on_next(event)

    def _dispatch(self, value: Event) -> None:
        if self.is_stopped:
            # accepted before close() but dispatched after completion cannot happen: close()
            # completes through the same loop queue, behind every accepted write
            log.error("event %s arrived after completion; dropped", value.id)
            return
        Broadcast.on_next(self, value)

    def on_completed(self) -> None:
        """Same as :meth:`close`."""
        self.close()

    def on_error(self, error: Exception) -> None:
        """Fail every pipeline (each flushes first); the subject is closed afterwards."""
        self._start_close(error)

    def close(self) -> None:
        """Complete the stream without waiting for pipelines to flush (see :meth:`aclose`)."""
        self._start_close(None)

    def _start_close(self, error: Exception | None) -> None:
        with self._lock:
            if self._group is not None:
                return
            self._closing = True
            group = self._group = FlushGroup()

        def complete() -> None:
            with group.active():
                if error is None:
                    Broadcast.on_completed(self)
                else:
                    Broadcast.on_error(self, error)
            group.on_empty(self._mark_flushed)

        loop = self._loop
        if loop is not None and self._loop_thread != threading.get_ident():
            loop.call_soon_threadsafe(complete)
        elif loop is not None and loop.is_running():
            # through the loop's queue, behind every write another thread already handed over
            loop.call_soon(complete)
        else:
            with self._lock:
                complete()

    def _mark_flushed(self) -> None:
        self._flushed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def aclose(self, timeout: float | None = None) -> CloseReport:
        """Complete the stream and wait until every pipeline has flushed.

        Args:
            timeout: seconds to wait at most; ``None`` waits for as long as it takes.

        Returns:
            A :class:`CloseReport`; ``flushed`` is False if the deadline passed first.
        """
        if self._loop is None:
            self._bind(asyncio.get_running_loop())
        self._start_close(None)
        if not self._flushed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                group = self._group
                assert group is not None
                return CloseReport(False, remaining=group.remaining(), stages=group.flushing)
        return CloseReport(flushed=True)
