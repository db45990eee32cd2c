"""A delivery stage's buffer kept in a durable store: the backlog on disk, a window in memory.

:class:`DurableQueue` is what :func:`~rxsinks.deliver` takes as ``queue=`` to keep its buffer in
a store (SQLite, Redis): the stage is the same, only its buffer differs. It takes
``(seq, event)`` pairs that the store already committed, and gives the stage blocks of up to
``block_size`` events. Memory stays bounded however long the endpoint is down: at most
``window`` events are kept in memory; the rest is read back from the store (in seq order) as the
window drains. At start, the endpoint's undelivered backlog is read back first.

With the stage's ``concurrency=N`` up to N blocks are in flight; with its ``key=`` as well, each
block holds events of one key (an event's key is ``key((event,))``), at most one block per key is
in flight, and each key's blocks go in seq order while the others go beside them: a key whose
block keeps failing holds back only that key (it buffers at most ``window // N`` events; the
rest waits in the store). The stage's ``delay=``/``timestamp=`` hold each event until its time
(its ``timestamp``, or when the store accepted it) plus the delay; since both times are in the
store, a delay already served is not served again after a restart.

A block's events are confirmed in the store after the receiver accepted them, out of order when
blocks of several keys are in flight: a confirm names each (endpoint, seq), so it settles
exactly those events (SQLite keeps those done beyond an endpoint's cursor until the gap before
them closes). A store that notes confirms at once
(:class:`~rxsinks._store.protocol.ConfirmsAtOnce`: SQLite's journal) notes it before the key's
next block goes, so a crash repeats only the blocks in flight. Otherwise (Redis) the commit
overlaps the next blocks, one write at a time, so a crash repeats the blocks in flight and those
of the one confirm write outstanding. A block given up on (dead-lettered) is moved to the store's
dead letters before its key's next block goes; a block in flight when the stage closes stays in
the store, and goes after the restart.

The decisions are :class:`~rxsinks._store.window.Window`'s, a synchronous state machine; this
module is its driver: it runs the store calls on the event loop and wakes the stage. Every wait
(a partial block's ``max_delay``, a delivery delay, a store retry, the next poll) is a time the
backlog gives the stage (``ready_at``), which wakes itself on its own scheduler: virtual time
drives all of it under a ``TestScheduler``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from functools import partial
from typing import Any

from .._buffer import READY_EARLY, Hold
from .._event import Event
from .protocol import ConfirmsAtOnce, CountsReplays, KeepsArrivals, QueueStore, Stored, Tails
from .window import Block, Read, ReadKind, Row, Window, Write

__all__ = ["DurableQueue"]

log = logging.getLogger("rxsinks.durable")

# seconds a blocking read of a shared store (Redis) waits for another process's next event
# before the queue looks again (for dead letters replayed elsewhere, among others)
_TAIL_WAIT = 1.0


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

    Raises:
        ValueError: not ``1 <= block_size <= window``.
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

    def __repr__(self) -> str:
        return f"DurableQueue({self.store!r}, {self.endpoint!r}, block_size={self.block_size})"

    @property
    def in_flight(self) -> int:
        """Blocks handed to the sink and not yet through (delivered and recorded, or given up
        and dead-lettered)."""
        return sum(backlog.in_flight for backlog in self.backlogs)

    @property
    def buffered(self) -> int:
        """Events kept in memory, waiting for their delivery (at most ``window`` per stage
        subscription)."""
        return sum(backlog.buffered for backlog in self.backlogs)

    @property
    def store_calls(self) -> int:
        """Store reads and writes under way (a blocking wait for new events included)."""
        return sum(backlog.store_calls for backlog in self.backlogs)

    def rescan(self) -> None:
        """Re-read the backlog from the store (after dead letters were replayed into it)."""
        for backlog in self.backlogs:
            backlog.rescan()

    def backlog(
        self,
        key: Callable[[Any], Hashable] | None,
        concurrency: int,
        hold: Hold[Any] | None,
        clock: Callable[[], float],
    ) -> _DurableBacklog:
        """One delivery stage subscription's buffer (see :class:`~rxsinks._buffer.Backlog`).

        Args:
            key: with ``concurrency > 1``, a function of a block: blocks of one key go one at a
                time, in order (here each block holds one key's events).
            concurrency: the most blocks in flight.
            hold: when a block may go (the stage's ``delay``/``timestamp``), or ``None``.
            clock: the stage's clock: every time the backlog gives the stage is on it.
        """
        backlog = _DurableBacklog(self, key, concurrency, hold, clock)
        self.backlogs.append(backlog)
        return backlog

    def _count_in(self, events: int) -> None:
        self.pending += events
        if self.on_ingress is not None and events:
            self.on_ingress(events)

    def _count_out(self, events: int) -> None:
        self.pending -= events
        if self.on_egress is not None and events:
            self.on_egress(events)


class _DurableBacklog:
    """One stage subscription's window on the store: the :class:`Window` and its store calls.

    Runs on the event loop it was started on (the store's): the stage calls it there, and store
    calls finish there.
    """

    durable = True
    quiet = False  # (set by put, from the window)

    def __init__(
        self,
        owner: DurableQueue,
        key: Callable[[Any], Hashable] | None,
        concurrency: int,
        hold: Hold[Any] | None,
        clock: Callable[[], float],
    ) -> None:
        self._owner = owner
        self._clock = clock
        store = owner.store
        poll_wait = None
        if owner.poll_interval is not None:
            # a blocking read waits by itself; without one, polls are this far apart
            poll_wait = 0.0 if isinstance(store, Tails) else owner.poll_interval
        self._window = Window(
            block_size=owner.block_size,
            window=owner.window,
            concurrency=concurrency,
            key=_key_of_event(key) if key is not None and concurrency > 1 else None,
            max_delay=owner.max_delay,
            poll_wait=poll_wait,
            due=_due_of_event(hold) if hold is not None else None,
            # a store that notes confirms at once (SQLite's journal) saves a commit per block
            confirm_now=(
                partial(store.confirm_now, owner.endpoint)
                if isinstance(store, ConfirmsAtOnce)
                else None
            ),
            count_in=owner._count_in,
            count_out=owner._count_out,
        )
        self._arrivals = isinstance(store, KeepsArrivals)
        self._wake: Callable[[], None] = _nothing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tailing: asyncio.Task[Any] | None = None  # a blocking read of new events
        self._replays_seen: int | None = None

    # -- the Backlog protocol ------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._window.unreleased

    @property
    def pending(self) -> int:
        return self._owner.pending

    @property
    def idle(self) -> bool:
        return self._window.idle

    @property
    def buffered(self) -> int:
        return self._window.buffered

    @property
    def store_calls(self) -> int:
        return len(self._tasks)

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._io(self._clock())

    def put(self, value: Stored) -> None:
        window = self._window
        window.put(value[0], value[1], self._clock())
        self.quiet = window.quiet
        return None

    def take(self) -> Block | None:
        now = self._clock()
        block = self._window.take(now + READY_EARLY)
        self._io(now)  # a refill when the window runs low, a poll, a retry that is due
        return block

    def ready_at(self) -> float | None:
        return self._window.ready_at(self._clock())

    def done(self, block: Block, error: BaseException | None, attempts: int) -> None:
        self._window.done(block, error, attempts)
        self._io(self._clock())

    def close(self) -> None:
        self._window.close()

    def abandon(self) -> list[Block]:
        # nothing is lost: every event is still in the store, and goes after the restart
        return []

    def dispose(self) -> None:
        self._window.dispose()
        self._owner.backlogs = [b for b in self._owner.backlogs if b is not self]
        for task in list(self._tasks):
            task.cancel()

    # -- the rest ------------------------------------------------------------------------------

    def rescan(self) -> None:
        # replayed deliveries have old seqs: read everything again from the start
        self._window.rescan()
        if self._tailing is not None:
            self._tailing.cancel()  # read from the start instead
        self._io(self._clock())
        self._wake()

    def _io(self, now: float) -> None:
        """Start the store read and write the window wants now."""
        window = self._window
        read = window.next_read(now)
        if read is not None:
            self._spawn(self._read(read), partial(self._read_over, read))
        write = window.next_write(now)
        if write is not None:
            self._spawn(self._write(write), partial(self._write_over, write))

    def _spawn(
        self,
        call: Coroutine[Any, Any, Any],
        over: Callable[[Any, BaseException | None], None],
    ) -> None:
        if self._loop is None:
            call.close()  # not started: start() does the first calls
            return
        task = self._loop.create_task(call)
        self._tasks.add(task)
        task.add_done_callback(partial(self._over, over))

    def _over(
        self, over: Callable[[Any, BaseException | None], None], task: asyncio.Task[Any]
    ) -> None:
        self._tasks.discard(task)
        if self._window.disposed:
            if not task.cancelled():
                task.exception()  # retrieved: the stage is gone, so is the result
            return
        if task.cancelled():
            over(None, asyncio.CancelledError())
        else:
            error = task.exception()
            over(None if error is not None else task.result(), error)
        self._io(self._clock())
        self._wake()

    async def _read(self, read: Read) -> Any:
        owner = self._owner
        store = owner.store
        if read.kind is ReadKind.START:
            return await store.backlog(owner.endpoint)
        rows: list[Row]
        if self._arrivals:
            assert isinstance(store, KeepsArrivals)
            rows = await store.read_arrivals(owner.endpoint, read.after, read.limit)
        else:
            rows = [
                (seq, event, None)
                for seq, event in await store.read(owner.endpoint, read.after, read.limit)
            ]
        if rows or read.kind is ReadKind.CATCH_UP or owner.poll_interval is None:
            return rows
        # nothing new, and other processes append too: a replay there means reading from the
        # start; else wait for their next event
        if await self._replayed_elsewhere():
            return None
        if not isinstance(store, Tails):
            return []  # the window waits poll_interval before the next read
        self._tailing = asyncio.current_task()
        try:
            fresh = await store.tail(owner.endpoint, read.after, read.limit, _TAIL_WAIT)
        except asyncio.CancelledError:
            if self._window.disposed:
                raise
            return []  # a rescan: the window reads from the start
        finally:
            self._tailing = None
        # (seen as soon as another process stored them: they arrive now)
        return [(seq, event, None) for seq, event in fresh]

    def _read_over(self, read: Read, result: Any, error: BaseException | None) -> None:
        window = self._window
        now = self._clock()
        if error is not None:
            if not isinstance(error, asyncio.CancelledError):
                what = "counting" if read.kind is ReadKind.START else "reading"
                log.error(
                    "%s: %s the backlog failed, retrying: %s", self._owner.endpoint, what, error
                )
            window.read_failed(read, now)
        elif read.kind is ReadKind.START:
            count, horizon = result
            window.counted(read, count, horizon)
        elif result is None:
            window.read(read, [], now)
            window.rescan()  # dead letters were replayed by another process
        else:
            window.read(read, result, now)

    async def _replayed_elsewhere(self) -> bool:
        """Whether another process replayed dead letters into this endpoint's queue."""
        store = self._owner.store
        if not isinstance(store, CountsReplays):
            return False
        try:
            generation = int(await store.replay_generation(self._owner.endpoint))
        except Exception:  # the next poll asks again
            return False
        seen, self._replays_seen = self._replays_seen, generation
        return seen is not None and generation != seen

    async def _write(self, write: Write) -> None:
        owner = self._owner
        if write.reason is None:
            await owner.store.confirm(owner.endpoint, write.seqs)
        else:
            await owner.store.dead_letter(owner.endpoint, write.seqs, write.reason, write.attempts)

    def _write_over(self, write: Write, _: Any, error: BaseException | None) -> None:
        if error is None:
            self._window.written(write)
            return
        # the receiver has the blocks but the store could not note it: try again, and hold
        # the blocks behind it back, so a crash can only repeat what is not recorded
        self._owner.failures += 1
        if not isinstance(error, asyncio.CancelledError):
            log.error("%s: store write failed, retrying: %s", self._owner.endpoint, error)
        self._window.write_failed(write, self._clock())


def _key_of_event(key: Callable[[Any], Hashable]) -> Callable[[Event], Hashable]:
    """An event's key: the key of a block of that one event."""

    def of(event: Event) -> Hashable:
        return key((event,))

    return of


def _due_of_event(hold: Hold[Any]) -> Callable[[Event, float | None], float]:
    """When an event may go: the hold of a block of that one event."""

    def due(event: Event, arrived: float | None) -> float:
        return hold.due((event,), arrived)

    return due


def _nothing() -> None:
    pass
