"""The SQLite store's format: one row per event, a cursor per endpoint, the disk given back.

What an endpoint has to deliver is the events routed to it above its cursor, less those done
beyond the cursor, plus those owed beside it (see rxsinks._store.ledger). These tests read the
tables themselves, with a plain sqlite3 connection, after the store closed (or beside it).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import rxsinks
from rxsinks._exceptions import StoreError
from rxsinks._store.checkpoint import Checkpointer
from rxsinks._store.ledger import FORMAT
from rxsinks._store.sqlite import SQLiteStore

DATA = Path(__file__).parent / "data"


def events(count: int, prefix: str = "e", size: int = 0) -> list[rxsinks.Event]:
    extra = {"padding": "x" * size} if size else {}
    return [
        rxsinks.Event.new("push", target={"repository": f"r/{i}"}, id=f"{prefix}{i}", **extra)
        for i in range(count)
    ]


@contextmanager
def tables(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path)
    try:
        yield db
    finally:
        db.close()


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SQLiteStore]:
    """The store at ``path``, open."""
    store = SQLiteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def rows(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def cursor(db: sqlite3.Connection, endpoint: str) -> int:
    return int(db.execute("SELECT cursor FROM endpoints WHERE name = ?", (endpoint,)).fetchone()[0])


async def ids(store: SQLiteStore, endpoint: str) -> list[str]:
    return [event.id for _, event in await store.read(endpoint, 0, 100_000)]


async def confirmed_through_the_journal(
    store: SQLiteStore, endpoint: str, blocks: list[list[int]]
) -> None:
    """Confirm ``blocks`` as a delivering endpoint does: in the journal, block by block."""
    for block in blocks:
        for _ in range(500):
            if store.confirm_now(endpoint, block):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"the journal never took {block}")


# -- the cost per event ----------------------------------------------------------------------


@pytest.mark.parametrize("endpoints", [1, 60])
async def test_an_event_is_one_row_whatever_the_number_of_endpoints(
    tmp_path: Path, endpoints: int
) -> None:
    path = tmp_path / "s.db"
    names = [f"hook-{index}" for index in range(endpoints)]
    async with opened(path) as store:
        seqs = await store.append(events(200), [names] * 200)
        assert await store.pending() == 200 * endpoints
        # each endpoint delivers the events in blocks of 20, in order
        for name in names:
            await confirmed_through_the_journal(
                store, name, [seqs[i : i + 20] for i in range(0, 200, 20)]
            )
        assert await store.pending() == 0
    with tables(path) as db:
        # the same rows for one endpoint or sixty: the events, one route set, the endpoints
        assert rows(db, "events") == 200
        assert rows(db, "route_sets") == 2  # (and the empty set)
        assert rows(db, "endpoints") == endpoints
        assert rows(db, "beyond") == rows(db, "owed") == 0
        assert {cursor(db, name) for name in names} == {seqs[-1]}


async def test_confirms_out_of_order_are_kept_beyond_the_cursor_until_the_gap_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        seqs = await store.append(events(10), [["a"]] * 10)
        # blocks of several keys finish in any order: 0-1 first, then 5-6 and 8 ahead of 2-4
        await confirmed_through_the_journal(store, "a", [seqs[0:2], seqs[5:7], seqs[8:9]])
        assert await ids(store, "a") == ["e2", "e3", "e4", "e7", "e9"]
        assert await store.backlog("a") == (5, seqs[-1])
        await store.close()
        with tables(path) as db:
            assert cursor(db, "a") == seqs[1]
            beyond = [seq for (seq,) in db.execute("SELECT seq FROM beyond ORDER BY seq")]
            assert beyond == [seqs[5], seqs[6], seqs[8]]
        store = SQLiteStore(path)
        await store.open()
        await confirmed_through_the_journal(store, "a", [seqs[2:5]])  # the gap closes
        assert await ids(store, "a") == ["e7", "e9"]
        await store.close()
        with tables(path) as db:
            assert cursor(db, "a") == seqs[6]  # over everything done, up to e7
            assert rows(db, "beyond") == 1  # e8, still beyond e7
        store = SQLiteStore(path)
        await store.open()
        await store.confirm("a", [seqs[9], seqs[7]])
        assert await ids(store, "a") == []
    finally:
        await store.close()
    with tables(path) as db:
        assert cursor(db, "a") == seqs[-1] and rows(db, "beyond") == 0


async def test_each_endpoint_reads_only_what_was_routed_to_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as store:
        # routes as filters make them: a takes everything, b the even events, c none of these
        batch = events(12)
        routes = [["a", "b"] if i % 2 == 0 else ["a"] for i in range(12)]
        seqs = await store.append(batch, routes)
        await store.append(events(3, "c"), [["c"]] * 3)
        await store.append(events(2, "nobody"), [[]] * 2)
        assert await ids(store, "a") == [f"e{i}" for i in range(12)]
        assert await ids(store, "b") == [f"e{i}" for i in range(0, 12, 2)]
        assert await ids(store, "c") == ["c0", "c1", "c2"]
        # a read after a seq starts there, in whichever route sets the events are
        assert [s for s, _ in await store.read("b", seqs[3], 2)] == [seqs[4], seqs[6]]
        # b's cursor goes over the events not routed to it
        await store.confirm("b", [seqs[i] for i in range(0, 12, 2)])
        assert await store.backlog("b") == (0, seqs[-1] + 5)
        assert await store.compact() == 2  # nobody's: gone at once
        # a has not delivered anything: every event routed to it stays
        assert await store.compact() == 0
        await store.confirm("a", seqs)
        assert await store.compact() == 12
        assert await ids(store, "c") == ["c0", "c1", "c2"]
    with tables(path) as db:
        assert rows(db, "events") == 3  # c's
        assert rows(db, "route_sets") == 4  # {a, b}, {a}, {c} and the empty set


async def test_dead_letters_and_replays_above_and_below_the_cursor(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as store:
        seqs = await store.append(events(8), [["a", "b"]] * 8)
        await store.confirm("a", seqs[0:2])
        await store.dead_letter("a", seqs[2:3], "422", 1)  # at the cursor: it moves over it
        await store.dead_letter("a", seqs[5:6], "410", 2)  # beyond it
        await store.confirm("a", seqs[3:5])
        assert await ids(store, "a") == ["e6", "e7"]
        assert await ids(store, "b") == [f"e{i}" for i in range(8)]
        await store.confirm("b", seqs)
        # up to a's cursor (e4) everything goes but the dead letter's event (e2); e5-e7 wait
        assert await store.compact() == 4
        await store.confirm("a", seqs[6:8])
        assert await store.compact() == 2  # e6, e7; e5 is a dead letter
        assert [d.event.id for d in await store.dead_letters("a")] == ["e2", "e5"]
        replayed = await store.replay("a")
        assert replayed == [("a", seqs[2]), ("a", seqs[5])]
        # both below a's cursor now: owed beside it, read back in seq order
        assert await ids(store, "a") == ["e2", "e5"]
        assert await ids(store, "b") == []
        assert await store.compact() == 0  # owed: kept
        await store.confirm("a", [seqs[5]])
        assert await ids(store, "a") == ["e2"]
        await store.confirm("a", [seqs[2]])
        assert await ids(store, "a") == []
        assert await store.compact() == 2
    with tables(path) as db:
        assert rows(db, "events") == rows(db, "owed") == rows(db, "dead_letters") == 0


async def test_a_dead_letter_replayed_above_the_cursor_is_owed_by_the_routes_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as store:
        seqs = await store.append(events(4), [["a"]] * 4)
        await store.dead_letter("a", seqs[2:3], "422", 1)  # beyond the cursor (0)
        assert await ids(store, "a") == ["e0", "e1", "e3"]
        assert await store.replay("a") == [("a", seqs[2])]
        assert await ids(store, "a") == ["e0", "e1", "e2", "e3"]
        await store.confirm("a", seqs)
    with tables(path) as db:
        assert rows(db, "owed") == rows(db, "beyond") == 0 and cursor(db, "a") == seqs[-1]


async def test_moving_a_backlog_keeps_what_the_new_endpoint_already_has_once(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path / "s.db") as store:
        seqs = await store.append(events(6), [["old", "new"]] * 3 + [["old"]] * 3)
        await store.confirm("new", seqs[:2])  # new delivered e0, e1; e2 is pending for both
        await store.confirm("old", seqs[:1])
        await store.dead_letter("old", seqs[3:4], "gone", 1)
        moved = await store.move_endpoint("old", "new")
        # old owed e1, e2, e4, e5: e2 new has already (kept once), e1 it delivers again
        assert (moved.pending, moved.dead_letters) == (3, 1)
        assert await ids(store, "new") == ["e1", "e2", "e4", "e5"]
        assert await ids(store, "old") == []
        assert [d.endpoint for d in await store.dead_letters()] == ["new"]
        assert [b.endpoint for b in await store.backlogs()] == ["new"]
        dropped = await store.drop_endpoint("new")
        assert (dropped.pending, dropped.dead_letters) == (4, 1)
        assert await store.backlogs() == []
        assert await store.compact() == 6


async def test_confirms_applied_twice_or_for_other_events_change_nothing(tmp_path: Path) -> None:
    # a journal record applied again, or naming an event not routed to the endpoint (another
    # endpoint's), must not move the cursor over an event still to deliver
    async with opened(tmp_path / "s.db") as store:
        seqs = await store.append(events(6), [["a"], ["b"]] * 3)
        await store.confirm("a", [seqs[1], seqs[3]])  # b's events
        assert await ids(store, "a") == ["e0", "e2", "e4"]
        await store.confirm("a", [seqs[0]])
        await store.confirm("a", [seqs[0]])
        assert await ids(store, "a") == ["e2", "e4"]
        assert await store.pending("a") == 2


# -- endpoints that fell behind ------------------------------------------------------------


async def test_endpoints_behind_on_the_same_events_decode_each_of_them_once(
    tmp_path: Path,
) -> None:
    # twenty endpoints read the same backlog back, a window at a time, side by side (as a
    # relay that fell behind does): each event is decoded once, and they share it
    path = tmp_path / "s.db"
    names = [f"hook-{index}" for index in range(20)]
    writer = SQLiteStore(path)
    await writer.open()
    for start in range(0, 3000, 500):
        await writer.append(events(500, f"b{start}-"), [names] * 500)
    await writer.close()
    store = SQLiteStore(path)  # nothing of the backlog in this one's memory
    await store.open()
    try:
        seen: dict[str, dict[int, rxsinks.Event]] = {name: {} for name in names}
        after = dict.fromkeys(names, 0)
        for _ in range(6):  # six windows of 500 each
            for name in names:
                rows = await store.read(name, after[name], 500)
                seen[name].update(rows)
                after[name] = rows[-1][0]
        assert all(len(got) == 3000 for got in seen.values())
        assert store.decoded == 3000  # not 60,000
        first, *others = names
        assert all(seen[first][seq] is seen[other][seq] for other in others for seq in seen[first])
    finally:
        await store.close()


async def test_durable_endpoints_draining_one_backlog_decode_it_once(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    received: dict[str, int] = {}

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        received[name] = received.get(name, 0) + len((await request.json())["events"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook/{name}", handler)
    server = await aiohttp_server(app)
    path = tmp_path / "s.db"
    names = [f"hook-{index}" for index in range(12)]
    writer = SQLiteStore(path)
    await writer.open()
    await writer.append(events(2000, "lag"), [names] * 2000)
    await writer.close()
    async with opened(path) as store:
        endpoints = [
            rxsinks.Endpoint(
                name,
                str(server.make_url(f"/hook/{name}")),
                store=store,
                store_window=128,
                batch=rxsinks.Batching(max_events=25),
            )
            for name in names
        ]
        for endpoint in endpoints:
            endpoint.start()
        reports = await asyncio.gather(*(endpoint.aclose(timeout=120) for endpoint in endpoints))
        assert all(report.flushed for report in reports)
        assert received == dict.fromkeys(names, 2000)
        assert store.decoded == 2000  # once for all twelve endpoints


# -- the previous format ---------------------------------------------------------------------


def format_1_store(directory: Path) -> Path:
    """The store tests/data/store-format-1/make.py wrote with format 1 (see its docstring)."""
    with tarfile.open(DATA / "store-format-1" / "store-format-1.tar.gz") as archive:
        archive.extractall(directory, filter="data")
    return directory / "rxsinks.db"


async def test_a_store_of_the_previous_format_is_migrated_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = format_1_store(tmp_path)
    with tables(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == (
            "rxsinks-store-1",
        )
        assert rows(db, "deliveries") == 12
    store = SQLiteStore(path, exclusive=True)
    await store.open()
    try:
        assert "migrated from format 'rxsinks-store-1'" in caplog.text
        # what each endpoint had to deliver, the journal's confirms of the killed process
        # applied (f3, f6 for a), in the same order
        assert await ids(store, "a") == ["f5", "f7", "f8"]
        assert await ids(store, "b") == ["f1", "f2", "f3", "f4", "f5", "f10", "f11"]
        letters = {(d.endpoint, d.event.id, d.error) for d in await store.dead_letters()}
        assert letters == {("a", "f2", "422 Unprocessable Entity"), ("b", "f9", "410 Gone")}
        assert [(b.endpoint, b.pending, b.dead_letters) for b in await store.backlogs()] == [
            ("a", 3, 1),
            ("b", 7, 1),
        ]
        # it goes on as any store: a new event, a confirm, a replay, a compaction
        (seq,) = await store.append(events(1, "new"), [["a"]])
        assert await ids(store, "a") == ["f5", "f7", "f8", "new0"]
        pending = [s for s, _ in await store.read("a", 0, 9)]
        await confirmed_through_the_journal(store, "a", [pending])
        assert await ids(store, "a") == []
        assert await store.replay("a") == [("a", 3)]
        assert await ids(store, "a") == ["f2"]
        # f0 (delivered everywhere) and a's own f6-f8 and new0; b still has to deliver the
        # others, f9 is a dead letter
        assert await store.compact() == 5
    finally:
        await store.close()
    with tables(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == (FORMAT,)
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "deliveries" not in names and "journal_endpoints" not in names
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        assert seq == 13
    again = SQLiteStore(path)
    await again.open()  # migrated once: opens as it is
    try:
        assert await ids(again, "b") == ["f1", "f2", "f3", "f4", "f5", "f10", "f11"]
    finally:
        await again.close()


async def test_the_previous_format_in_use_by_an_older_relay_is_refused(tmp_path: Path) -> None:
    path = format_1_store(tmp_path)
    before = path.read_bytes()
    # a relay of the previous version holds the store's lock while it runs
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4242\n", 0)
        with pytest.raises(StoreError, match=r"previous format .* must be migrated.*pid 4242"):
            await SQLiteStore(path).open()
    finally:
        os.close(fd)
    assert path.read_bytes() == before
    with tables(path) as db:
        assert rows(db, "deliveries") == 12  # untouched


async def test_a_store_that_cannot_give_pages_back_is_rewritten_once(tmp_path: Path) -> None:
    # a migration killed between its commit and the file's rewrite leaves such a file
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    await store.append(events(3), [["a"]] * 3)
    await store.close()
    with tables(path) as db:
        db.execute("PRAGMA auto_vacuum=NONE")
        db.execute("VACUUM")
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    async with opened(path) as store:
        assert await ids(store, "a") == ["e0", "e1", "e2"]
    with tables(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)


# -- the disk given back ---------------------------------------------------------------------


async def test_a_drained_backlog_gives_its_disk_back(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    wal = Path(f"{path}-wal")
    async with opened(path) as store:
        with tables(path) as db:
            assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # a new store
        seqs: list[int] = []
        for chunk in range(40):  # 8,000 events of about 2 KB: 16 MB
            seqs += await store.append(events(200, f"c{chunk}-", 2000), [["a"]] * 200)
        await store.confirm("a", seqs)
        peak = path.stat().st_size + wal.stat().st_size
        assert peak > 16_000_000
        assert await store.compact() == 8_000
        for _ in range(500):  # the checkpointer copies the log back and truncates it
            if path.stat().st_size < 2_000_000 and wal.stat().st_size <= 4 << 20:
                break
            await asyncio.sleep(0.02)
        assert path.stat().st_size < 2_000_000  # the freed pages went back
        assert wal.stat().st_size <= 4 << 20
        # and the store goes on
        more = await store.append(events(3, "after"), [["a"]] * 3)
        assert [s for s, _ in await store.read("a", 0, 10)] == more


def test_the_checkpointer_truncates_a_log_that_is_all_copied_back(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (x TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 2000)
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 1 << 20
    checkpointer = Checkpointer(path, interval=0.01, truncate_above=64 << 10)
    try:
        for _ in range(500):
            if checkpointer.truncated:
                break
            checkpointer.poke()
            time.sleep(0.01)
        assert checkpointer.truncated and wal.stat().st_size == 0
        assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (2000,)
    finally:
        checkpointer.stop()
        db.close()
