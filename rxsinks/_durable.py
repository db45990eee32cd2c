"""A delivery stage's buffer kept in a durable store: the backlog on disk, a window in memory.

:class:`DurableQueue` is what :func:`~rxsinks.deliver` takes as ``queue=`` to keep its buffer in
a store (SQLite, Redis): the stage is the same, only its buffer differs. It takes
``(seq, event)`` pairs that the store already committed, and gives the stage blocks of up to
``block_size`` events, one at a time. Memory stays bounded however long the endpoint is down: at
most ``window`` events are kept in memory; past that, only the fact that more are on disk is, and
the window is refilled from the store (in seq order) as it drains. A block's events are confirmed
in the store after the receiver accepted them. A store with ``confirm_now`` (SQLite: its confirm
journal) notes the confirm before the next block goes, so a crash can only repeat the block in
flight. With another store (Redis) the commit overlaps the next block's request, but never more
than one confirm is outstanding, so a crash can only repeat the block in flight and the one
delivered just before it. A block given up on (dead-lettered) is moved to the store's dead
letters; a block in flight when the stage closes stays in the store, and goes after the restart.
At start, the endpoint's undelivered backlog is read back from the store first.

Blocks are formed from what is available when the stage is ready (up to ``block_size``), so a
backlog after an outage goes out in full blocks; a partial block of live events waits up to
``max_delay`` for more, as :func:`~rxsinks.batch` would.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, Protocol

from ._event import Event
from ._exceptions import SinkClosedError

__all__ = ["DurableQueue", "QueueStore", "Store"]

log = logging.getLogger("rxsinks.durable")

# seconds a blocking read of a shared store (Redis) waits for another process's next event
# before the queue looks again (for dead letters replayed elsewhere, among others)
_TAIL_WAIT = 1.0

Stored = tuple[int, Event]
Block = tuple[Event, ...]


class QueueStore(Protocol):
    """What a durable queue needs from a store (SQLite and Redis stores provide it)."""

    async def read(self, endpoint: str, after: int, limit: int) -> list[Stored]: ...
    async def backlog(self, endpoint: str) -> tuple[int, int]: ...
    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None: ...
    async def dead_letter(
        self, endpoint: str, seqs: Sequence[int], error: str, attempts: int
    ) -> None: ...


class Store(QueueStore, Protocol):
    """Everything the relay uses of a durable store (SQLite and Redis stores provide it)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def append(
        self, events: Sequence[Event], routes: Sequence[Sequence[str]]
    ) -> list[int]: ...
    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None, limit: int = 10_000
    ) -> list[Any]: ...
    async def replay(
        self,
        endpoint: str | None = None,
        since: float | None = None,
        *,
        ids: Collection[int] | None = None,
    ) -> list[tuple[str, int]]: ...
    async def compact(self) -> int: ...


class DurableQueue:
    """A delivery stage's buffer in a store; see the module docstring.

    Args:
        store: the store holding the endpoint's deliveries.
        endpoint: the endpoint's name in the store.
        block_size: the most events per block.
        window: the most events kept in memory.
        on_ingress: called with the number of events accepted (live or read back at start).
        on_egress: called with the number of events whose delivery is over.
        poll_interval: set when several processes append to the store (Redis): new events are
            read from the store, never taken from live notifications alone, with a blocking
            read when the store has one (``tail``), else every this many seconds.
        max_delay: seconds a partial block may wait for more live events before it goes (the
            batch operator's ``max_delay``); 0 sends what is there as soon as the stage is
            ready.
    """

    def __init__(
        self,
        store: QueueStore,
        endpoint: str,
        *,
        block_size: int = 1,
        window: int = 1024,
        on_ingress: Callable[[int], None] | None = None,
        on_egress: Callable[[int], None] | None = None,
        poll_interval: float | None = None,
        max_delay: float = 0.0,
    ) -> None:
        if block_size < 1 or window < block_size:
            raise ValueError(f"need 1 <= block_size <= window, got {block_size}, {window}")
        self.store = store
        self.endpoint = endpoint
        self.block_size = block_size
        self.window = window
        self.on_ingress = on_ingress
        self.on_egress = on_egress
        self.poll_interval = poll_interval
        self.max_delay = max_delay
        self.backlogs: list[_DurableBacklog] = []
        self.pending = 0
        self.dropped = 0  # a durable queue never drops
        self.failures = 0  # store writes that failed (the events stay queued on disk)

    @property
    def in_flight(self) -> int:
        """Blocks handed to the sink and not yet through."""
        return sum(backlog.in_flight for backlog in self.backlogs)

    def rescan(self) -> None:
        """Re-read the backlog from the store (after dead letters were replayed into it)."""
        for backlog in self.backlogs:
            backlog.rescan()

    def backlog(self, key: Callable[[Any], Hashable] | None, concurrency: int) -> _DurableBacklog:
        """One delivery stage subscription's buffer (see :class:`~rxsinks._deliver.Backlog`)."""
        if concurrency != 1:
            raise ValueError(
                "a durable queue delivers one block at a time (concurrency=1): the store "
                "confirms blocks in order"
            )
        backlog = _DurableBacklog(self)
        self.backlogs.append(backlog)
        return backlog


class _DurableBacklog:
    """One stage subscription's window on the store (runs on the stage's event loop)."""

    durable = True

    def __init__(self, owner: DurableQueue) -> None:
        self._owner = owner
        self._wake: Callable[[], None] = _nothing
        self._memory: deque[Stored] = deque()
        # everything the store holds for us with seq > _disk_after is not (yet) in memory;
        # None when memory holds the whole backlog
        self._disk_after: int | None = 0
        self._max_seen = 0
        self._horizon: int | None = None  # seqs up to here were counted from the store at start
        self._early: list[int] = []  # live seqs seen before the horizon was known
        self._refilling = False
        self._skip: set[int] = set()
        self._generation = 0  # bumped by rescan(): a refill started before it is stale
        self._replays_seen: int | None = None
        self._confirming: asyncio.Task[Any] | None = None  # the confirm still committing
        # a store that notes confirms at once (SQLite's journal) saves a commit per block
        self._confirm_now: Callable[[str, Sequence[int]], bool] | None = getattr(
            owner.store, "confirm_now", None
        )
        self._sleeper: asyncio.Task[Any] | None = None
        self._tailing: asyncio.Task[Any] | None = None  # a blocking read of new events
        self._inflight: tuple[int, ...] | None = None
        self._released = True  # the block in flight is through (confirm noted or recorded)
        self._closed = False
        self._disposed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # when live events arrived, (seq, loop time), oldest first, while batching waits for
        # more: a partial block goes once its oldest event waited max_delay (an event this
        # process did not see arrive, a backlog's, has waited long enough); and the timer
        self._arrivals: deque[tuple[int, float]] = deque()
        self._send_timer: asyncio.TimerHandle | None = None

    # -- the Backlog protocol ------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return 0 if self._inflight is None else 1

    @property
    def pending(self) -> int:
        return self._owner.pending

    @property
    def idle(self) -> bool:
        return (
            self._inflight is None
            and not self._memory
            and (self._disk_after is None or self._owner.poll_interval is not None)
            and self._confirming is None
            and self._horizon is not None
        )

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._spawn(self._start())

    def put(self, value: Stored) -> None:
        seq = value[0]
        if self._horizon is None:
            self._early.append(seq)
        elif seq > self._horizon:
            self._count_in(1)
        if seq <= self._max_seen:
            return None  # already read back from the store
        owner = self._owner
        if owner.max_delay > 0 and owner.block_size > 1 and len(self._arrivals) < owner.window:
            # bounded like the window: past it, an outage's backlog goes in full blocks anyway
            self._arrivals.append((seq, asyncio.get_running_loop().time()))
        if self._disk_after is None and len(self._memory) < owner.window:
            self._memory.append(value)
        elif self._disk_after is None:
            # the window is full: from here on the backlog stays on disk only
            self._disk_after = self._memory[-1][0] if self._memory else self._max_seen
        self._max_seen = seq
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.cancel()  # (a blocking read is not interrupted: it returns the event)
        return None

    def take(self) -> Block | None:
        if self._disposed or self._inflight is not None:
            return None
        if not self._memory:
            if self._disk_after is not None and not self._refilling and self._horizon is not None:
                self._refilling = True
                self._spawn(self._refill(self._disk_after))
            return None
        size = min(self._owner.block_size, len(self._memory))
        if size < self._owner.block_size and self._fill_later():
            return None
        block: Block
        if size == 1:  # single events (the registry's way): no lists to build
            seq, event = self._memory.popleft()
            self._inflight, block = (seq,), (event,)
        else:
            stored = [self._memory.popleft() for _ in range(size)]
            self._inflight = tuple(seq for seq, _ in stored)
            block = tuple(event for _, event in stored)
            arrivals = self._arrivals
            while arrivals and arrivals[0][0] <= stored[-1][0]:
                arrivals.popleft()  # on their way: no longer waiting
        self._released = False
        return block

    def done(self, block: Block, error: BaseException | None, attempts: int) -> None:
        seqs = self._inflight or ()
        if isinstance(error, SinkClosedError):
            # closing: the block stays in the store and goes after the restart
            self._release(seqs)
            return
        if error is not None:
            self._spawn(self._record(seqs, error, attempts))
            return
        # Delivered. With a journal (SQLite), the confirm is noted before the next block goes:
        # a crash can only repeat the block in flight.
        previous = self._confirming
        hold_back = previous is not None and not previous.done()
        confirm_now = self._confirm_now
        if not hold_back and confirm_now is not None and confirm_now(self._owner.endpoint, seqs):
            self._release(seqs)
            return
        # Otherwise it commits while the next block goes out (one commit round trip per block
        # would halve single-event throughput), but never more than one confirm is outstanding:
        # a crash can only repeat the block in flight and the one whose confirm had not
        # committed yet.
        task = asyncio.ensure_future(self._confirm(seqs, previous if hold_back else None))
        self._tasks.add(task)
        task.add_done_callback(self._confirmed)
        self._confirming = task
        if not hold_back:
            self._release(seqs)

    def close(self) -> None:
        self._closed = True

    def abandon(self) -> list[Block]:
        # nothing is lost: every event is still in the store, and goes after the restart
        self._cancel_timer()
        return []

    def dispose(self) -> None:
        self._disposed = True
        self._cancel_timer()
        self._owner.backlogs = [b for b in self._owner.backlogs if b is not self]
        for task in list(self._tasks):
            task.cancel()

    # -- the rest ------------------------------------------------------------------------------

    def rescan(self) -> None:
        # replayed deliveries have old seqs: read everything again from the start, skipping
        # the block in flight; what memory held is still in the store, so nothing is lost
        self._memory.clear()
        self._skip = set(self._inflight or ())
        self._disk_after = 0
        self._generation += 1
        if self._tailing is not None and not self._tailing.done():
            self._tailing.cancel()  # read from the start instead
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.cancel()
        self._wake()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    async def _start(self) -> None:
        count, horizon = await self._owner.store.backlog(self._owner.endpoint)
        self._horizon = horizon
        self._count_in(count + sum(1 for seq in self._early if seq > horizon))
        self._early.clear()
        self._wake()

    def _count_in(self, events: int) -> None:
        self._owner.pending += events
        if self._owner.on_ingress is not None and events:
            self._owner.on_ingress(events)

    def _fill_later(self) -> bool:
        """Whether a partial block should wait for more live events (and a timer is set)."""
        delay = self._owner.max_delay
        if delay <= 0 or self._disk_after is not None or self._closed or self._disposed:
            return False  # no batching delay, a backlog to read, or closing: send now
        arrivals, oldest = self._arrivals, self._memory[0][0]
        while arrivals and arrivals[0][0] < oldest:
            arrivals.popleft()  # sent already
        if not arrivals or arrivals[0][0] != oldest:
            return False  # the oldest was read back from the store: it has waited enough
        loop = asyncio.get_running_loop()
        due = arrivals[0][1] + delay
        if loop.time() >= due:
            return False
        if self._send_timer is None:
            self._send_timer = loop.call_at(due, self._send_partial)
        return True

    def _send_partial(self) -> None:
        self._send_timer = None
        self._wake()

    async def _refill(self, after: int) -> None:
        owner = self._owner
        generation = self._generation
        try:
            rows = await owner.store.read(owner.endpoint, after, owner.window)
        except Exception as exc:
            log.error("%s: reading the backlog failed, retrying: %s", owner.endpoint, exc)
            await self._sleep(1.0)
            self._refilling = False
            self._wake()
            return
        if generation != self._generation:  # a rescan started over meanwhile
            self._refilling = False
            self._wake()
            return
        last = rows[-1][0] if rows else after
        if self._skip:
            rows = [row for row in rows if row[0] not in self._skip]
        self._memory.extend(rows)
        self._max_seen = max(self._max_seen, last)
        caught_up = len(rows) < owner.window and last >= self._max_seen
        if caught_up and owner.poll_interval is None:
            self._disk_after = None  # live events go to memory again
            self._skip.clear()
        else:
            self._disk_after = last
            if not rows and owner.poll_interval is not None:
                if await self._replayed_elsewhere():
                    self._refilling = False
                    self.rescan()
                    return
                # other processes append too: wait for their next event (or look again later)
                fresh = await self._tail(last)
                if fresh and generation == self._generation:
                    self._memory.extend(row for row in fresh if row[0] not in self._skip)
                    self._max_seen = max(self._max_seen, fresh[-1][0])
                    self._disk_after = fresh[-1][0]
        self._refilling = False
        self._wake()

    async def _tail(self, after: int) -> list[Stored]:
        """New events after ``after``, as soon as one is stored (``[]`` after a while)."""
        owner = self._owner
        tail = getattr(owner.store, "tail", None)
        if tail is None:
            await self._sleep(owner.poll_interval or 0.0)
            return []
        self._tailing = asyncio.ensure_future(tail(owner.endpoint, after, owner.window, _TAIL_WAIT))
        try:
            rows: list[Stored] = await self._tailing
            return rows
        except asyncio.CancelledError:
            if self._disposed:
                raise
            return []  # a rescan: it reads from the start
        except Exception as exc:
            log.warning("%s: waiting for new events failed, polling: %s", owner.endpoint, exc)
            await self._sleep(owner.poll_interval or 0.0)
            return []
        finally:
            self._tailing = None

    async def _replayed_elsewhere(self) -> bool:
        """Whether another process replayed dead letters into this endpoint's queue."""
        generation_of = getattr(self._owner.store, "replay_generation", None)
        if generation_of is None:
            return False
        try:
            generation = int(await generation_of(self._owner.endpoint))
        except Exception:  # the next poll asks again
            return False
        seen, self._replays_seen = self._replays_seen, generation
        return seen is not None and generation != seen

    async def _sleep(self, seconds: float) -> None:
        self._sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
        try:
            await self._sleeper
        except asyncio.CancelledError:
            if self._disposed:
                raise
        finally:
            self._sleeper = None

    async def _confirm(self, seqs: tuple[int, ...], previous: asyncio.Task[Any] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # commits stay in order; its errors are its own
            # the previous block is committed: the next may go while this one commits
            self._release(seqs)
            self._wake()
        await self._record(seqs, None, 0, release=False)

    def _confirmed(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._confirming is task:
            self._confirming = None
            self._wake()  # the stage may have finished waiting for this commit

    async def _record(
        self,
        seqs: tuple[int, ...],
        error: BaseException | None,
        attempts: int,
        *,
        release: bool = True,
    ) -> None:
        owner = self._owner
        while not self._disposed:
            try:
                if error is None:
                    await owner.store.confirm(owner.endpoint, seqs)
                else:
                    await owner.store.dead_letter(
                        owner.endpoint, seqs, str(error) or type(error).__name__, attempts
                    )
                break
            except Exception as exc:
                # the receiver has the block but the store could not note it: keep trying, and
                # hold the next block back so order and at-most-once-per-confirm are kept
                owner.failures += 1
                log.error("%s: store write failed, retrying: %s", owner.endpoint, exc)
                await asyncio.sleep(0.5)
        if release:
            self._release(seqs)
            self._wake()

    def _release(self, seqs: tuple[int, ...]) -> None:
        if self._released:
            return
        self._released = True
        owner = self._owner
        self._inflight = None
        owner.pending -= len(seqs)
        if owner.on_egress is not None:
            owner.on_egress(len(seqs))


def _nothing() -> None:
    pass
