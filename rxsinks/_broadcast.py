"""Fan-out: one source, many members, each isolated from the others; and knowing when they
have all finished.

A :class:`Broadcast` is a hot subject with the go-events broadcaster's manners: a raising member
is logged and never stops the item for the others nor reaches the producer; a member answering
:class:`~rxsinks.SinkClosedError` is removed; items written while an item is being handed out
(by a member, re-entrantly, or by another thread) are queued and handed out next, in order, to
every member.

It also knows when its members have *finished* after completion, which Rx alone cannot say (it
pushes, and completion returns at once even where work goes on). A subscription counts as
finished:

* for an observer subscribed directly (``broadcast.subscribe(observer)``): once its
  ``on_completed`` (or ``on_error``) returned, and, if it has a ``drained`` observable (an
  :class:`~rxsinks.Endpoint` and a :class:`~rxsinks.CallbackSink` do), once that completed;
* for a pipeline built with ``broadcast.pipe(...)``: once the observer at its end received the
  terminal notification, whatever operators (``observe_on``, ``delay``, a delivery stage...) sit
  in between, and again once that observer drained if it can say so;
* either way, once its subscription was disposed.

:meth:`Broadcast.when_finished` calls back when every subscription finished;
:meth:`~rxsinks.EventSubject.aclose` awaits it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.internal import noop

from ._exceptions import SINK_CLOSED, SinkClosedError

__all__ = ["Broadcast", "Pipeline", "broadcast"]

log = logging.getLogger("rxsinks.broadcast")

_T = TypeVar("_T")
_U = TypeVar("_U")
Member = abc.ObserverBase[Any] | Callable[[Any], None]

_COMPLETE = object()  # queued in place of an item: complete once what came before is out


def _as_observer(
    on_next: Any,
    on_error: Callable[[Exception], None] | None = None,
    on_completed: Callable[[], None] | None = None,
) -> Any:
    """An observer from what ``subscribe`` was given: an observer (duck-typed ones too) or
    callbacks."""
    if on_next is not None and not callable(on_next) and not hasattr(on_next, "on_next"):
        raise TypeError(f"expected an observer or a callable, got {type(on_next).__name__}")
    if on_next is not None and hasattr(on_next, "on_next"):
        return on_next
    return _Callbacks(on_next, on_error, on_completed)


class _Callbacks:
    """Callbacks as an observer, with no layer of its own: ``on_next`` *is* the callback."""

    __slots__ = ("_on_completed", "_on_error", "on_next")

    def __init__(
        self,
        on_next: Callable[[Any], None] | None,
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        self.on_next = on_next or noop
        self._on_error = on_error
        self._on_completed = on_completed

    def on_error(self, error: Exception) -> None:
        if self._on_error is None:
            log.error("broadcast subscriber failed: %s", error)
        else:
            self._on_error(error)

    def on_completed(self) -> None:
        if self._on_completed is not None:
            self._on_completed()


class _Ticket:
    """One subscription the broadcast waits for after completing (see the module docstring)."""

    __slots__ = ("_owner", "done", "observer", "stages")

    def __init__(self, owner: Broadcast[Any], observer: Any, stages: tuple[Any, ...] = ()) -> None:
        self._owner = owner
        self.observer = observer
        self.stages = stages  # operators of the pipeline that count what they hold
        self.done = False

    def terminated(self) -> None:
        """The observer received the terminal notification: wait for it to drain, if it can."""
        drained = getattr(self.observer, "drained", None)
        if isinstance(drained, Observable):
            drained.subscribe(on_error=lambda _: self.finish(), on_completed=self.finish)
        else:
            self.finish()

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self._owner._ticket_done(self)

    def pending(self) -> int:
        total = 0
        for holder in (self.observer, *self.stages):
            pending = getattr(holder, "pending", 0)
            total += pending if isinstance(pending, int) else 0
        return total


class _Member:
    """A member as the broadcast holds it: the observer, and its ticket."""

    __slots__ = ("observer", "on_next", "ticket")

    def __init__(self, observer: Any, ticket: _Ticket) -> None:
        self.observer = observer
        self.on_next: Callable[[Any], None] = observer.on_next
        self.ticket = ticket


class Broadcast(Observable[_T], abc.ObserverBase[_T], Generic[_T]):
    """A hot fan-out of one stream to many members, added and removed at run time.

    Each item goes to every member in the order they were added (see the module docstring for
    isolation, re-entrant writes and knowing when members finished). Completion reaches every
    member after every item written before it; after it, ``on_next`` raises
    :class:`~rxsinks.SinkClosedError` and members added later are completed at once.

    Two ways in, for two traditions:

    * :meth:`subscribe` is Rx's: every call is a subscription of its own with its own
      disposable (the same observer subscribed twice receives every item twice, and disposing
      one subscription leaves the other);
    * :meth:`add` and :meth:`remove` are go-events' broadcaster: adding the same member twice is
      a no-op, and ``remove`` takes the member.

    If the broadcast was built over a source, the first subscription (or :meth:`connect`)
    subscribes to it.
    """

    def __init__(self, *members: Member, source: Observable[_T] | None = None) -> None:
        super().__init__()
        self._source = source
        self._connection: abc.DisposableBase | None = None
        self._members: list[_Member] = []
        self._targets: tuple[Callable[[Any], None], ...] = ()
        self._added: dict[int, _Member] = {}  # id(member given to add()) -> its entry
        self._completed = False
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self._dispatching = False
        self._queued: deque[Any] = deque()
        self._tickets: set[_Ticket] = set()
        self._finished_callbacks: list[Callable[[], None]] = []
        for member in members:
            self.add(member)

    # -- members -------------------------------------------------------------------------------

    @property
    def members(self) -> tuple[object, ...]:
        """The members' observers, in the order they were added."""
        return tuple(member.observer for member in self._members)

    @property
    def is_stopped(self) -> bool:
        """Whether the stream completed or failed."""
        return self._completed

    def add(self, member: Member) -> abc.DisposableBase:
        """Add a member (an observer or an ``on_next`` callable); adding it again is a no-op.

        Returns:
            A disposable that removes the member.
        """
        entry = self._added.get(id(member))
        if entry is None or entry not in self._members:
            if not callable(member) and not hasattr(member, "on_next"):
                raise TypeError(f"a broadcast member must be an observer or callable: {member!r}")
            entry = self._attach(_as_observer(member))
            self._added[id(member)] = entry
        found = entry
        return Disposable(lambda: self._detach(found))

    def remove(self, member: object) -> bool:
        """Stop sending to a member added with :meth:`add`; False if it is not one."""
        entry = self._added.pop(id(member), None)
        if entry is None or entry not in self._members:
            return False
        self._detach(entry)
        return True

    def _attach(self, observer: Any, ticket: _Ticket | None = None) -> _Member:
        if ticket is None:
            ticket = _Ticket(self, observer)
            self._tickets.add(ticket)
        entry = _Member(observer, ticket)
        with self._lock:
            self._members.append(entry)
            self._targets = tuple(member.on_next for member in self._members)
        if self._completed:
            self._stop(entry)
        return entry

    def _detach(self, entry: _Member) -> None:
        with self._lock:
            if entry not in self._members:
                return
            self._members.remove(entry)
            self._targets = tuple(member.on_next for member in self._members)
        entry.ticket.finish()

    # -- the stream ----------------------------------------------------------------------------

    def on_next(self, value: _T) -> None:
        """Send ``value`` to every member (after anything being sent already)."""
        if self._completed:
            raise SINK_CLOSED
        with self._lock:
            if self._dispatching:
                self._queued.append(value)
                return
            self._dispatching = True
        self._dispatch(value)
        self._drain_queued()

    def _drain_queued(self) -> None:
        queued = self._queued
        while True:
            with self._lock:
                if not queued:
                    self._dispatching = False
                    return
                value = queued.popleft()
            if value is _COMPLETE:
                self._close()
            else:
                self._dispatch(value)

    def _dispatch(self, value: Any) -> None:
        for target in self._targets:
            try:
                target(value)
            except SinkClosedError:
                self._remove_target(target)
            except Exception:
                log.exception("broadcast member %r raised; other members unaffected", target)

    def _remove_target(self, target: Callable[[Any], None]) -> None:
        for entry in list(self._members):
            if entry.on_next == target:
                self._detach(entry)

    def on_error(self, error: Exception) -> None:
        """Fail every member (each flushes what it buffered first)."""
        if self._completed or self._error is not None:
            return
        self._error = error
        self._complete()

    def on_completed(self) -> None:
        """Complete every member (each flushes what it buffered first)."""
        self._complete()

    def _complete(self) -> None:
        with self._lock:
            if self._dispatching:
                self._queued.append(_COMPLETE)
                return
            self._dispatching = True
        self._close()
        self._drain_queued()

    def _close(self) -> None:
        if self._completed:
            return
        self._completed = True
        for entry in list(self._members):
            self._stop(entry)
        self._check_finished()

    def _stop(self, entry: _Member) -> None:
        try:
            if self._error is not None:
                entry.observer.on_error(self._error)
            else:
                entry.observer.on_completed()
        except Exception:
            log.exception("broadcast member %r raised on completion", entry.observer)
        entry.ticket.terminated()

    # -- knowing when members finished ---------------------------------------------------------

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the stream completed and every subscription finished (see the
        module docstring); at once if that is so already."""
        if self._completed and not self._tickets:
            callback()
        else:
            self._finished_callbacks.append(callback)

    @property
    def unfinished(self) -> int:
        """Subscriptions not finished yet."""
        return len(self._tickets)

    def remaining(self) -> int:
        """Events held by unfinished subscribers that report a ``pending`` count."""
        return sum(ticket.pending() for ticket in list(self._tickets))

    def _ticket_done(self, ticket: _Ticket) -> None:
        self._tickets.discard(ticket)
        self._check_finished()

    def _check_finished(self) -> None:
        if self._completed and not self._tickets and self._finished_callbacks:
            callbacks, self._finished_callbacks = self._finished_callbacks, []
            for callback in callbacks:
                callback()

    # -- Observable ----------------------------------------------------------------------------

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
        """Subscribe an observer (duck-typed ones too) or callbacks: a subscription of its own.

        Unlike ``Observable.subscribe``, the observer itself is called (not a wrapper around it),
        so nothing stands between the producer and each member.
        """
        entry = self._attach(_as_observer(on_next, on_error, on_completed))
        self.connect(scheduler)
        return Disposable(lambda: self._detach(entry))

    def _subscribe_core(
        self, observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        entry = self._attach(observer)
        self.connect(scheduler)
        return Disposable(lambda: self._detach(entry))

    if not TYPE_CHECKING:  # typed as Observable.pipe, whose overloads keep every item type

        def pipe(self, *operators):
            """Compose operators, as ``Observable.pipe``; the result is a :class:`Pipeline`,
            whose subscriptions this broadcast waits for (see the module docstring)."""
            return _compose(self, self, operators)


class Pipeline(Observable[_U], Generic[_U]):
    """A pipeline built on a :class:`Broadcast` with ``pipe``: an observable like any other,
    whose subscriptions the broadcast counts until the observer at the end has finished."""

    def __init__(
        self, origin: Broadcast[Any], observable: Observable[_U], stages: tuple[Any, ...] = ()
    ) -> None:
        super().__init__()
        self._origin = origin
        self._observable = observable
        self._stages = stages

    if not TYPE_CHECKING:  # typed as Observable.pipe (see Broadcast.pipe)

        def pipe(self, *operators):
            """Compose more operators; still a :class:`Pipeline` of the same broadcast."""
            return _compose(self._origin, self, operators)

    def subscribe(
        self,
        on_next: abc.ObserverBase[_U] | Callable[[_U], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        observer = _as_observer(on_next, on_error, on_completed)
        origin = self._origin
        ticket = _Ticket(origin, observer, self._stages)
        origin._tickets.add(ticket)
        watched: _Watched[_U] = _Watched(observer, ticket)
        subscription = self._observable.subscribe(watched, scheduler=scheduler)
        return CompositeDisposable(subscription, Disposable(ticket.finish))

    def _subscribe_core(
        self, observer: abc.ObserverBase[_U], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        return self.subscribe(observer, scheduler=scheduler)


def _compose(origin: Broadcast[Any], source: Any, operators: tuple[Any, ...]) -> Any:
    # each step is a Pipeline too, so an operator can tell that its source is hot (retry
    # refuses to re-subscribe one); an operator may also end a pipe with something else than an
    # observable (to_future, say)
    result = source
    stages: tuple[Any, ...] = source._stages if isinstance(source, Pipeline) else ()
    for operator in operators:
        if isinstance(getattr(operator, "pending", None), int):
            stages += (operator,)  # a delivery stage: close reports count what it holds
        result = operator(result)
        # only plain observables are wrapped: a subclass has a protocol of its own that a
        # Pipeline would hide (publish()'s ConnectableObservable must keep its connect())
        if type(result) is Observable:
            result = Pipeline(origin, result, stages)
    return result


class _Watched(abc.ObserverBase[_U]):
    """Passes everything on to the observer at a pipeline's end, noting the terminal one."""

    def __init__(self, observer: Any, ticket: _Ticket) -> None:
        self._observer = observer
        self._ticket = ticket
        self.on_next = observer.on_next  # type: ignore[method-assign]

    def on_next(self, value: _U) -> None:  # replaced per instance in __init__
        self._observer.on_next(value)

    def on_error(self, error: Exception) -> None:
        try:
            self._observer.on_error(error)
        finally:
            self._ticket.terminated()

    def on_completed(self) -> None:
        try:
            self._observer.on_completed()
        finally:
            self._ticket.terminated()


def broadcast(*members: Member) -> Callable[[Observable[_T]], Broadcast[_T]]:
    """Fan a stream out to ``members`` and to every subscriber, isolated from each other.

    The result is a :class:`Broadcast`: add and remove members at run time with ``add`` and
    ``remove``; an exception in one member never stops, slows or reorders the others or the
    producer.

    Members are observers, not sinks: to deliver, make a member a pipeline ending in
    :func:`~rxsinks.deliver` (whose sink returns when a block was delivered and raises when the
    attempt failed), or an :class:`~rxsinks.Endpoint`. Plain reactivex operators mix in before
    and after.

    Example:
        >>> from reactivex import operators as ops, subject
        >>> source = subject.Subject()
        >>> fan = source.pipe(ops.map(str.upper), broadcast(lambda s: print("member", s)))
        >>> _ = fan.subscribe(lambda s: print("subscriber", s))  # connects; a member too
        >>> source.on_next("a")
        member A
        subscriber A
        >>> fan = events.pipe(broadcast(alpha, beta))  # doctest: +SKIP
        >>> fan.subscribe(gamma)  # connects; gamma is a member too  # doctest: +SKIP
        >>> fan.remove(beta)  # doctest: +SKIP

    Marble diagram (members ``m1`` and ``m2``; ``m2`` raises on ``b``, which ``m1`` still
    gets)::

        -a-b-c-|
        [ broadcast(m1, m2) ]
        -a-b-c-|

    Args:
        members: observers (or ``on_next`` callables) to send every item to.

    Returns:
        An operator returning the :class:`Broadcast` over the source.
    """

    def operator(source: Observable[_T]) -> Broadcast[_T]:
        return Broadcast(*members, source=source)

    return operator
