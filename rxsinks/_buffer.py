"""A delivery stage's buffer: what it needs of one (:class:`Backlog`), and the memory ones.

:func:`~rxsinks.deliver` owns its buffer, the way Reactor's ``concatMap`` requests from its
source: the stage puts each item in, takes a block when it can start a delivery, and says when a
delivery is over. :class:`Fifo` is the registry's queue (optionally bounded, see
:class:`~rxsinks.Queue`); :class:`Keyed` lets one block per key be in flight; a durable store's
window (:class:`~rxsinks.DurableQueue`) is a :class:`Backlog` too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from ._exceptions import QueueFullError
from ._queue import Queue, call_hook, weight_of

__all__ = ["READY_EARLY", "Backlog", "BacklogFactory", "Fifo", "Hold", "Keyed", "events_of"]

log = logging.getLogger("rxsinks.queue")

_T = TypeVar("_T")
_B = TypeVar("_B")
_T_co = TypeVar("_T_co", covariant=True)


class Backlog(Protocol[_T, _B]):
    """What a delivery stage needs of its buffer (a memory queue, or a durable store's window).

    The stage calls every method on its own thread (or under its lock); a backlog never calls
    back into the stage from inside them. A backlog that has blocks ready later on its own (read
    back from a store) calls the ``wake`` it was started with, from the stage's event loop.
    """

    in_flight: int

    quiet: bool
    """After :meth:`put`: True when the item joined a partial block that waits for more until a
    time :meth:`ready_at` already gave, so it cannot let a block go sooner (it did not fill
    one); the stage then schedules nothing for it. False when unsure."""

    @property
    def pending(self) -> int:
        """Events accepted and not through their delivery."""
        ...

    @property
    def idle(self) -> bool:
        """Nothing buffered, nothing in flight, nothing left to record: flushed."""
        ...

    def start(self, wake: Callable[[], None]) -> None:
        """The stage is subscribed."""

    def put(self, item: _T) -> list[_T] | None:
        """Accept an item; returns what the overflow policy dropped, if anything."""
        ...

    def take(self) -> _B | None:
        """The next block to deliver, or ``None`` when none may go now."""
        ...

    def ready_at(self) -> float | None:
        """When something held back by time may happen (a block's delivery delay; for a durable
        backlog also a partial block's batching wait and a store retry), on the stage's clock;
        the stage asks after :meth:`take` returned ``None``, and wakes itself (takes again)
        then."""
        ...

    def done(self, block: _B, error: BaseException | None, attempts: int) -> None:
        """A block's delivery is over: delivered (``None``) or given up (the reason), after
        ``attempts`` attempts."""

    def close(self) -> None:
        """Upstream ended: no more items; send what waits for more at once."""

    def abandon(self) -> list[_B]:
        """The stage gives up: empty the buffer, returning the blocks lost (a durable backlog
        loses none: they stay in its store)."""
        ...

    def dispose(self) -> None:
        """The stage is gone."""


READY_EARLY = 0.001
"""Seconds before its due time that a held block counts as due. A wake-up never lands exactly on
time: a scheduler's clock has a resolution (a virtual-time one rounds to microseconds), and a
block found due a hair too late would set a wake-up for "now" again and again."""


class Hold(Generic[_T]):
    """When an item may go: ``delay`` seconds after its ``timestamp`` (wall-clock seconds since
    the epoch), or after it arrived when it has none; expressed on the stage's clock.

    Args:
        delay: seconds (>= 0).
        timestamp: the item's time, or ``None`` (then its arrival counts).
        now: the stage's clock.
        wall: the wall clock the timestamps are on.
    """

    __slots__ = ("delay", "now", "timestamp", "wall")

    def __init__(
        self,
        delay: float,
        timestamp: Callable[[_T], float | None] | None,
        now: Callable[[], float],
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.delay = delay
        self.timestamp = timestamp
        self.now = now
        self.wall = wall

    def due(self, item: _T, arrived: float | None = None) -> float:
        """When ``item`` may go, on the stage's clock: ``delay`` after its timestamp, or after
        ``arrived`` (wall-clock seconds; ``None``: it arrives now) when it has none."""
        now = self.now()
        stamp = None
        if self.timestamp is not None:
            try:
                stamp = self.timestamp(item)
            except Exception:  # an unreadable time must not lose the item: its arrival counts
                log.exception("delivery timestamp function raised on %r", item)
        if stamp is None:
            if arrived is None:
                return now + self.delay
            stamp = arrived  # (a durable store knows when it accepted the item)
        wall = self.wall() if self.wall is not None else time.time()
        return now + max(0.0, stamp + self.delay - wall)


class Fifo(Generic[_T]):
    """A stage's buffer in memory: FIFO, bounded as its :class:`~rxsinks.Queue` says.

    The stage calls :meth:`put` for each item, :meth:`take` when it can start a delivery, and
    :meth:`done` when a delivery is over; nothing here calls back into the stage. The stage's
    hot path also fills and drains :attr:`items` and :attr:`weights` directly, keeping
    :attr:`buffered`, :attr:`taken` and :attr:`in_flight` as these methods would.
    """

    durable = False
    quiet = False  # blocks are formed upstream (the batch operator): any item may go at once

    def __init__(self, owner: Queue[_T], hold: Hold[_T] | None = None) -> None:
        self.owner = owner
        self.hold = hold
        # with a hold, when each buffered item may go (beside items, like weights)
        self.dues: deque[float] = deque()
        # items and their weights side by side: no tuple per item, as a long backlog of tuples
        # makes the cyclic garbage collector walk every one of them again and again
        self.items: deque[_T] = deque()
        self.weights: deque[int] = deque()
        # the last class seen that weighs 1 under weight_of (an Event, typically): checking the
        # class is cheaper than weight_of's isinstance against two types
        self.unit_class: type | None = None
        self.buffered = 0
        self.taken = 0  # events of blocks taken and not done
        self.in_flight = 0
        owner.buffers[id(self)] = self

    @property
    def plain(self) -> bool:
        """Unbounded, no hooks, default weights: the stage may put items in directly."""
        owner = self.owner
        return (
            type(self) is Fifo
            and self.hold is None
            and owner.max_events is None
            and owner.on_ingress is None
            and owner.weigh is weight_of
        )

    @property
    def pending(self) -> int:
        """Events buffered or in flight."""
        return self.buffered + self.taken

    @property
    def idle(self) -> bool:
        """Nothing buffered and nothing in flight."""
        return not self.items and not self.in_flight

    def __len__(self) -> int:
        return len(self.items)

    def start(self, wake: Callable[[], None]) -> None:
        pass

    def close(self) -> None:
        pass

    def weigh(self, value: _T) -> int:
        weigh = self.owner.weigh
        if weigh is not weight_of:
            return weigh(value)
        if type(value) is self.unit_class:
            return 1
        weight = weight_of(value)
        if not isinstance(value, tuple | list):
            self.unit_class = type(value)
        return weight

    def put(self, value: _T) -> list[_T] | None:
        """Buffer ``value``; returns the items the overflow policy dropped, if any.

        Raises:
            QueueFullError: full, with ``overflow="error"`` (nothing was buffered).
        """
        owner = self.owner
        weight = self.weigh(value)
        limit = owner.max_events
        dropped = None
        if limit is not None and self.buffered + weight > limit:
            if owner.overflow == "error":
                raise QueueFullError(limit)
            if owner.overflow == "drop_newest" or weight > limit:
                self._dropped(value, weight, accepted=False)
                return [value]
            dropped = []
            while self.buffered and self.buffered + weight > limit:
                oldest, oldest_weight = self._pop_oldest()
                self._dropped(oldest, oldest_weight, accepted=True)
                dropped.append(oldest)
        self._append(value, weight)
        if owner.on_ingress is not None:
            call_hook(owner.on_ingress, value)
        return dropped

    def _append(self, value: _T, weight: int) -> None:
        self.items.append(value)
        self.weights.append(weight)
        self.buffered += weight
        if self.hold is not None:
            self.dues.append(self.hold.due(value))

    def _pop_oldest(self) -> tuple[_T, int]:
        weight = self.weights.popleft()
        self.buffered -= weight
        if self.dues:
            self.dues.popleft()
        return self.items.popleft(), weight

    def _dropped(self, item: _T, weight: int, *, accepted: bool) -> None:
        owner = self.owner
        owner.dropped += weight
        log.warning("queue full: dropped %d event(s)", weight)
        if owner.on_drop is not None:
            call_hook(owner.on_drop, item)
        if accepted and owner.on_egress is not None:
            # it was counted in by on_ingress: out it goes, or Pending would never come down
            call_hook(owner.on_egress, item)

    def take(self) -> _T | None:
        """The next item to deliver, or ``None`` when none may go now."""
        if not self.items:
            return None
        if self.hold is not None:
            if self.dues[0] > self.hold.now() + READY_EARLY:
                return None  # in order: nothing passes the item held back
            self.dues.popleft()
        weight = self.weights.popleft()
        self.buffered -= weight
        self.taken += weight
        self.in_flight += 1
        return self.items.popleft()

    def ready_at(self) -> float | None:
        """When the item held back at the head may go (``None``: nothing is held back)."""
        return self.dues[0] if self.dues else None

    def done(self, value: _T, error: BaseException | None, attempts: int = 0) -> None:
        """``value``'s delivery is over."""
        self.taken -= self.weigh(value)
        self.in_flight -= 1
        on_egress = self.owner.on_egress
        if on_egress is not None:
            call_hook(on_egress, value)

    def abandon(self) -> list[_T]:
        """Empty the buffer (the stage gives up); returns what it held, oldest first."""
        items = list(self.items)
        self.items.clear()
        self.weights.clear()
        self.dues.clear()
        self.buffered = 0
        self._count_out(items)
        return items

    def _count_out(self, items: list[_T]) -> None:
        on_egress = self.owner.on_egress
        if on_egress is not None:
            for item in items:
                call_hook(on_egress, item)

    def dispose(self) -> None:
        """The stage is gone: stop counting this buffer."""
        self.items.clear()
        self.weights.clear()
        self.dues.clear()
        self.buffered = 0
        self.taken = 0
        self.in_flight = 0
        self.owner.buffers.pop(id(self), None)


class Keyed(Fifo[_T]):
    """A buffer that lets one block per key be in flight, keeping each key's order.

    Each key has its own FIFO; the keys with a block waiting and none in flight are *ready*, in
    the order they became so. The overflow policy still works on arrival order across keys.
    """

    def __init__(
        self, owner: Queue[_T], key: Callable[[_T], Hashable], hold: Hold[_T] | None = None
    ) -> None:
        super().__init__(owner, hold)
        self._key = key
        # per key: (arrival number, item, weight, when it may go)
        self._lanes: dict[Hashable, deque[tuple[int, _T, int, float]]] = {}
        self._ready: deque[Hashable] = deque()
        self._busy: set[Hashable] = set()
        self._keys: dict[int, Hashable] = {}  # id(item in flight) -> its key
        self._arrival = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def idle(self) -> bool:
        return not self._count and not self.in_flight

    def _key_of(self, value: _T) -> Hashable:
        try:
            return self._key(value)
        except Exception:
            # a key function that fails on one block must not lose the block: it goes in order
            # with the others that have no key
            log.exception("delivery key function raised on %r; delivered without a key", value)
            return None

    def _append(self, value: _T, weight: int) -> None:
        key = self._key_of(value)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
            if key not in self._busy:
                self._ready.append(key)
        due = self.hold.due(value) if self.hold is not None else 0.0
        lane.append((self._arrival, value, weight, due))
        self._arrival += 1
        self._count += 1
        self.buffered += weight

    def _pop_oldest(self) -> tuple[_T, int]:
        # the oldest arrival is at the head of one of the key lanes
        key = min(self._lanes, key=lambda k: self._lanes[k][0][0])
        lane = self._lanes[key]
        _, value, weight, _ = lane.popleft()
        if not lane:
            del self._lanes[key]
            if key in self._ready:
                self._ready.remove(key)
        self._count -= 1
        self.buffered -= weight
        return value, weight

    def take(self) -> _T | None:
        if not self._ready:
            return None
        if self.hold is None:
            key = self._ready.popleft()
        else:
            now = self.hold.now() + READY_EARLY
            for key in self._ready:
                if self._lanes[key][0][3] <= now:
                    break
            else:
                return None  # every ready key's next block is held back
            self._ready.remove(key)
        lane = self._lanes[key]
        _, value, weight, _ = lane.popleft()
        if not lane:
            del self._lanes[key]
        self._busy.add(key)
        self._keys[id(value)] = key
        self._count -= 1
        self.buffered -= weight
        self.taken += weight
        self.in_flight += 1
        return value

    def ready_at(self) -> float | None:
        if self.hold is None or not self._ready:
            return None
        return min(self._lanes[key][0][3] for key in self._ready)

    def done(self, value: _T, error: BaseException | None, attempts: int = 0) -> None:
        key = self._keys.pop(id(value), None)
        self._busy.discard(key)
        if key in self._lanes:
            self._ready.append(key)
        super().done(value, error, attempts)

    def abandon(self) -> list[_T]:
        entries = sorted(
            (entry for lane in self._lanes.values() for entry in lane), key=lambda e: e[0]
        )
        self._lanes.clear()
        self._ready.clear()
        self._count = 0
        self.buffered = 0
        items = [value for _, value, _, _ in entries]
        self._count_out(items)
        return items

    def dispose(self) -> None:
        self._lanes.clear()
        self._ready.clear()
        self._busy.clear()
        self._keys.clear()
        self._count = 0
        super().dispose()


class BacklogFactory(Protocol[_T_co]):
    """Makes one stage subscription's backlog (a durable queue does).

    The stage passes its ``key`` and ``concurrency``, its ``delay``/``timestamp`` as a
    :class:`Hold` (``None`` without them), and its clock: every time the backlog gives
    (:meth:`Backlog.ready_at`) is on that clock.
    """

    def backlog(
        self,
        key: Callable[[Any], Hashable] | None,
        concurrency: int,
        hold: Hold[Any] | None,
        clock: Callable[[], float],
    ) -> Any: ...


def events_of(block: Any) -> tuple[Any, ...]:
    """A block's events as a tuple (a single item is a block of one)."""
    if type(block) is tuple:
        return block
    return tuple(block) if isinstance(block, list) else (block,)
