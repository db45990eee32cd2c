"""Handoffs and flush groups: how asynchronous stages talk back up a reactive pipeline.

Rx has no back-pressure: ``on_next`` returns nothing, so a queue cannot learn from the return
value when the stage below it has *finished* with an item (delivered it, or given up). rxsinks
stages need exactly that: a queue keeps one block in flight per endpoint and fires its egress hook
only when the delivery attempt is over, and a retry operator needs to know whether the sink below
it succeeded. Both are solved with a *handoff* offered during the synchronous ``on_next`` call:

* a stage that emits an item it cares about calls :func:`emit`, which offers a handoff while the
  downstream ``on_next`` runs;
* a stage below that finishes asynchronously calls :func:`hold` inside its ``on_next`` and takes
  the item over; it later calls :meth:`Handoff.settle` (with an exception on failure);
* if nobody holds the item, it counts as settled when ``on_next`` returns (with the exception it
  raised, if any). Plain ``reactivex.operators`` (``map``, ``filter``, ...) between two stages are
  transparent: the offer stays current while they call on.

Completion works the same way with *flush groups*: whoever completes a pipeline and wants to know
when it has flushed (``EventSubject.aclose``) opens a :class:`FlushGroup`; every asynchronous stage
that receives ``on_completed`` inside the group joins it with :func:`join_flush`, passes completion
on inside the group once it has flushed (:meth:`FlushToken.scope`), then leaves it. The group is
empty when every stage has flushed.

The offer and the group live in a thread-local: stages run on one event loop thread (writes from
other threads are marshalled onto it first), so there is never more than one chain of calls to
track per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from reactivex.observer.autodetachobserver import AutoDetachObserver

__all__ = [
    "FlushGroup",
    "FlushToken",
    "Handoff",
    "direct_emitter",
    "direct_on_next",
    "emit",
    "flush_scope",
    "hold",
    "isolated",
    "join_flush",
]

SettleCallback = Callable[[BaseException | None], None]


class _State(threading.local):
    offer: _Offer | None = None
    group: FlushGroup | None = None


_state = _State()


class _Offer:
    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: Handoff | None = None


class Handoff:
    """A stage's promise to settle an item it took over with :func:`hold`.

    Settling twice is harmless: only the first call counts.
    """

    __slots__ = ("_callback", "_error", "_settled")

    def __init__(self) -> None:
        self._callback: SettleCallback | None = None
        self._settled = False
        self._error: BaseException | None = None

    @property
    def settled(self) -> bool:
        """Whether :meth:`settle` was called."""
        return self._settled

    def settle(self, error: BaseException | None = None) -> None:
        """Report that the item is done with: delivered (``error is None``) or failed."""
        if self._settled:
            return
        self._settled = True
        self._error = error
        callback, self._callback = self._callback, None
        if callback is not None:
            callback(error)

    def _bind(self, callback: SettleCallback) -> None:
        # emit() learns of the hold only after on_next returned; a holder that settled
        # synchronously meanwhile is reported now, so emitters never see re-entrant settles.
        if self._settled:
            callback(self._error)
        else:
            self._callback = callback


class _Observer(Protocol):
    def on_next(self, value: Any, /) -> None: ...


def direct_on_next(observer: Any) -> Callable[[Any], None]:
    """The fastest way to call ``observer.on_next``.

    ``Observable.subscribe`` wraps every observer in a reactivex ``AutoDetachObserver``; when the
    wrapped observer is an rxsinks stage (which keeps its own stop state), hot paths call the
    stage directly and save a layer per item. Completion and errors still go through the wrapper.
    """
    if type(observer) is AutoDetachObserver:
        target = getattr(observer._on_next, "__self__", None)
        if getattr(target, "__rxsinks_stage__", False):
            return target.on_next  # type: ignore[no-any-return, union-attr]
    return observer.on_next  # type: ignore[no-any-return]


Emitter = Callable[[Any, SettleCallback], bool]


def direct_emitter(observer: Any) -> Emitter:
    """How a stage hands items to ``observer``: ``emitter(item, on_settled) -> bool``.

    When the observer is an rxsinks stage with an ``accept(item, on_settled)`` method (behind
    reactivex's ``AutoDetachObserver`` or not), that method is called directly: no offer, no
    thread-local, no :class:`Handoff` object. ``accept`` never raises, and either

    * returns ``True``: the item was delivered before ``accept`` returned, and ``on_settled`` is
      never called (the caller settles it as a success itself: the common, synchronous case
      costs no callback per stage), or
    * returns ``False``: ``on_settled`` is called exactly once, possibly before ``accept``
      returns.

    Anything else goes through :func:`emit` (and returns ``False``).
    """
    target = observer
    if type(observer) is AutoDetachObserver:
        inner = getattr(observer._on_next, "__self__", None)
        if getattr(inner, "__rxsinks_stage__", False):
            target = inner
    if getattr(target, "__rxsinks_stage__", False):
        accept = getattr(target, "accept", None)
        if accept is not None:
            return accept  # type: ignore[no-any-return]
    on_next = direct_on_next(observer)

    def emitter(item: Any, on_settled: SettleCallback) -> bool:
        emit(on_next, item, on_settled)
        return False

    return emitter


def emit(target: _Observer | Callable[[Any], None], item: Any, on_settled: SettleCallback) -> None:
    """Call ``target.on_next(item)`` offering a handoff (``target`` may also be the ``on_next``
    callable itself, as :func:`direct_on_next` returns).

    ``on_settled`` is called exactly once, never from inside ``on_next``: right after it returns
    if nobody held the item (with the exception ``on_next`` raised, if any: a raising observer is
    a failed attempt, never an exception in the caller), or later, when the holder settles.
    """
    on_next: Callable[[Any], None] = getattr(target, "on_next", target)  # type: ignore[arg-type]
    state = _state
    offer = _Offer()
    outer = state.offer
    state.offer = offer
    error: BaseException | None = None
    try:
        on_next(item)
    except Exception as exc:  # an observer's error is this item's outcome, not ours
        error = exc
    finally:
        state.offer = outer
    held = offer.held
    if held is None:
        on_settled(error)
        return
    if error is not None:
        # the holder took the item, then something after it raised: that is the outcome.
        held.settle(error)
    held._bind(on_settled)


def hold() -> Handoff | None:
    """Take over the item being delivered by the current ``on_next`` call.

    Returns a :class:`Handoff` to settle when done, or ``None`` when the caller upstream offered
    nothing (then the stage must finish on its own and report errors itself).
    """
    offer = _state.offer
    if offer is None or offer.held is not None:
        return None
    handoff = offer.held = Handoff()
    return handoff


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block with no offer current: for fan-out, where no single observer may hold."""
    outer = _state.offer
    _state.offer = None
    try:
        yield
    finally:
        _state.offer = outer


class FlushGroup:
    """Tracks the stages still flushing after a completion; see the module docstring."""

    def __init__(self) -> None:
        self._open: dict[int, Callable[[], int]] = {}
        self._next_id = 0
        self._listeners: list[Callable[[], None]] = []

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make this group current: stages completed inside it join it."""
        outer = _state.group
        _state.group = self
        try:
            yield
        finally:
            _state.group = outer

    @property
    def flushing(self) -> int:
        """How many stages have not finished flushing."""
        return len(self._open)

    def remaining(self) -> int:
        """Items still buffered in stages that have not finished flushing."""
        return sum(count() for count in self._open.values())

    def on_empty(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when no stage is flushing (at once if none is)."""
        if not self._open:
            callback()
        else:
            self._listeners.append(callback)

    def _join(self, remaining: Callable[[], int]) -> FlushToken:
        self._next_id += 1
        self._open[self._next_id] = remaining
        return FlushToken(self, self._next_id)

    def _leave(self, key: int) -> None:
        self._open.pop(key, None)
        if not self._open:
            listeners, self._listeners = self._listeners, []
            for callback in listeners:
                callback()


class FlushToken:
    """One stage's membership of a :class:`FlushGroup`."""

    __slots__ = ("_group", "_key")

    def __init__(self, group: FlushGroup, key: int) -> None:
        self._group = group
        self._key = key

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Re-enter the group, so stages completed from here join it too."""
        with self._group.active():
            yield

    def done(self) -> None:
        """Leave the group: this stage has flushed."""
        self._group._leave(self._key)


def join_flush(remaining: Callable[[], int] = lambda: 0) -> FlushToken | None:
    """Join the current flush group (if any) from inside ``on_completed``.

    ``remaining`` reports how many items the stage still holds, for close reports.
    """
    group = _state.group
    return None if group is None else group._join(remaining)


@contextmanager
def flush_scope(token: FlushToken | None) -> Iterator[None]:
    """Pass completion on inside ``token``'s group (or outside any group when ``None``)."""
    outer = _state.group
    _state.group = None if token is None else token._group
    try:
        yield
    finally:
        _state.group = outer
