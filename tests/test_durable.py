"""The durable buffer behind a delivery stage: ``deliver(sink, queue=DurableQueue(store, ...))``.

The first half runs in virtual time: the stage on a ``TestScheduler``, a store in memory
(tests/memory_store.py) whose calls finish in the event loop's next turns, the wall clock tied
to the virtual one. :class:`Virtual` advances time half a second at a time and lets every store
call finish in between, so a store call takes one step of virtual time and every wait (a
batching wait, a delivery delay, a retry) lands on an exact virtual time. The second half runs
the same stage over the real stores (SQLite, Redis) in real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from rxsinks import DurableQueue, Event, Outcome, block_time, deliver, retry_with_breaker
from rxsinks._store.redis import RedisStore
from rxsinks._store.sqlite import SQLiteStore
from rxsinks._store.window import READ_RETRY, WRITE_RETRY
from tests.memory_store import JournalingMemoryStore, MemoryStore

pytest_plugins = ["tests.redis_server"]  # the redis_url fixture

STEP = 0.5  # virtual seconds per step: every wait in these tests is a multiple of it
WALL = 1_800_000_000.0  # the wall clock at virtual time 0


def event(name: str, stamp: float | None = None) -> Event:
    """An event named ``name`` of repository ``name[0]``; with ``stamp``, that wall-clock
    time as its ``timestamp``, else none at all."""
    data: dict[str, Any] = {"id": name, "action": "push", "target": {"repository": name[0]}}
    if stamp is not None:
        data["timestamp"] = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Event.from_dict(data)


def repository(block: Sequence[Event]) -> Hashable:
    return block[0].target.repository


class Virtual:
    """Virtual time: a TestScheduler, the wall clock tied to it, and a store in memory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: MemoryStore | None = None) -> None:
        self.scheduler = TestScheduler()
        monkeypatch.setattr(time, "time", self.wall)
        self.store = store or MemoryStore()
        self.store.clock = self.now
        self.store.wall = self.wall
        self.queues: list[DurableQueue] = []
        self.attempts: list[tuple[float, list[str]]] = []

    def now(self) -> float:
        return float(self.scheduler.clock)

    def wall(self) -> float:
        return WALL + self.now()

    def queue(self, **options: Any) -> DurableQueue:
        queue = DurableQueue(self.store, "hook", **options)
        self.queues.append(queue)
        return queue

    def sink(
        self, ticks: Callable[[Sequence[Event]], float] = lambda _: 0.0, fails: Any = None
    ) -> Callable[[Sequence[Event]], Observable[Any] | None]:
        """A sink recording each attempt at its virtual time; an attempt takes ``ticks(block)``
        and fails when ``fails(block, now)`` says so."""

        def deliver_block(block: Sequence[Event]) -> Observable[Any] | None:
            self.attempts.append((self.now(), [e.id for e in block]))
            failed = fails is not None and fails(block, self.now())
            duration = ticks(block)
            if not duration:
                if failed:
                    raise RuntimeError("refused")
                return None
            outcome: Observable[Any] = (
                reactivex.throw(RuntimeError("refused")) if failed else reactivex.empty()
            )
            return reactivex.timer(duration, scheduler=self.scheduler).pipe(
                ops.ignore_elements(), ops.concat(outcome)
            )

        return deliver_block

    def start(self, queue: DurableQueue, sink: Any, **options: Any) -> tuple[Subject[Any], Any]:
        """Subscribe a stage over ``queue``; returns its inlet and the subscription."""
        source: Subject[Any] = Subject()
        outcomes: list[Outcome] = []
        stage = deliver(sink, queue=queue, scheduler=self.scheduler, **options)
        subscription = source.pipe(stage).subscribe(outcomes.append)
        return source, subscription

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.scheduler.schedule_absolute(when, lambda *_: action())

    def ingest(self, source: Subject[Any], *events: Event) -> None:
        """Store ``events`` and hand them to the stage, as the relay's ingest does."""
        for seq, stored in zip(self.store.add(events), events, strict=True):
            source.on_next((seq, stored))

    async def run(self, until: float) -> None:
        """Advance to ``until``, a step at a time, the store's calls finished after each."""
        while True:
            while any(queue.store_calls for queue in self.queues):
                await asyncio.sleep(0)
            if self.now() >= until:
                return
            self.scheduler.advance_by(STEP)

    def delivered(self) -> list[str]:
        """Every event id in the order its block was attempted (attempts that failed too)."""
        return [name for _, names in self.attempts for name in names]


# -- virtual time ------------------------------------------------------------------------------


async def test_a_partial_block_waits_max_delay_and_a_full_one_goes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch)
    source, _ = v.start(v.queue(block_size=3, max_delay=2.0), v.sink())
    v.at(10.0, lambda: v.ingest(source, event("a1")))
    v.at(11.0, lambda: v.ingest(source, event("a2")))
    v.at(20.0, lambda: v.ingest(source, event("a3"), event("a4"), event("a5")))
    await v.run(30.0)
    assert v.attempts == [(12.0, ["a1", "a2"]), (20.0, ["a3", "a4", "a5"])]
    assert v.store.pending() == []


async def test_events_trickling_into_a_partial_block_go_at_its_time_or_when_it_fills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the events that join a waiting block schedule nothing: the wake-up set for the block's
    # head sends it, unless an event fills it first
    v = Virtual(monkeypatch)
    source, _ = v.start(v.queue(block_size=4, max_delay=3.0), v.sink())
    for when, name in [(10.0, "a1"), (11.0, "a2"), (12.0, "a3"), (12.5, "a4"), (13.0, "a5")]:
        v.at(when, lambda name=name: v.ingest(source, event(name)))
    v.at(14.0, lambda: v.ingest(source, event("a6")))
    v.at(20.0, lambda: v.ingest(source, event("a7")))
    await v.run(30.0)
    assert v.attempts == [
        (12.5, ["a1", "a2", "a3", "a4"]),
        (16.0, ["a5", "a6"]),
        (23.0, ["a7"]),
    ]
    assert v.store.pending() == []


async def test_a_failed_store_read_is_tried_again_a_second_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch)
    v.store.add([event("a1"), event("a2")])  # a backlog from before the start
    v.store.failing = {"backlog": 1, "read": 1}
    v.start(v.queue(), v.sink())
    await v.run(10.0)
    reads = [(when, what) for when, what in v.store.calls if not what.startswith("confirm")]
    assert [what for _, what in reads] == ["backlog", "backlog", "read after 0", "read after 0"]
    assert reads[1][0] - reads[0][0] == READ_RETRY
    assert reads[3][0] - reads[2][0] == READ_RETRY
    assert v.delivered() == ["a1", "a2"]
    assert v.attempts[0][0] == reads[3][0]  # as soon as the read came back


async def test_a_failed_confirm_is_written_again_later_and_holds_back_what_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch)
    source, _ = v.start(v.queue(), v.sink())
    await v.run(1.0)  # started: live events go to memory
    v.store.failing = {"confirm": 1}
    v.at(5.0, lambda: v.ingest(source, event("a1"), event("a2"), event("a3")))
    await v.run(10.0)
    confirms = [(when, what) for when, what in v.store.calls if what.startswith("confirm")]
    # a1's confirm fails and is written again WRITE_RETRY later; a2 went meanwhile (its confirm
    # overlaps a1's), a3 only once a1's confirm is in: a crash could repeat a1 and a2 only
    assert [what for _, what in confirms] == [
        "confirm [1]",
        "confirm [1]",
        "confirm [2]",
        "confirm [3]",
    ]
    assert confirms[1][0] - confirms[0][0] == WRITE_RETRY
    assert [names for _, names in v.attempts] == [["a1"], ["a2"], ["a3"]]
    assert v.attempts[2][0] >= confirms[1][0]
    assert v.store.confirmed == [1, 2, 3]


async def test_keys_go_side_by_side_each_in_order_and_confirms_out_of_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch, JournalingMemoryStore())
    took = {"a": 10.0, "b": 2.0, "c": 4.0}  # the receiver is slow for a, quick for b
    source, _ = v.start(
        v.queue(),
        v.sink(ticks=lambda block: took[repository(block)]),  # type: ignore[index]
        concurrency=3,
        key=repository,
    )
    names = ["a1", "b1", "a2", "c1", "b2", "b3", "a3", "c2"]
    v.at(10.0, lambda: v.ingest(source, *(event(name) for name in names)))
    await v.run(60.0)
    assert v.attempts == [
        (10.0, ["a1"]),
        (10.0, ["b1"]),
        (10.0, ["c1"]),
        (12.0, ["b2"]),  # b1 done: b's next
        (14.0, ["c2"]),  # c1 done (its timer was set before b2's)
        (14.0, ["b3"]),
        (20.0, ["a2"]),  # a1 done, after everything else
        (30.0, ["a3"]),
    ]
    seq = {name: i + 1 for i, name in enumerate(names)}
    # each block confirmed as it finished, out of seq order
    assert v.store.confirmed == [seq[n] for n in ["b1", "c1", "b2", "b3", "c2", "a1", "a2", "a3"]]
    assert v.store.pending() == []


async def test_a_failing_key_does_not_stop_the_others_even_past_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch)
    queue = v.queue(window=4)
    policy = retry_with_breaker(threshold=0, wait=lambda _: 5.0, scheduler=v.scheduler)
    # the receiver refuses repository a until t=100
    source, _ = v.start(
        queue,
        v.sink(fails=lambda block, now: repository(block) == "a" and now < 100),
        concurrency=2,
        key=repository,
        retry=policy,
    )
    names = ["a1", *(f"a{i}" for i in range(2, 12)), *(f"b{i}" for i in range(1, 21))]
    v.at(10.0, lambda: v.ingest(source, *(event(name) for name in names)))
    await v.run(99.0)
    delivered = [names[0] for when, names in v.attempts if names[0][0] == "b"]
    assert delivered == [f"b{i}" for i in range(1, 21)]  # all of b, a1 still failing
    assert {names[0] for _, names in v.attempts if names[0][0] == "a"} == {"a1"}
    assert queue.buffered <= 4
    await v.run(200.0)
    a_order = [names[0] for when, names in v.attempts if names[0][0] == "a" and when >= 100]
    assert a_order == ["a1", *(f"a{i}" for i in range(2, 12))]
    assert v.store.pending() == []


async def test_a_delay_counts_from_each_event_s_timestamp_and_holds_only_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch)
    source, _ = v.start(
        v.queue(), v.sink(), delay=5.0, timestamp=block_time, concurrency=2, key=repository
    )
    # at t=10: a1 happened just now (may go at 15), b1 four seconds ago (may go at 11), and a2
    # happened long ago but comes after a1
    v.at(
        10.0,
        lambda: v.ingest(
            source,
            event("a1", v.wall()),
            event("b1", v.wall() - 4),
            event("a2", v.wall() - 60),
        ),
    )
    await v.run(30.0)
    assert v.attempts == [(11.0, ["b1"]), (15.0, ["a1"]), (15.0, ["a2"])]


async def test_a_delay_served_before_a_restart_is_not_served_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an event without a timestamp counts from when the store accepted it: a restart six
    # seconds into a ten-second delay waits four more, not ten
    v = Virtual(monkeypatch)
    source, subscription = v.start(v.queue(), v.sink(), delay=10.0, timestamp=block_time)
    v.at(2.0, lambda: v.ingest(source, event("a1")))  # may go at 12
    await v.run(6.0)
    assert v.attempts == []
    subscription.dispose()  # the crash
    v.queues.clear()
    v.start(v.queue(), v.sink(), delay=10.0, timestamp=block_time)
    await v.run(30.0)
    assert v.attempts == [(12.0, ["a1"])]


async def test_a_delay_never_holds_more_than_the_window_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = Virtual(monkeypatch)
    queue = v.queue(window=4)
    source, _ = v.start(queue, v.sink(), delay=5.0, timestamp=block_time)
    names = [f"a{i}" for i in range(10)]
    v.at(1.0, lambda: v.ingest(source, *(event(name) for name in names)))
    most = 0
    while v.now() < 20.0:
        await v.run(v.now() + STEP)
        most = max(most, queue.buffered)
    assert most == 4
    assert v.delivered() == names
    assert v.attempts[0] == (6.0, ["a0"])  # arrived at 1: held 5 seconds


# -- real stores -------------------------------------------------------------------------------


async def run_keyed(
    queue: DurableQueue, append: Callable[[list[Event]], Any], pending: Callable[[], Any]
) -> None:
    """Deliver 120 events of 6 repositories over ``queue`` with 4 blocks in flight, the
    receiver slower for some repositories; check every event once, each repository in order,
    blocks finishing (so confirmed) out of seq order, and the store left with nothing."""
    names = [f"{'abcdef'[i % 6]}{i:03d}" for i in range(120)]
    took = {"a": 0.004, "b": 0.0, "c": 0.002, "d": 0.0, "e": 0.001, "f": 0.003}
    got: list[str] = []
    in_flight: set[Hashable] = set()
    most = 0

    async def post(block: Sequence[Event]) -> None:
        nonlocal most
        key = repository(block)
        assert key not in in_flight  # one block per key
        in_flight.add(key)
        most = max(most, len(in_flight))
        await asyncio.sleep(took[str(key)])
        in_flight.discard(key)
        got.extend(e.id for e in block)

    source: Subject[Any] = Subject()
    subscription = source.pipe(
        deliver(post, queue=queue, concurrency=4, key=repository)
    ).subscribe()
    try:
        for seq, stored in await append([event(name) for name in names]):
            source.on_next((seq, stored))
        deadline = time.monotonic() + 30
        while len(got) < len(names) or await pending():
            assert time.monotonic() < deadline, f"{len(got)} delivered"
            await asyncio.sleep(0.01)
    finally:
        subscription.dispose()
    assert sorted(got) == sorted(names) and len(got) == len(names)
    for key in "abcdef":
        mine = [name for name in got if name[0] == key]
        assert mine == sorted(mine)
    assert got != sorted(got, key=lambda name: int(name[1:]))  # finished out of seq order
    assert most == 4


async def test_sqlite_delivers_keys_side_by_side_and_confirms_out_of_order(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:

        async def append(events: list[Event]) -> Any:
            return zip(await store.append(events, [["hook"]] * len(events)), events, strict=True)

        await run_keyed(
            DurableQueue(store, "hook", window=16), append, lambda: store.pending("hook")
        )
    finally:
        await store.close()


async def test_redis_delivers_keys_side_by_side_and_confirms_out_of_order(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url)
    await store.open()
    try:

        async def append(events: list[Event]) -> Any:
            return zip(await store.append(events, [["hook"]] * len(events)), events, strict=True)

        # (poll_interval: as a relay on Redis runs, reading every event from the store)
        await run_keyed(
            DurableQueue(store, "hook", window=16, poll_interval=0.05),
            append,
            lambda: store.pending("hook"),
        )
    finally:
        await store.close()
