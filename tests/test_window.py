"""The durable buffer's state machine (rxsinks._store.window.Window), driven by hand.

The window does no I/O and reads no clock: these tests play the driver, handing it the store's
answers and the time. The last test plays random schedules against a model store and checks
what a crash would repeat after every step.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxsinks._event import Event
from rxsinks._exceptions import SINK_CLOSED
from rxsinks._store.window import READ_RETRY, WRITE_RETRY, Read, ReadKind, Row, Window, Write


def event(name: str) -> Event:
    """An event whose id is ``name`` and whose repository is its first letter."""
    return Event.new("push", target={"repository": name[0]}, id=name)


def repository(event: Event) -> Hashable:
    return event.target.repository


def ids(block: Sequence[Event] | None) -> list[str]:
    assert block is not None
    return [e.id for e in block]


class Store:
    """A model of a store's deliveries for one endpoint: seq -> event, undelivered ones."""

    def __init__(self) -> None:
        self.events: dict[int, Event] = {}
        self.waiting: set[int] = set()
        self.seq = 0

    def add(self, *names: str) -> list[tuple[int, Event]]:
        added = []
        for name in names:
            self.seq += 1
            self.events[self.seq] = event(name)
            self.waiting.add(self.seq)
            added.append((self.seq, self.events[self.seq]))
        return added

    def rows(self, read: Read) -> list[Row]:
        seqs = sorted(seq for seq in self.waiting if seq > read.after)[: read.limit]
        return [(seq, self.events[seq], None) for seq in seqs]

    def confirm_now(self, seqs: Sequence[int]) -> bool:
        self.waiting.difference_update(seqs)
        return True


def started(window: Window, store: Store, now: float = 0.0) -> None:
    """Count the backlog and read it until the window is live (or full)."""
    read = window.next_read(now)
    assert read is not None and read.kind is ReadKind.START
    window.counted(read, len(store.waiting), store.seq)
    while (read := window.next_read(now)) is not None:
        window.read(read, store.rows(read), now)


def put(window: Window, store: Store, *names: str) -> None:
    """Store events named ``names`` and hand them to the window, as the relay's ingest does."""
    for seq, e in store.add(*names):
        window.put(seq, e, 0.0)


def play(window: Window, store: Store, now: float = 0.0) -> list[str]:
    """Play the driver with a receiver and a store that always succeed, at once, until nothing
    more happens; returns the ids delivered, in order."""
    return [name for block in blocks_played(window, store, now) for name in block]


def blocks_played(window: Window, store: Store, now: float = 0.0) -> list[list[str]]:
    """Like :func:`play`, the ids of each block as it went."""
    got: list[list[str]] = []
    while True:
        write = window.next_write(now)
        if write is not None:
            store.waiting.difference_update(write.seqs)
            window.written(write)
        block = window.take(now)
        if block is not None:
            got.append(ids(block))
            window.done(block, None, 1)
        elif (read := window.next_read(now)) is not None:
            window.read(read, store.rows(read), now)
        elif write is None:
            return got


def test_blocks_hold_one_key_each_and_keys_go_side_by_side() -> None:
    store = Store()
    window = Window(block_size=2, window=16, concurrency=3, key=repository)
    started(window, store)
    assert window.live
    put(window, store, "a1", "a2", "b1", "a3", "c1", "b2")
    first, second, third = window.take(0), window.take(0), window.take(0)
    assert [ids(first), ids(second), ids(third)] == [["a1", "a2"], ["b1", "b2"], ["c1"]]
    assert window.take(0) is None  # three in flight: the concurrency
    assert first is not None
    window.done(first, None, 1)  # no confirm_now: the confirm is a store write
    write = window.next_write(0)
    assert write is not None and write.reason is None and write.seqs == [1, 2]
    assert ids(window.take(0)) == ["a3"]  # a's next block overlaps the commit


def test_without_a_key_blocks_are_consecutive_events_in_parallel() -> None:
    store = Store()
    window = Window(block_size=2, window=16, concurrency=2)
    started(window, store)
    put(window, store, "a1", "b1", "a2", "c1", "a3")
    assert [ids(window.take(0)), ids(window.take(0))] == [["a1", "b1"], ["a2", "c1"]]
    assert window.take(0) is None


def test_confirms_noted_at_once_release_blocks_out_of_order() -> None:
    store = Store()
    released: list[int] = []
    window = Window(
        block_size=1,
        window=8,
        concurrency=3,
        key=repository,
        confirm_now=store.confirm_now,
        count_out=released.append,
    )
    started(window, store)
    put(window, store, "a1", "b1", "c1", "a2")
    a1, b1, c1 = window.take(0), window.take(0), window.take(0)
    assert a1 is not None and b1 is not None and c1 is not None
    window.done(c1, None, 1)
    window.done(b1, None, 1)
    assert store.waiting == {1, 4}  # c1 and b1 recorded, a1 still in flight
    assert window.next_write(0) is None and released == [1, 1]
    assert window.take(0) is None  # a2 waits for a1
    window.done(a1, None, 1)
    assert ids(window.take(0)) == ["a2"]


def test_a_confirm_write_goes_one_at_a_time_and_takes_every_confirm_waiting() -> None:
    store = Store()
    window = Window(block_size=1, window=8, concurrency=4, key=repository)
    started(window, store)
    put(window, store, "a1", "b1", "c1", "a2")
    a1, b1, c1 = window.take(0), window.take(0), window.take(0)
    assert a1 is not None and b1 is not None and c1 is not None
    window.done(a1, None, 1)
    first = window.next_write(0)
    assert first is not None and first.seqs == [1]
    window.done(b1, None, 1)
    window.done(c1, None, 1)
    assert window.next_write(0) is None  # one write outstanding at a time
    assert window.unreleased == 2  # b1 and c1 wait for theirs: a crash would repeat them
    window.written(first)
    second = window.next_write(0)
    assert second is not None and second.seqs == [2, 3]
    assert window.unreleased == 0


def test_a_failed_write_is_retried_later_and_a_dead_letter_holds_its_key() -> None:
    store = Store()
    window = Window(block_size=1, window=8, concurrency=2, key=repository)
    started(window, store)
    put(window, store, "a1", "a2", "b1")
    a1 = window.take(0)
    assert ids(window.take(0)) == ["b1"]
    assert a1 is not None
    window.done(a1, RuntimeError("410 gone"), 3)
    write = window.next_write(10.0)
    assert write is not None and write.reason == "410 gone" and write.attempts == 3
    assert window.take(10.0) is None  # a2 waits until a1 is dead-lettered
    window.write_failed(write, 10.0)
    assert window.next_write(10.0) is None
    assert window.ready_at(10.0) == 10.0 + WRITE_RETRY
    again = window.next_write(10.0 + WRITE_RETRY)
    assert again is write
    window.written(write)
    assert ids(window.take(11.0)) == ["a2"]


def test_a_block_in_flight_at_close_is_released_without_a_record() -> None:
    store = Store()
    window = Window(block_size=1, window=8)
    started(window, store)
    (seq, e), *_ = store.add("a1")
    window.put(seq, e, 0.0)
    block = window.take(0)
    assert block is not None
    window.done(block, SINK_CLOSED, 1)
    assert window.next_write(0) is None and window.unreleased == 0 and window.idle
    assert store.waiting == {1}  # it goes after the restart


def test_a_full_window_reads_the_rest_back_in_order() -> None:
    store = Store()
    window = Window(block_size=1, window=4)
    started(window, store)
    added = store.add(*(f"a{i}" for i in range(10)))
    for seq, e in added:
        window.put(seq, e, 0.0)
    assert not window.live and window.buffered == 4
    assert play(window, store) == [f"a{i}" for i in range(10)]
    assert window.live and window.idle and store.waiting == set()


def test_a_backlog_read_back_goes_in_full_blocks_at_every_refill() -> None:
    # 20,060 events at 100 per block through a 1,024-event window, each refill answered as
    # late as can be (once nothing else can go): the events short of a block wait for it, so
    # 200 full blocks and the last 60 go (not 216 blocks, one cut short at every refill)
    store = Store()
    store.add(*(f"a{i}" for i in range(20_060)))
    window = Window(block_size=100, window=1024)
    read = window.next_read(0)
    assert read is not None
    window.counted(read, len(store.waiting), store.seq)
    sizes: list[int] = []
    pending: Read | None = None  # the read under way
    for _ in range(1_000):  # (bounded: a few steps per block)
        if not store.waiting:
            break
        pending = pending or window.next_read(0)
        block = window.take(0)
        if block is not None:
            sizes.append(len(block))
            window.done(block, None, 1)
            write = window.next_write(0)
            assert write is not None
            store.waiting.difference_update(write.seqs)
            window.written(write)
        elif pending is not None:
            window.read(pending, store.rows(pending), 0)
            pending = None
    assert sizes == [100] * 200 + [60]
    assert window.live and window.idle


def test_a_partial_block_goes_when_the_store_has_nothing_more_or_cannot_be_read() -> None:
    store = Store()
    store.add(*(f"a{i}" for i in range(12)))
    window = Window(block_size=5, window=8, confirm_now=store.confirm_now)
    started(window, store)  # a0-a7: as many as it asked for, so more may wait behind them
    block = window.take(0)
    assert ids(block) == ["a0", "a1", "a2", "a3", "a4"]
    window.done(block, None, 1)
    # a5-a7 are short of a block and a refill is wanted: they wait for it, on no timer (the
    # read's end wakes the stage)
    assert window.take(0) is None and window.ready_at(0) is None
    read = window.next_read(0)
    assert read is not None and read.kind is ReadKind.FORWARD
    window.read_failed(read, 0)  # the store fails: what is buffered goes as it is
    block = window.take(0)
    assert ids(block) == ["a5", "a6", "a7"]
    window.done(block, None, 1)
    read = window.next_read(READ_RETRY)
    assert read is not None
    window.read(read, store.rows(read), READ_RETRY)  # a8-a11: fewer than asked, the end
    assert ids(window.take(READ_RETRY)) == ["a8", "a9", "a10", "a11"]


def test_a_truncated_key_waits_for_its_catch_up_to_fill_a_block() -> None:
    store = Store()
    window = Window(
        block_size=3, window=16, concurrency=2, key=repository, confirm_now=store.confirm_now
    )
    started(window, store)
    put(window, store, *(f"a{i}" for i in range(14)))
    assert window.truncated == {"a": 9}  # a0-a7 buffered: its cap, 16 // 2
    # a6, a7 are short of a block when a5 goes: they wait for a8... from the store
    assert blocks_played(window, store) == [
        ["a0", "a1", "a2"],
        ["a3", "a4", "a5"],
        ["a6", "a7", "a8"],
        ["a9", "a10", "a11"],
        ["a12", "a13"],
    ]
    assert window.idle and not store.waiting


class CountingStore(Store):
    """A :class:`Store` that notes every row its reads return."""

    def __init__(self) -> None:
        super().__init__()
        self.returned: list[int] = []

    def rows(self, read: Read) -> list[Row]:
        rows = super().rows(read)
        self.returned += [seq for seq, _, _ in rows]
        return rows


def test_a_window_that_fell_behind_reads_each_event_from_the_store_once() -> None:
    # events put while the window is full are left to the store and read back as it drains:
    # each once, never the same stretch again, however far behind it falls
    store = CountingStore()
    window = Window(block_size=10, window=64, confirm_now=store.confirm_now)
    started(window, store)
    delivered: list[str] = []
    for _ in range(100):  # 20 events in, 10 out, a hundred times: 1,000 behind at the end
        put(window, store, *(f"x{store.seq + i}" for i in range(20)))
        block = window.take(0)
        if block is not None:
            delivered += ids(block)
            window.done(block, None, 1)
        if (read := window.next_read(0)) is not None:
            window.read(read, store.rows(read), 0)
    assert not window.live and len(store.waiting) >= 1000
    delivered += play(window, store)
    assert delivered == [f"x{i}" for i in range(2000)]
    assert len(store.returned) == len(set(store.returned))  # no event read twice
    assert window.live and window.idle


def test_a_stuck_key_buffers_at_most_its_share_and_the_others_go_on() -> None:
    store = Store()
    window = Window(block_size=1, window=8, concurrency=2, key=repository)
    started(window, store)
    names = [f"a{i}" for i in range(20)] + ["b0", "b1"] + [f"a{i}" for i in range(20, 30)]
    put(window, store, *names)
    stuck = window.take(0)
    assert ids(stuck) == ["a0"]  # never done: its key is stuck
    assert window.truncated == {"a": 5}  # a buffers window // concurrency events: a1-a4
    assert play(window, store) == ["b0", "b1"]
    assert window.buffered <= window.cap
    # a comes unstuck: its events go in order, the truncated ones read back from the store
    assert stuck is not None
    window.done(stuck, None, 1)
    assert play(window, store) == [f"a{i}" for i in range(1, 30)]
    assert window.idle and not store.waiting


def test_a_catch_up_read_asks_for_no_more_rows_than_the_keys_behind_can_take() -> None:
    # a single busy repository: its later events are re-read from its mark, a few at a time,
    # never a whole window of rows to keep a handful
    store = Store()
    window = Window(
        block_size=1, window=8, concurrency=2, key=repository, confirm_now=store.confirm_now
    )
    started(window, store)
    put(window, store, *(f"a{i}" for i in range(10)))
    assert window.truncated == {"a": 5}  # a0-a3 buffered (its cap: 8 // 2)
    for _ in range(2):
        block = window.take(0)
        assert block is not None
        window.done(block, None, 1)
    read = window.next_read(0)
    assert read is not None and read.kind is ReadKind.CATCH_UP
    assert (read.after, read.limit) == (4, 2)  # a2, a3 buffered: room for two more of a
    window.read(read, store.rows(read), 0)
    assert play(window, store) == [f"a{i}" for i in range(2, 10)]


def test_a_partial_block_of_live_events_waits_max_delay_and_a_read_back_one_does_not() -> None:
    store = Store()
    window = Window(block_size=3, window=8, max_delay=2.0)
    started(window, store)
    (seq, e), *_ = store.add("a1")
    window.put(seq, e, 10.0)
    assert window.take(10.0) is None
    assert window.ready_at(10.0) == 12.0
    assert window.take(11.9) is None
    assert ids(window.take(12.0)) == ["a1"]
    # after a restart, the same partial block is read back from the store: it goes at once
    restarted = Window(block_size=3, window=8, max_delay=2.0)
    started(restarted, store, now=20.0)
    assert ids(restarted.take(20.0)) == ["a1"]


def test_an_event_joining_a_waiting_partial_block_is_quiet_until_it_fills_it() -> None:
    # quiet tells the stage it need not look for a block: the block's time is unchanged
    store = Store()
    window = Window(block_size=3, window=8, max_delay=2.0)
    started(window, store)
    quiet = []
    for seq, e in store.add("a1", "a2", "a3", "a4"):
        window.put(seq, e, 10.0)
        quiet.append(window.quiet)
        if len(quiet) == 3:
            assert ids(window.take(10.0)) == ["a1", "a2", "a3"]  # full: goes at once
    # a1 starts a block (not quiet), a2 joins it, a3 fills it, a4 starts the next one
    assert quiet == [False, True, False, False]
    # without batching waits every block goes at once: never quiet
    plain = Window(block_size=3, window=8)
    started(plain, store)
    (seq, e), *_ = store.add("b1")
    plain.put(seq, e, 10.0)
    (seq, e), *_ = store.add("b2")
    plain.put(seq, e, 10.0)
    assert not plain.quiet


def test_the_delivery_delay_holds_a_key_and_not_the_others() -> None:
    store = Store()
    due = {"a1": 5.0, "b1": 1.0, "a2": 1.0}
    window = Window(
        block_size=2,
        window=8,
        concurrency=2,
        key=repository,
        due=lambda e, arrived: due[e.id],
    )
    started(window, store)
    put(window, store, "a1", "b1", "a2")
    assert window.take(0.0) is None
    assert window.ready_at(0.0) == 1.0
    assert ids(window.take(1.0)) == ["b1"]
    assert window.take(1.0) is None  # a2 may go, but not before a1
    assert window.ready_at(1.0) == 5.0
    assert ids(window.take(5.0)) == ["a1", "a2"]


def test_a_failed_read_is_tried_again_after_a_while() -> None:
    store = Store()
    window = Window(block_size=1, window=8)
    read = window.next_read(0.0)
    assert read is not None
    window.read_failed(read, 0.0)
    assert window.next_read(0.5) is None
    assert window.ready_at(0.5) == READ_RETRY
    assert window.next_read(READ_RETRY) is not None
    assert not store.waiting


def test_a_poll_that_found_nothing_waits_unless_an_event_is_put() -> None:
    store = Store()
    window = Window(block_size=1, window=8, poll_wait=3.0)
    started(window, store, now=0.0)
    assert not window.live and window.ready_at(0.0) == 3.0
    (seq, e), *_ = store.add("a1")
    window.put(seq, e, 1.0)  # this process stored one: no need to wait for the poll
    read = window.next_read(1.0)
    assert read is not None and read.kind is ReadKind.FORWARD
    window.read(read, store.rows(read), 1.0)
    assert ids(window.take(1.0)) == ["a1"]


def test_a_rescan_reads_from_the_start_and_skips_what_is_in_flight_or_recorded() -> None:
    store = Store()
    window = Window(block_size=1, window=8, concurrency=2, key=repository)
    started(window, store)
    put(window, store, "a1", "b1", "a2")
    a1, b1 = window.take(0), window.take(0)
    assert a1 is not None and b1 is not None
    window.rescan()
    read = window.next_read(0)
    assert read is not None and read.after == 0
    rows = store.rows(read)  # the store answers before b1's confirm is recorded
    window.done(b1, None, 1)
    write = window.next_write(0)
    assert write is not None
    store.waiting.difference_update(write.seqs)
    window.written(write)
    window.read(read, rows, 0)
    assert window.take(0) is None  # a1 in flight, b1 recorded: only a2 is buffered
    window.done(a1, None, 1)
    assert window.next_write(0) is not None  # (a1's confirm: a's next block may go)
    assert ids(window.take(0)) == ["a2"]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_schedules_never_repeat_a_recorded_block_and_keep_each_key_in_order(
    data: st.DataObject,
) -> None:
    """Random interleavings of ingest, reads answered late (or failing), deliveries finishing
    in any order, writes failing, rescans, with or without other processes appending: after
    every step, a crash would repeat only blocks not recorded (in flight, or in the confirm
    write under way); each event goes once; each key in order; the window stays within its
    bound; and once things calm down everything is delivered."""
    block_size = data.draw(st.integers(1, 3), "block_size")
    size = data.draw(st.integers(block_size, 8), "window")
    concurrency = data.draw(st.integers(1, 4), "concurrency")
    at_once = data.draw(st.booleans(), "confirm_now")
    polls = data.draw(st.booleans(), "other processes append")
    store = Store()
    window = Window(
        block_size=block_size,
        window=size,
        concurrency=concurrency,
        key=repository,
        confirm_now=store.confirm_now if at_once else None,
        poll_wait=0.0 if polls else None,
    )
    names = [f"{data.draw(st.sampled_from('abcd'))}{i}" for i in range(30)]
    order = {name: i for i, name in enumerate(names)}
    in_flight: list[Sequence[Event]] = []
    delivered: set[int] = set()  # seqs whose delivery the receiver accepted
    handed: list[str] = []
    reads: list[tuple[Read, list[Row] | None]] = []  # a read under way, answered or not
    writes: list[Write] = []

    def check() -> None:
        assert window.buffered <= size
        assert window.unreleased <= concurrency
        busy = [repository(block[0]) for block in in_flight]
        assert concurrency == 1 or len(busy) == len(set(busy))
        unrecorded = delivered & store.waiting  # what a crash would deliver again
        assert unrecorded <= window.recording
        if at_once:
            assert not unrecorded

    def step(action: str) -> None:
        if action == "ingest" and store.seq < len(names):
            seq, e = store.add(names[store.seq])[0]
            window.put(seq, e, 0.0)
        elif action == "take":
            block = window.take(0.0)
            if block is not None:
                in_flight.append(block)
                handed.extend(ids(block))
        elif action == "finish" and in_flight:
            block = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
            failed = data.draw(st.integers(0, 9)) == 0
            seqs = window.seqs_of(block)
            if not failed:
                delivered.update(seqs)
            window.done(block, RuntimeError("gave up") if failed else None, 1)
        elif action == "read":
            read = window.next_read(0.0)
            if read is not None:
                reads.append((read, None))
        elif action == "snapshot" and reads and reads[0][1] is None:
            reads[0] = (reads[0][0], store.rows(reads[0][0]) if reads[0][0].limit else [])
        elif action == "answer" and reads:
            read, rows = reads.pop(0)
            if data.draw(st.integers(0, 7)) == 0:
                window.read_failed(read, -READ_RETRY)  # (due again at once)
            elif read.kind is ReadKind.START:
                window.counted(read, len(store.waiting), store.seq)
            else:
                window.read(read, rows if rows is not None else store.rows(read), 0.0)
        elif action == "write":
            write = window.next_write(0.0)
            if write is not None:
                writes.append(write)
        elif action == "written" and writes:
            write = writes.pop(0)
            if data.draw(st.integers(0, 4)) == 0:
                window.write_failed(write, -WRITE_RETRY)  # (due again at once)
            else:
                store.waiting.difference_update(write.seqs)
                window.written(write)
        elif action == "rescan" and data.draw(st.integers(0, 5)) == 0:
            window.rescan()
        check()

    actions = ["ingest", "take", "finish", "read", "snapshot", "answer", "write", "written"]
    for _ in range(data.draw(st.integers(0, 200), "steps")):
        step(data.draw(st.sampled_from([*actions, "rescan"])))
    # calm: everything is ingested, delivered, read and written without failures
    for _ in range(5000):
        if store.seq == len(names) and not store.waiting and not in_flight and window.idle:
            break
        for action in actions:
            if action == "finish" and in_flight:
                block = in_flight.pop(0)
                delivered.update(window.seqs_of(block))
                window.done(block, None, 1)
                check()
            elif action == "written" and writes:
                write = writes.pop(0)
                store.waiting.difference_update(write.seqs)
                window.written(write)
                check()
            elif action == "answer" and reads:
                read, rows = reads.pop(0)
                if read.kind is ReadKind.START:
                    window.counted(read, len(store.waiting), store.seq)
                else:
                    window.read(read, rows if rows is not None else store.rows(read), 0.0)
                check()
            elif action not in ("finish", "written", "answer"):
                step(action)
    assert not store.waiting and window.idle
    assert sorted(handed) == sorted(names)  # each event handed out once
    for key in "abcd":
        mine = [name for name in handed if name[0] == key]
        assert mine == sorted(mine, key=order.__getitem__)  # each key in order


def test_the_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="block_size"):
        Window(block_size=4, window=2)
    with pytest.raises(ValueError, match="concurrency"):
        Window(block_size=1, window=2, concurrency=0)
