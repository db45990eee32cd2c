"""The durable queue's window on an endpoint's backlog: a synchronous state machine.

:class:`Window` decides everything a durable buffer decides: which of the endpoint's stored
deliveries are kept in memory, which block goes next, and which store reads and writes are due.
It does no I/O and reads no clock: the driver (:mod:`rxsinks._store.durable`) passes the time
in, carries out the reads and writes it hands out (:meth:`Window.next_read`,
:meth:`Window.next_write`), reports how they went, and wakes the delivery stage at
:meth:`Window.ready_at`. Every time is on the delivery stage's clock, so a ``TestScheduler``
drives all of it in virtual time.

**What is in memory.** The store holds the endpoint's undelivered deliveries, by seq. At most
``window`` of them are *buffered* here; blocks handed out are held beside them until their
delivery is over and recorded. Everything the store holds with a seq up to the *cursor* has been
seen (it is buffered, in flight, or being recorded), except the deliveries of *truncated* keys
from their own mark on; everything above the cursor has not. A read returns the store's
deliveries above a seq, in seq order, so the window is refilled by a *forward* read from the
cursor (when at most half of the window is buffered), and a truncated key by a *catch-up* read
from its mark; neither takes a delivery that is in flight, being recorded, or recorded while the
read ran. Once a forward read finds nothing more, the window is *live*: events the ingest
committed (:meth:`Window.put`) go to memory directly, until the window is full.

**Keys.** With a key (``concurrency > 1``), each block holds events of one key, at most one
block per key is in flight, and each key's blocks go in seq order; other keys' blocks go beside
it, up to ``concurrency`` blocks. So that a key whose block keeps failing cannot fill the window
and stop the others, no key buffers more than ``window // concurrency`` events (at least a
block): past that the key is truncated, its later deliveries left in the store until it has
room again. Without a key, blocks are consecutive events in seq order.

**Records.** A delivered block is confirmed at once when the store can note it synchronously
(SQLite's confirm journal): its key's next block may go, and a crash cannot repeat it. Otherwise
the confirm is a store write. One write is outstanding at a time; the confirms waiting for it go
together in the next. A confirm releases its blocks when its write starts (the next block of the
key overlaps the commit, and a crash can repeat the blocks of that one write), a dead letter when
its write is done. A write that fails is retried after :data:`WRITE_RETRY` seconds, a read after
:data:`READ_RETRY`.

**Time.** A block waits for its events' due time (the delivery delay, ``due``), and a partial
block of live events waits up to ``max_delay`` after its first event arrived for more; a backlog
read back from the store never waits for more *time*.

**Full blocks from a backlog.** A backlog read back through the window is not cut into partial
blocks at every refill: when the buffered events run short of a block and the store holds more
behind them (the last forward read filled all the room it asked for), the partial block waits
for the refill under way, and goes whole with the events it brings. With keys, a truncated key
waits the same way for its catch-up read. Such a wait is never longer than a read the window
makes anyway: a block goes as it is when no read is under way or wanted (a full window, a
store that failed), when the store turned out to hold nothing more, and for keys that are not
truncated (their next events may be anywhere in the store).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from enum import Enum

from .._event import Event
from .._exceptions import SinkClosedError

__all__ = ["READ_RETRY", "WRITE_RETRY", "Block", "Read", "ReadKind", "Row", "Window", "Write"]

log = logging.getLogger("rxsinks.durable")

READ_RETRY = 1.0
"""Seconds before a failed store read (or backlog count) is tried again."""
WRITE_RETRY = 0.5
"""Seconds before a failed store write (a confirm, a dead letter) is tried again."""

Block = tuple[Event, ...]
Row = tuple[int, Event, float | None]
"""A delivery read from the store: seq, event, and when it arrived (wall-clock seconds; ``None``
when the store does not know)."""


class _Lane:
    """One key's buffered events (all of them, without keys), in seq order.

    Parallel deques rather than a tuple per event: nothing is allocated per event and endpoint
    while it waits (with hundreds of endpoints, those tuples were most of what the garbage
    collector had to go through). The due times and live arrivals are kept only when blocks
    wait for them: the due times with a delivery delay (``due``), the arrivals with batching
    waits (``batching``).
    """

    __slots__ = ("arrivals", "dues", "events", "seqs")

    def __init__(self, due: bool, batching: bool) -> None:
        self.seqs: deque[int] = deque()
        self.events: deque[Event] = deque()
        # when each event may go (stage clock), and when it arrived live (stage clock; None
        # when read back from the store: it has waited long enough for more)
        self.dues: deque[float] | None = deque() if due else None
        self.arrivals: deque[float | None] | None = deque() if batching else None

    def __len__(self) -> int:
        return len(self.seqs)

    def clear(self) -> None:
        for part in (self.seqs, self.events, self.dues, self.arrivals):
            if part is not None:
                part.clear()


class ReadKind(Enum):
    """What a :class:`Read` asks of the store."""

    START = "start"
    """The endpoint's backlog count and the highest seq stored (``QueueStore.backlog``)."""
    FORWARD = "forward"
    """The deliveries above the cursor."""
    CATCH_UP = "catch-up"
    """The deliveries above a truncated key's mark (other keys' rows are not taken)."""


class Read:
    """A store read the window wants: ``limit`` deliveries with a seq above ``after``."""

    __slots__ = ("after", "bound", "generation", "kind", "limit")

    def __init__(
        self, kind: ReadKind, after: int = 0, limit: int = 0, bound: int = 0, generation: int = 0
    ) -> None:
        self.kind = kind
        self.after = after
        self.limit = limit
        self.bound = bound  # the cursor when a catch-up started: it takes rows up to it
        self.generation = generation

    def __repr__(self) -> str:
        return f"Read({self.kind.value}, after={self.after}, limit={self.limit})"


class Taken:
    """A block handed out, until its delivery is over and recorded."""

    __slots__ = ("attempts", "block", "key", "reason", "released", "seqs")

    def __init__(self, block: Block, seqs: tuple[int, ...], key: Hashable) -> None:
        self.block = block
        self.seqs = seqs
        self.key = key
        self.released = False  # its key and its place among the blocks in flight are free
        self.reason: str | None = None  # given up: why (a dead letter); None: delivered
        self.attempts = 0


class Write:
    """A store write the window wants: confirm these blocks, or dead-letter one."""

    __slots__ = ("blocks", "not_before", "running")

    def __init__(self, blocks: list[Taken]) -> None:
        self.blocks = blocks
        self.running = True
        self.not_before = -math.inf

    @property
    def reason(self) -> str | None:
        """Why the block was given up (a dead letter), or ``None`` (a confirm)."""
        return self.blocks[0].reason

    @property
    def attempts(self) -> int:
        return self.blocks[0].attempts

    @property
    def seqs(self) -> list[int]:
        return [seq for taken in self.blocks for seq in taken.seqs]

    def __repr__(self) -> str:
        what = "confirm" if self.reason is None else "dead letter"
        return f"Write({what}, {self.seqs})"


class Window:
    """What a durable buffer keeps and decides; see the module docstring.

    Every method runs on one thread (the driver's event loop) and returns at once.

    Args:
        block_size: the most events per block.
        window: the most events buffered in memory.
        concurrency: the most blocks handed out and not released.
        key: with ``concurrency > 1``, an event's key (blocks hold one key's events; one block
            per key in flight); ``None``: blocks are consecutive events.
        max_delay: seconds a partial block of live events may wait for more (0: none).
        poll_wait: set when other processes append to the store: the window never goes live
            (every event is read from the store), and after a read that found nothing the next
            waits this many seconds (0 when the read itself waited, a blocking tail); ``None``:
            this process sees every event through :meth:`put`.
        due: when an event may go, on the stage's clock, from the event and when it arrived
            (wall-clock seconds, ``None``: now); ``None``: at once.
        confirm_now: notes a delivered block's seqs in the store at once; False when it cannot
            (then a write confirms them); ``None``: the store has no such way.
        count_in: called with the number of events accepted (pending goes up).
        count_out: called with the number of events whose delivery is over (pending goes down).
    """

    def __init__(
        self,
        *,
        block_size: int,
        window: int,
        concurrency: int = 1,
        key: Callable[[Event], Hashable] | None = None,
        max_delay: float = 0.0,
        poll_wait: float | None = None,
        due: Callable[[Event, float | None], float] | None = None,
        confirm_now: Callable[[Sequence[int]], bool] | None = None,
        count_in: Callable[[int], None] = lambda _: None,
        count_out: Callable[[int], None] = lambda _: None,
    ) -> None:
        if block_size < 1 or window < block_size or concurrency < 1:
            raise ValueError(
                f"need 1 <= block_size <= window and concurrency >= 1, got {block_size}, "
                f"{window}, {concurrency}"
            )
        self.block_size = block_size
        self.window = window
        self.concurrency = concurrency
        self._key = key if concurrency > 1 else None
        self._keyed = self._key is not None
        # a key buffers at most this many events (see the module docstring)
        self.cap = max(block_size, window // concurrency) if self._keyed else window
        # batching waits only matter for blocks of several events
        self._max_delay = max_delay if max_delay > 0 and block_size > 1 else 0.0
        self._poll_wait = poll_wait
        self._due = due
        self._confirm_now = confirm_now
        self._count_in = count_in
        self._count_out = count_out

        # what the store holds, seen from here
        self._horizon: int | None = None  # seqs up to here were counted from the store's count
        self._early: list[int] = []  # seqs put before the count was known
        self._cursor = 0
        self._live = False
        # the last forward read filled all the room it asked for: more may wait in the store
        # right behind the cursor, and a partial block waits for them (see the docstring)
        self._more = False
        self._max_seen = 0  # the highest seq put or read
        self._truncated: dict[Hashable, int] = {}  # key -> its first seq not seen
        # with batching waits: when events put while the window was not live arrived (seq ->
        # stage clock), so a partial block of them read back still waits for more
        self._arrivals: dict[int, float] = {}
        self._generation = 0  # a rescan starts over: reads from before it are stale

        # what is buffered: per key, in seq order (one lane, key None, without keys)
        self._lane = self._new_lane()
        self._lanes: dict[Hashable, _Lane] = {} if self._keyed else {None: self._lane}
        self._ready: deque[Hashable] = deque()  # keys with events buffered and none in flight
        self._busy: set[Hashable] = set()  # keys with a block not released
        self.buffered = 0
        # set by put: the event joined a partial block that waits out max_delay (see put)
        self.quiet = False

        # blocks handed out
        self._taken: dict[int, Taken] = {}  # id(block) -> the block, until the stage is done
        self.unreleased = 0
        self._queued: deque[Taken] = deque()  # waiting for a store write
        self._writing: Write | None = None

        # reads
        self._reading: Read | None = None
        self._read_not_before = -math.inf
        self._polling = False  # the wait is between polls (a new event ends it), not a backoff
        self._recorded_meanwhile: set[int] = set()  # recorded while the read ran: not taken

        self.closed = False
        self.disposed = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the store's backlog count came back."""
        return self._horizon is not None

    @property
    def live(self) -> bool:
        """Whether events put go to memory directly (nothing newer waits in the store)."""
        return self._live

    @property
    def truncated(self) -> dict[Hashable, int]:
        """Keys whose later deliveries wait in the store, with the first seq of them."""
        return dict(self._truncated)

    @property
    def idle(self) -> bool:
        """Nothing buffered, handed out or left to record, and (unless other processes append
        to the store too) nothing waiting in the store."""
        return (
            self._horizon is not None
            and not self.buffered
            and not self._taken
            and not self._queued
            and self._writing is None
            and not self._truncated
            and (self._live or self._poll_wait is not None)
        )

    def seqs_of(self, block: Block) -> tuple[int, ...]:
        """The seqs of a block handed out whose delivery is not over.

        Raises:
            KeyError: ``block`` is not such a block.
        """
        return self._taken[id(block)].seqs

    @property
    def recording(self) -> set[int]:
        """The seqs of blocks whose delivery is over but not recorded in the store yet."""
        seqs = {seq for taken in self._queued for seq in taken.seqs}
        if self._writing is not None:
            seqs.update(self._writing.seqs)
        return seqs

    # -- events --------------------------------------------------------------------------------

    def put(self, seq: int, event: Event, now: float) -> None:
        """An event the store committed at ``seq`` (this process's ingest), arriving ``now``.

        Sets :attr:`quiet` when the event only joined a partial block already waiting for more
        (batching waits, no keys, no delivery delay): it cannot make a block go sooner than
        :meth:`ready_at` said, unless it filled the block.
        """
        self.quiet = False
        horizon = self._horizon
        if horizon is None:
            self._early.append(seq)
        elif seq > horizon:
            self._count_in(1)
        if seq <= self._max_seen:
            return  # read back from the store already
        self._max_seen = seq
        if not self._live:
            # the store has it: a forward read brings it; a poll waits no longer
            if self._polling:
                self._read_not_before = now
            if self._max_delay and len(self._arrivals) < self.window:
                self._arrivals[seq] = now
            return
        key = self._key_of(event) if self._keyed else None
        if self._truncated and key in self._truncated:
            self._cursor = seq  # (this key's deliveries from its mark on are not seen)
            return
        if self.buffered >= self.window:
            # full: from here on the backlog stays in the store, read back as the window drains
            self._live = False
            return
        self._cursor = seq
        if self._keyed:
            lane = self._lanes.get(key)
            if lane is not None and len(lane) >= self.cap:
                self._truncated[key] = seq
                return
        elif self._due is None:  # (the common case, once per event and endpoint: inline)
            lane = self._lane
            lane.seqs.append(seq)
            lane.events.append(event)
            if lane.arrivals is not None:
                lane.arrivals.append(now)
                # the head (and so the block's time) is unchanged while the block is short
                self.quiet = 1 < len(lane.seqs) < self.block_size
            self.buffered += 1
            return
        self._accept(key, seq, event, None, now if self._max_delay else None)

    def _accept(
        self, key: Hashable, seq: int, event: Event, arrived: float | None, live: float | None
    ) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = self._new_lane()
            if key not in self._busy:
                self._ready.append(key)
        lane.seqs.append(seq)
        lane.events.append(event)
        if lane.dues is not None and self._due is not None:
            lane.dues.append(self._due(event, arrived))
        if lane.arrivals is not None:
            lane.arrivals.append(live)
        self.buffered += 1

    def _new_lane(self) -> _Lane:
        return _Lane(self._due is not None, bool(self._max_delay))

    def _key_of(self, event: Event) -> Hashable:
        assert self._key is not None
        try:
            return self._key(event)
        except Exception:
            # a key function failing on one event must not lose it: it goes in order with the
            # others that have no key
            log.exception("delivery key function raised on %r; delivered without a key", event)
            return None

    # -- blocks --------------------------------------------------------------------------------

    def take(self, now: float) -> Block | None:
        """The next block to deliver, or ``None`` when none may go now."""
        if self.unreleased >= self.concurrency or self.disposed:
            return None
        if not self._keyed:
            lane = self._lane
            if not lane:
                return None
            if self._due is None and not self._max_delay:
                if len(lane) < self.block_size and self._refilling(None, now):
                    return None
                return self._form(None, lane, min(len(lane), self.block_size))
            count, go = self._go(None, lane, now)
            return self._form(None, lane, count) if go <= now else None
        ready = self._ready
        for index, key in enumerate(ready):
            lane = self._lanes[key]
            count, go = self._go(key, lane, now)
            if go <= now:
                del ready[index]
                return self._form(key, lane, count)
        return None

    def _go(self, key: Hashable, lane: _Lane, now: float) -> tuple[int, float]:
        """How many of a lane's events may go as its next block, and when (``<= now``: now)."""
        block_size = self.block_size
        dues = lane.dues
        if dues is None:
            count = min(len(lane), block_size)
        else:
            count = 0
            for due in dues:
                if count == block_size or due > now:
                    break
                count += 1
            if not count:
                return 0, dues[0]  # the head's delivery delay
        if count < block_size and count == len(lane) and self._refilling(key, now):
            return count, math.inf  # the refill under way completes the block (no timer)
        if count < block_size and self._max_delay and lane.arrivals is not None:
            arrived = lane.arrivals[0]
            if (
                arrived is not None
                and self._live
                and not self.closed
                and key not in self._truncated
                and arrived + self._max_delay > now
            ):
                return count, arrived + self._max_delay  # a partial block waits for more
        return count, now

    def _refilling(self, key: Hashable, now: float) -> bool:
        """Whether a read under way (or wanted now) brings more of ``key``'s events from right
        behind what is buffered: then a partial block of them waits for it."""
        if self._keyed:
            if key not in self._truncated:
                return False
        elif not self._more or self._live:
            return False
        return self._reading is not None or (
            self._read_not_before <= now and self._wanted() is not None
        )

    def _form(self, key: Hashable, lane: _Lane, count: int) -> Block:
        block: Block
        seqs: tuple[int, ...]
        if count == 1:  # single events (the registry's way): no lists to build
            seqs, block = (lane.seqs.popleft(),), (lane.events.popleft(),)
        else:
            pop_seq, pop_event = lane.seqs.popleft, lane.events.popleft
            seqs = tuple([pop_seq() for _ in range(count)])
            block = tuple([pop_event() for _ in range(count)])
        for part in (lane.dues, lane.arrivals):
            if part is not None:
                for _ in range(count):
                    part.popleft()
        self.buffered -= count
        if self._keyed:
            self._busy.add(key)
            if not lane:
                del self._lanes[key]
        self._taken[id(block)] = Taken(block, seqs, key)
        self.unreleased += 1
        return block

    def done(self, block: Block, error: BaseException | None, attempts: int) -> None:
        """``block``'s delivery is over: delivered (``None``) or given up (the reason)."""
        taken = self._taken.pop(id(block), None)
        if taken is None:
            return
        if isinstance(error, SinkClosedError):
            # closing: the block stays in the store and goes after the restart
            self._release(taken)
            return
        if error is None:
            confirm_now = self._confirm_now
            if confirm_now is not None and confirm_now(taken.seqs):
                if self._reading is not None:
                    self._recorded_meanwhile.update(taken.seqs)
                self._release(taken)
                return
        else:
            taken.reason = str(error) or type(error).__name__
            taken.attempts = attempts
        self._queued.append(taken)

    def _release(self, taken: Taken) -> None:
        taken.released = True
        self.unreleased -= 1
        if self._keyed:
            key = taken.key
            self._busy.discard(key)
            if key in self._lanes:
                self._ready.append(key)
        self._count_out(len(taken.seqs))

    # -- store writes --------------------------------------------------------------------------

    def next_write(self, now: float) -> Write | None:
        """The store write to start now, if any (the driver reports it to :meth:`written` or
        :meth:`write_failed`)."""
        write = self._writing
        if write is not None:
            if write.running or write.not_before > now:
                return None
            write.running = True  # a retry
            return write
        queued = self._queued
        if not queued:
            return None
        if queued[0].reason is None:
            # every confirm waiting goes in one write; the next block of their keys may go
            # while it commits
            blocks = [taken for taken in queued if taken.reason is None]
            rest = [taken for taken in queued if taken.reason is not None]
            queued.clear()
            queued.extend(rest)
            for taken in blocks:
                self._release(taken)
        else:
            blocks = [queued.popleft()]
        self._writing = Write(blocks)
        return self._writing

    def written(self, write: Write) -> None:
        """``write`` is in the store."""
        if self._writing is write:
            self._writing = None
        if self._reading is not None:
            self._recorded_meanwhile.update(write.seqs)
        for taken in write.blocks:
            if not taken.released:
                self._release(taken)

    def write_failed(self, write: Write, now: float) -> None:
        """``write`` failed: it is tried again :data:`WRITE_RETRY` seconds from ``now``; the
        blocks behind it wait (a crash can only repeat what is not recorded)."""
        write.running = False
        write.not_before = now + WRITE_RETRY

    # -- store reads ---------------------------------------------------------------------------

    def next_read(self, now: float) -> Read | None:
        """The store read to start now, if any (reported to :meth:`counted`, :meth:`read` or
        :meth:`read_failed`)."""
        if self._reading is not None or self.disposed or self._read_not_before > now:
            return None
        read = self._wanted()
        if read is not None:
            read.generation = self._generation
            self._reading = read
            self._recorded_meanwhile.clear()
        return read

    def _wanted(self) -> Read | None:
        if self._horizon is None:
            return Read(ReadKind.START)
        room = self.window - self.buffered
        if room <= 0:
            return None
        if self._truncated:
            cap = self.cap
            lanes = self._lanes
            wanting = [
                (mark, cap - len(lanes.get(key, ())))
                for key, mark in self._truncated.items()
                if len(lanes.get(key, ())) <= cap // 2 or len(lanes.get(key, ())) < self.block_size
            ]
            if wanting:
                # no more rows than these keys can take: a hot key's rows are most of them
                fits = sum(free for _, free in wanting)
                after = min(mark for mark, _ in wanting) - 1
                return Read(ReadKind.CATCH_UP, after, min(room, fits), self._cursor)
        if self._live or (self.buffered > self.window // 2 and self.buffered >= self.block_size):
            return None
        return Read(ReadKind.FORWARD, self._cursor, room)

    def counted(self, read: Read, count: int, horizon: int) -> None:
        """The store holds ``count`` deliveries for the endpoint, and seqs up to ``horizon``."""
        self._reading = None
        self._horizon = horizon
        self._count_in(count + sum(1 for seq in self._early if seq > horizon))
        self._early.clear()

    def read(self, read: Read, rows: Sequence[Row], now: float) -> None:
        """``read`` returned ``rows`` (in seq order)."""
        self._reading = None
        if read.generation != self._generation:
            return  # a rescan started over meanwhile
        self._polling = False
        held = self._held()
        if read.kind is ReadKind.CATCH_UP:
            self._caught_up(read, rows, held)
            return
        keyed = self._keyed
        truncated = self._truncated
        lanes = self._lanes
        cap = self.cap
        arrivals = self._arrivals
        for seq, event, arrived in rows:
            if seq in held:
                continue
            key = None
            if keyed:
                key = self._key_of(event)
                if key in truncated:
                    continue  # behind its own mark: a catch-up read takes it, in order
                lane = lanes.get(key)
                if lane is not None and len(lane) >= cap:
                    truncated[key] = seq
                    continue
            self._accept(key, seq, event, arrived, arrivals.pop(seq, None) if arrivals else None)
        last = rows[-1][0] if rows else read.after
        if arrivals:
            for seq in [seq for seq in arrivals if seq <= last]:
                del arrivals[seq]  # (seen: taken above, or not ours to wait for)
        self._cursor = max(self._cursor, last)
        self._max_seen = max(self._max_seen, last)
        self._more = len(rows) >= read.limit
        if self._poll_wait is None:
            if len(rows) < read.limit and last >= self._max_seen:
                self._live = True  # caught up: live events go to memory again
        elif not rows:
            self._read_not_before = now + self._poll_wait
            self._polling = True

    def _caught_up(self, read: Read, rows: Sequence[Row], held: set[int]) -> None:
        truncated = self._truncated
        lanes = self._lanes
        bound = read.bound
        stopped: set[Hashable] = set()
        for seq, event, arrived in rows:
            if seq > bound:
                break  # above the cursor: forward reads take these
            if seq in held:
                continue
            key = self._key_of(event)
            mark = truncated.get(key)
            if mark is None or mark <= read.after or seq < mark or key in stopped:
                continue  # (a key marked before the read's start: its rows are not all here)
            lane = lanes.get(key)
            if self.buffered >= self.window or (lane is not None and len(lane) >= self.cap):
                truncated[key] = seq
                stopped.add(key)
                continue
            self._accept(key, seq, event, arrived, None)
            truncated[key] = seq + 1
        # the rows cover every delivery from read.after up to here
        short = len(rows) < read.limit
        covered = bound if short or (rows and rows[-1][0] >= bound) else rows[-1][0]
        for key, mark in list(truncated.items()):
            if key in stopped or mark <= read.after:
                continue
            mark = max(mark, covered + 1)
            if mark > self._cursor:
                del truncated[key]  # every delivery of it up to the cursor is seen
            else:
                truncated[key] = mark

    def read_failed(self, read: Read, now: float) -> None:
        """``read`` failed (or was cancelled): the next waits :data:`READ_RETRY` seconds."""
        self._reading = None
        self._polling = False
        self._more = False  # (while the store fails, what is buffered goes as it is)
        if read.generation == self._generation or read.kind is ReadKind.START:
            self._read_not_before = now + READ_RETRY

    def _held(self) -> set[int]:
        """The seqs a read must not take: handed out, waiting for or in a write, or recorded
        while the read ran (the store may have answered from before the record)."""
        held = self.recording
        held.update(self._recorded_meanwhile)
        for taken in self._taken.values():
            held.update(taken.seqs)
        return held

    def rescan(self) -> None:
        """Read everything from the store again (deliveries were put back at old seqs); what
        is handed out or being recorded is not taken twice."""
        self._generation += 1
        self._lanes.clear()
        self._lane.clear()
        if not self._keyed:
            self._lanes[None] = self._lane
        self._ready.clear()
        self.buffered = 0
        self._truncated.clear()
        self._cursor = 0
        self._live = False
        self._more = False
        self._read_not_before = -math.inf
        self._polling = False

    # -- time ----------------------------------------------------------------------------------

    def ready_at(self, now: float) -> float | None:
        """The earliest time something held back by time may happen (a block's delay or
        batching wait, a read or write retry, the next poll), or ``None``."""
        times: list[float] = []
        write = self._writing
        if write is not None and not write.running:
            times.append(write.not_before)
        if (
            self._reading is None
            and self._read_not_before > now
            and not self.disposed
            and self._wanted() is not None
        ):
            times.append(self._read_not_before)
        if self.unreleased < self.concurrency:
            if self._keyed:
                for key in self._ready:
                    times.append(self._go(key, self._lanes[key], now)[1])
            elif self._lane:
                times.append(self._go(None, self._lane, now)[1])
        soonest = min(times, default=math.inf)
        return soonest if soonest < math.inf else None  # (a refill's end wakes the stage)

    def close(self) -> None:
        """No more events will be put: partial blocks go without waiting for more."""
        self.closed = True

    def dispose(self) -> None:
        """The stage is gone: nothing more is handed out."""
        self.disposed = True
