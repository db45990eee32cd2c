"""Fan-out: one source, many endpoint pipelines, each isolated from the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._exceptions import SINK_CLOSED, SinkClosedError
from ._flow import _state, direct_on_next
from ._queue import Lane, Queue, default_scheduler

__all__ = ["Broadcast", "broadcast"]

log = logging.getLogger("rxsinks.broadcast")

_T = TypeVar("_T")
Member = abc.ObserverBase[Any] | Callable[[Any], None]


def buffers_itself(observer: object) -> bool:
    """Whether an observer queues on its own (an Endpoint does), so fan-out need not."""
    return bool(getattr(observer, "__rxsinks_buffered__", False))


class _Direct(Generic[_T]):
    """A member called directly (the broadcast catches its errors)."""

    __slots__ = ("member", "on_next")

    def __init__(self, member: abc.ObserverBase[_T]) -> None:
        self.member = member
        self.on_next = direct_on_next(member)

    def on_error(self, error: Exception) -> None:
        self.member.on_error(error)

    def on_completed(self) -> None:
        self.member.on_completed()


class _Callbacks(abc.ObserverBase[_T]):
    """Callbacks as a member, with no layer of its own: ``on_next`` *is* the callback (the
    operators above a subject subscribe this way, once per event and endpoint)."""

    def __init__(
        self,
        on_next: Callable[[_T], None] | None,
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        self.on_next = on_next or _ignore  # type: ignore[method-assign, assignment]
        self._on_error = on_error
        self._on_completed = on_completed

    def on_next(self, value: _T) -> None:  # replaced per instance in __init__
        pass

    def on_error(self, error: Exception) -> None:
        if self._on_error is None:
            log.error("broadcast member failed: %s", error)
        else:
            self._on_error(error)

    def on_completed(self) -> None:
        if self._on_completed is not None:
            self._on_completed()


def _ignore(_: object) -> None:
    pass


class _CallbackObserver(abc.ObserverBase[_T]):
    def __init__(self, fn: Callable[[_T], None]) -> None:
        self._fn = fn

    def on_next(self, value: _T) -> None:
        self._fn(value)

    def on_error(self, error: Exception) -> None:
        log.error("broadcast member %r: stream failed: %s", self._fn, error)

    def on_completed(self) -> None:
        pass


class Broadcast(Observable[_T], abc.ObserverBase[_T], Generic[_T]):
    """A hot fan-out of one stream to many members, added and removed at run time.

    Each item goes to every member in the order they were added. Members are isolated from the
    producer and from each other (trap 1): an exception in a member is logged and never reaches
    the producer or stops the item for the others; a member that answers
    :class:`~rxsinks.SinkClosedError` is removed (the registry's go-events behaviour). No member
    can hold the producer: members are called with no handoff on offer, so an asynchronous sink
    runs its deliveries concurrently, and a pipeline that starts with :func:`queue` (an
    :class:`~rxsinks.Endpoint` does) only enqueues. ``add(member, queued=True)`` gives a member
    without a queue of its own a private one. Adding a member twice is a no-op.

    Completion reaches every member (each flushes its queue first); after it, ``on_next`` raises
    :class:`~rxsinks.SinkClosedError` and members added later are completed at once.

    Subscribing to a ``Broadcast`` adds the subscriber as a member; if the broadcast was built
    over a source, the first subscription (or :meth:`connect`) subscribes to it.
    """

    def __init__(
        self,
        *members: Member,
        source: Observable[_T] | None = None,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._scheduler = scheduler
        self._connection: abc.DisposableBase | None = None
        # member identity -> the observer actually called (direct or through a private lane)
        self._members: dict[int, tuple[object, abc.ObserverBase[_T] | _Direct[_T]]] = {}
        self._targets: tuple[abc.ObserverBase[_T] | _Direct[_T], ...] = ()
        self._completed = False
        self._error: Exception | None = None
        for member in members:
            self.add(member)

    @property
    def members(self) -> tuple[object, ...]:
        """The members, in the order they were added."""
        return tuple(member for member, _ in self._members.values())

    @property
    def is_stopped(self) -> bool:
        """Whether the stream completed or failed."""
        return self._completed

    def add(self, member: Member, *, queued: bool = False) -> abc.DisposableBase:
        """Add a member (an observer or an ``on_next`` callable); returns what removes it.

        Args:
            member: the observer.
            queued: give the member a private unbounded queue, one item in flight at a time
                (for an asynchronous sink that has no :func:`queue` of its own).
        """
        key = id(member)
        if key not in self._members:
            observer: abc.ObserverBase[_T]
            if isinstance(member, abc.ObserverBase) or hasattr(member, "on_next"):
                observer = member  # type: ignore[assignment]
            elif callable(member):
                observer = _CallbackObserver(member)
            else:
                raise TypeError(f"a broadcast member must be an observer or callable: {member!r}")
            target: abc.ObserverBase[_T] | _Direct[_T]
            if not queued or buffers_itself(member):
                target = _Direct(observer)
            else:
                lanes: Queue[_T] = Queue()
                lane = Lane(lanes, observer, self._scheduler or default_scheduler())
                # a queued member fails inside its lane, out of on_next's reach: the lane
                # reports which member it was, so one answering SinkClosedError is removed too
                lanes.on_failure = lambda item, error: self._member_failed(lane, item, error)
                target = lane
            self._members[key] = (member, target)
            self._targets = tuple(target for _, target in self._members.values())
            if self._completed:
                self._stop(target)

        def detach() -> None:
            self.remove(member)

        return Disposable(detach)

    def remove(self, member: object) -> bool:
        """Stop sending to a member (what it already buffered still goes); False if absent."""
        if self._members.pop(id(member), None) is None:
            return False
        self._targets = tuple(target for _, target in self._members.values())
        return True

    def on_next(self, value: _T) -> None:
        """Send ``value`` to every member."""
        if self._completed:
            raise SINK_CLOSED
        # no member may take over an offer made to the broadcast as a whole
        outer = _state.offer
        _state.offer = None
        try:
            for target in self._targets:
                try:
                    target.on_next(value)
                except SinkClosedError:
                    self._remove_target(target)
                except Exception:
                    log.exception("broadcast member %r raised; other members unaffected", target)
        finally:
            _state.offer = outer

    def on_error(self, error: Exception) -> None:
        """Fail every member (each flushes what it buffered first)."""
        self._error = error
        self._close()

    def on_completed(self) -> None:
        """Complete every member (each flushes what it buffered first)."""
        self._close()

    def _close(self) -> None:
        if self._completed:
            return
        self._completed = True
        for target in self._targets:
            self._stop(target)

    def _stop(self, target: abc.ObserverBase[_T] | _Direct[_T]) -> None:
        try:
            if self._error is not None:
                target.on_error(self._error)
            else:
                target.on_completed()
        except Exception:
            log.exception("broadcast member %r raised on completion", target)

    def _remove_target(self, target: object) -> None:
        for key, (_, candidate) in list(self._members.items()):
            if candidate is target:
                del self._members[key]
        self._targets = tuple(t for _, t in self._members.values())

    def _member_failed(self, target: object, item: Any, error: BaseException) -> None:
        if isinstance(error, SinkClosedError):
            self._remove_target(target)
            return
        log.warning("broadcast member failed on an item; other members unaffected: %s", error)

    def connect(self, scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        """Subscribe to the source now (the first subscription does it too); idempotent."""
        if self._source is None:
            return Disposable()
        if self._connection is None:
            self._connection = self._source.subscribe(self, scheduler=scheduler)
        return self._connection

    def subscribe(
        self,
        on_next: abc.ObserverBase[_T] | Callable[[_T], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Add an observer (or callbacks) as a member; see :meth:`add`.

        Unlike ``Observable.subscribe``, the observer itself becomes the member (not a wrapper
        around it), so subscribing twice is a no-op and :meth:`remove` finds it.
        """
        member: Member
        if isinstance(on_next, abc.ObserverBase):
            member = on_next
        else:
            member = _Callbacks(on_next, on_error, on_completed)
        subscription = self.add(member)
        self.connect(scheduler)
        return subscription

    def _subscribe_core(
        self, observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        subscription = self.add(observer)
        self.connect(scheduler)
        return subscription


def broadcast(
    *members: Member, scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[_T]], Broadcast[_T]]:
    """Fan a stream out to ``members`` and to every subscriber, isolated from each other.

    The result is a :class:`Broadcast`: add and remove members at run time with ``add`` and
    ``remove``; an exception or a slow asynchronous member never stops, slows or reorders the
    others or the producer.

    Example:
        >>> fan = events.pipe(broadcast(alpha, beta))  # doctest: +SKIP
        >>> fan.subscribe(gamma)  # connects; gamma is a member too  # doctest: +SKIP
        >>> fan.remove(beta)  # doctest: +SKIP

    Marble diagram (members m1 and m2; m2 raises on b)::

        --a--b--c--|
        [ broadcast(m1, m2) ]
        m1: --a--b--c--|
        m2: --a-----c--|

    Args:
        members: observers (or ``on_next`` callables) to send every item to.
        scheduler: where private member queues drain; by default the running asyncio loop.

    Returns:
        An operator returning the :class:`Broadcast` over the source.
    """

    def operator(source: Observable[_T]) -> Broadcast[_T]:
        return Broadcast(*members, source=source, scheduler=scheduler)

    return operator
