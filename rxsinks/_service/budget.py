"""The memory store's bounds: events accepted and not yet settled by every endpoint.

Without a durable store the relay holds accepted events in its endpoints' queues only; a
:class:`MemoryBudget` counts them (and their bytes) until every endpoint that took an event has
delivered, dead-lettered or dropped it, so that the ingest can refuse what would take the process
past ``store.maxevents`` and ``store.maxsize`` (503 with ``Retry-After``) instead of growing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from reactivex import abc

from .._event import Event
from .._exceptions import StoreFullError
from .._outcome import Outcome, OutcomeKind

__all__ = ["MemoryBudget", "Release"]


class MemoryBudget:
    """What the memory store holds: events accepted and not yet settled by every endpoint.

    Each accepted event is held until every endpoint that took it delivered, dead-lettered or
    dropped it (their outcomes say so); a request that would take the count or the bytes over
    the bounds is refused with :class:`StoreFullError`, one that is over them by itself with
    ``fits=False``.
    """

    def __init__(self, max_events: int | None, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.events = 0
        self.bytes = 0
        # id(event) -> [event, endpoints still holding it, bytes]; the event is kept so that its
        # id cannot be reused while it is counted
        self._held: dict[int, list[Any]] = {}

    def admit(self, events: Sequence[Event], takers: Sequence[int], sizes: Sequence[int]) -> None:
        count = sum(1 for taken in takers if taken)
        size = sum(size for size, taken in zip(sizes, takers, strict=True) if taken)
        if (self.max_events is not None and count > self.max_events) or size > self.max_bytes:
            raise StoreFullError(
                f"{count} events of {size} bytes are more than the memory store holds at all "
                f"(store.maxevents {self.max_events}, store.maxsize {self.max_bytes}); send "
                "fewer per request",
                fits=False,
            )
        if not count:
            pass
        elif self.max_events is not None and self.events + count > self.max_events:
            raise StoreFullError(
                f"the memory store holds {self.events} events, its limit is {self.max_events} "
                "(store.maxevents); retry when the endpoints caught up"
            )
        elif self.bytes + size > self.max_bytes:
            raise StoreFullError(
                f"the memory store holds {self.bytes} bytes of events, its limit is "
                f"{self.max_bytes} (store.maxsize); retry when the endpoints caught up"
            )
        held = self._held
        for event, taken, event_size in zip(events, takers, sizes, strict=True):
            if not taken:
                continue
            entry = held.get(id(event))
            if entry is not None:  # the same object accepted again: held once more
                entry[1] += taken
                continue
            held[id(event)] = [event, taken, event_size]
            self.events += 1
            self.bytes += event_size

    def release(self, events: Iterable[Any]) -> None:
        held = self._held
        for event in events:
            entry = held.get(id(event))
            if entry is None or entry[0] is not event:
                continue
            entry[1] -= 1
            if entry[1] <= 0:
                del held[id(event)]
                self.events -= 1
                self.bytes -= entry[2]

    def reset(self) -> None:
        self._held.clear()
        self.events = 0
        self.bytes = 0


class Release(abc.ObserverBase[Outcome]):
    """Gives the memory budget back as an endpoint settles events."""

    _FINAL = frozenset({OutcomeKind.DELIVERED, OutcomeKind.DEAD_LETTERED, OutcomeKind.DROPPED})

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget

    def on_next(self, value: Outcome) -> None:
        if value.kind in self._FINAL and value.events:
            self._budget.release(value.events)

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass
