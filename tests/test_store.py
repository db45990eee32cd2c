"""The SQLite store and the durable queue over it, with real files and real receivers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

import rxsinks
from rxsinks._exceptions import StoreError
from rxsinks._store.sqlite import SQLiteStore


def events(count: int, prefix: str = "e") -> list[rxsinks.Event]:
    return [
        rxsinks.Event.new("push", target={"repository": f"r/{i}"}, id=f"{prefix}{i}")
        for i in range(count)
    ]


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = SQLiteStore(tmp_path / "store.db")
    await opened.open()
    yield opened
    await opened.close()


async def test_append_read_confirm_in_order(store: SQLiteStore) -> None:
    batch = events(10)
    seqs = await store.append(batch, [["a", "b"]] * 5 + [["a"]] * 5)
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    rows = await store.read("a", 0, 100)
    assert [seq for seq, _ in rows] == seqs
    assert [event.id for _, event in rows] == [e.id for e in batch]
    assert [e.to_dict() for _, e in rows] == [e.to_dict() for e in batch]
    assert await store.backlog("b") == (5, seqs[-1])
    await store.confirm("a", seqs[:3])
    assert [seq for seq, _ in await store.read("a", 0, 100)] == seqs[3:]
    assert [seq for seq, _ in await store.read("a", seqs[5], 2)] == seqs[6:8]
    assert await store.pending() == 12


async def test_read_arrivals_tells_when_the_store_accepted_each_event(store: SQLiteStore) -> None:
    # a delivery delay counts from it (for an event without a timestamp), across restarts
    before = time.time()
    seqs = await store.append(events(2), [["a"], ["a"]])
    after = time.time()
    rows = await store.read_arrivals("a", 0, 10)
    assert [seq for seq, _, _ in rows] == seqs
    assert all(when is not None and before <= when <= after for _, _, when in rows)
    assert [(seq, event.id) for seq, event, _ in rows] == [
        (seq, event.id) for seq, event in await store.read("a", 0, 10)
    ]


async def test_an_event_with_a_lone_surrogate_is_stored_and_read_back(store: SQLiteStore) -> None:
    # "\ud800" is a valid JSON escape with no UTF-8 form: stored escaped, read back equal
    (odd,) = rxsinks.decode_envelope('{"events":[{"id":"s1","actor":{"name":"\\ud800é"}}]}')
    seqs = await store.append([odd, *events(1)], [["a"], ["a"]])
    rows = await store.read("a", 0, 10)
    assert [seq for seq, _ in rows] == seqs
    assert rows[0][1] == odd
    assert rxsinks.decode_envelope(rxsinks.encode_envelope([rows[0][1]])) == [odd]


async def test_confirming_a_block_larger_than_one_in_list(store: SQLiteStore) -> None:
    seqs = await store.append(events(6_001), [["a"]] * 6_001)
    await store.confirm("a", seqs[:5_500])  # past the IN-list bound: row by row
    await store.confirm("a", seqs[5_500:6_000])  # one statement
    assert [seq for seq, _ in await store.read("a", 0, 10)] == seqs[6_000:]


async def test_dead_letters_list_and_replay(store: SQLiteStore) -> None:
    seqs = await store.append(events(4), [["a"]] * 4)
    await store.dead_letter("a", seqs[1:3], "422 Unprocessable Entity", 3)
    letters = await store.dead_letters("a")
    assert [(d.seq, d.error, d.attempts) for d in letters] == [
        (seqs[1], "422 Unprocessable Entity", 3),
        (seqs[2], "422 Unprocessable Entity", 3),
    ]
    assert [seq for seq, _ in await store.read("a", 0, 10)] == [seqs[0], seqs[3]]
    assert await store.dead_letters("other") == []
    replayed = await store.replay("a")
    assert replayed == [("a", seqs[1]), ("a", seqs[2])]
    assert [seq for seq, _ in await store.read("a", 0, 10)] == seqs  # back in seq order
    assert await store.dead_letters() == []


async def test_compaction_keeps_what_is_still_needed(store: SQLiteStore) -> None:
    seqs = await store.append(events(6), [["a"]] * 6)
    await store.confirm("a", seqs[:2])
    await store.dead_letter("a", seqs[2:3], "gone", 1)
    await store.confirm("a", seqs[3:4])
    # the delivered ones go (0, 1, 3); the dead letter stays, and so does everything pending
    assert await store.compact() == 3
    assert [seq for seq, _ in await store.read("a", 0, 10)] == seqs[4:]
    assert [d.seq for d in await store.dead_letters()] == [seqs[2]]


async def test_survives_a_reopen(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "s.db")
    await first.open()
    seqs = await first.append(events(3), [["a"]] * 3)
    await first.confirm("a", seqs[:1])
    await first.close()
    second = SQLiteStore(tmp_path / "s.db")
    await second.open()
    try:
        assert [seq for seq, _ in await second.read("a", 0, 10)] == seqs[1:]
        more = await second.append(events(1, "x"), [["a"]])
        assert more[0] > seqs[-1]
    finally:
        await second.close()


async def until_registered(store: SQLiteStore, endpoint: str, seqs: list[int]) -> None:
    """confirm_now() refuses an endpoint the journal has no id for yet, and gives it one."""
    for _ in range(500):
        if store.confirm_now(endpoint, seqs):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"confirm_now never took {endpoint!r}")


async def test_confirm_now_is_seen_by_every_later_read(store: SQLiteStore) -> None:
    seqs = await store.append(events(6), [["a", "b"]] * 6)
    # an endpoint gets its journal id when an event is first routed to it
    assert store.confirm_now("a", seqs[:2])
    assert not store.confirm_now("z", seqs[:1])  # never routed to: not registered yet
    await until_registered(store, "z", seqs[:1])
    assert store.confirm_now("a", seqs[2:3])
    # applied by the store thread before it reads: no wait, no stale rows
    assert [seq for seq, _ in await store.read("a", 0, 10)] == seqs[3:]
    assert await store.backlog("a") == (3, seqs[-1])
    assert await store.pending("b") == 6  # another endpoint's rows are untouched


def confirm_and_die(path: Path, endpoints: list[str], blocks: list[list[int]]) -> None:
    """In a process of its own: store ten events ``k0``..``k9`` for ``endpoints``, note the
    events at these indexes confirmed for endpoint ``a``, block by block, in the journal, and
    die by SIGKILL before the store thread applied any of it."""
    script = textwrap.dedent(
        f"""
        import asyncio, os
        import rxsinks
        from rxsinks._store.sqlite import SQLiteStore

        async def main():
            store = SQLiteStore({str(path)!r})
            await store.open()
            batch = [rxsinks.Event.new("push", id=f"k{{i}}") for i in range(10)]
            seqs = await store.append(batch, [{endpoints!r}] * 10)
            blocks = [[seqs[i] for i in block] for block in {blocks!r}]
            while not store.confirm_now("a", blocks[0]):  # (the endpoint gets a journal id)
                await asyncio.sleep(0.01)
            for block in blocks[1:]:
                assert store.confirm_now("a", block)
            os.kill(os.getpid(), 9)

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, env=dict(os.environ))
    assert done.returncode == -9


async def test_journal_confirms_of_a_killed_process_are_applied_at_the_next_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    confirm_and_die(path, ["a"], [[0], [1, 2, 3]])
    # what SQLite alone says: nothing confirmed (a's cursor is where it started)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT cursor FROM endpoints WHERE name = 'a'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM beyond").fetchone()[0] == 0
    db.close()
    again = SQLiteStore(path)
    await again.open()
    try:
        rows = await again.read("a", 0, 100)
        assert [event.id for _, event in rows] == [f"k{i}" for i in range(4, 10)]
    finally:
        await again.close()


async def test_journal_confirms_out_of_order_remove_exactly_those_deliveries(
    tmp_path: Path,
) -> None:
    # blocks of several keys delivered side by side are confirmed as they finish, in any seq
    # order: a record names one (endpoint, seq), so a killed process's records remove exactly
    # the confirmed deliveries, and the blocks still in flight stay for the next process
    path = tmp_path / "s.db"
    confirm_and_die(path, ["a", "b"], [[6], [1, 2], [8], [4]])
    again = SQLiteStore(path)
    await again.open()
    try:
        rows = await again.read("a", 0, 100)
        assert [event.id for _, event in rows] == ["k0", "k3", "k5", "k7", "k9"]
        assert await again.pending("b") == 10  # the other endpoint confirmed nothing
    finally:
        await again.close()


async def test_without_a_journal_confirms_commit_one_by_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "s.db-confirms").mkdir()  # the journal cannot be created
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        assert "no confirm journal" in caplog.text
        seqs = await store.append(events(2), [["a"]] * 2)
        for _ in range(20):
            assert not store.confirm_now("a", seqs[:1])
            await asyncio.sleep(0.01)
        await store.confirm("a", seqs[:1])
        assert [seq for seq, _ in await store.read("a", 0, 10)] == seqs[1:]
    finally:
        await store.close()


async def test_the_log_is_checkpointed_into_the_database_off_the_commit_path(
    tmp_path: Path,
) -> None:
    # commits no longer checkpoint (that stalled the requests queued behind them); a thread
    # of the store's does, so the database file takes the data while the relay runs
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        empty = path.stat().st_size
        for chunk in range(20):
            await store.append(events(100, f"c{chunk}-"), [["a"]] * 100)
        for _ in range(250):
            if path.stat().st_size > empty + 200_000:
                break
            await asyncio.sleep(0.02)
        assert path.stat().st_size > empty + 200_000  # 2,000 events are in the file itself
        assert await store.pending("a") == 2_000
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2_000


async def test_a_second_process_on_the_store_works_without_the_journal(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "s.db")
    await first.open()
    second = SQLiteStore(tmp_path / "s.db")
    await second.open()  # the journal is the first one's: no error
    try:
        seqs = await second.append(events(2), [["a"]] * 2)
        assert not second.confirm_now("a", seqs[:1])
        await second.confirm("a", seqs[:1])
        assert [seq for seq, _ in await first.read("a", 0, 10)] == seqs[1:]
    finally:
        await second.close()
        await first.close()


async def test_a_corrupt_file_is_a_clear_error_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    garbage = b"this is not a database, but somebody's precious file\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match=r"corrupt\.db.*(not a database|untouched)"):
        await SQLiteStore(path).open()
    assert path.read_bytes() == garbage


async def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="format 'something-else'"):
        await SQLiteStore(path).open()


async def test_an_uncreatable_path_is_a_clear_error(tmp_path: Path) -> None:
    # a path under a regular file can never be created, even by root (CI runs as root)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"s\.db"):
        await SQLiteStore(blocker / "s.db").open()


async def test_full_store_refuses_appends_and_keeps_what_it_accepted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "full.db", max_bytes=64 * 1024)
    await store.open()
    try:
        accepted: list[int] = []
        big = rxsinks.Event.new("push", target={"repository": "r"}, padding="x" * 2000)
        with pytest.raises(StoreError, match="full"):
            for _ in range(200):  # bounded: 200 * 2 KB is far past 64 KiB
                accepted += await store.append([big], [["a"]])
        assert accepted, "some appends fit before the store filled up"
        rows = await store.read("a", 0, 1000)
        assert [seq for seq, _ in rows] == accepted  # everything acknowledged is there
        # delivering frees room: confirmed and compacted events make space again
        await store.confirm("a", accepted)
        assert await store.compact() == len(accepted)
        assert await store.append([big], [["a"]])
    finally:
        await store.close()


async def test_durable_endpoint_resumes_after_restart_in_order(
    tmp_path: Path,
    aiohttp_server,  # type: ignore[no-untyped-def]
) -> None:
    received: list[str] = []
    up = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        if not up.is_set():
            return web.Response(status=503)
        received.extend(e["id"] for e in body["events"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handler)
    server = await aiohttp_server(app)
    url = str(server.make_url("/hook"))
    batch = events(500)

    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    down = rxsinks.Endpoint(
        "a",
        url,
        threshold=1,
        backoff=0.05,
        store=store,
        store_window=64,
        batch=rxsinks.Batching(max_events=20),
    )
    down.start()
    for i in range(0, 500, 50):
        chunk = batch[i : i + 50]
        for seq, event in zip(await store.append(chunk, [["a"]] * 50), chunk, strict=True):
            down.on_stored(seq, event)
    for _ in range(200):  # pending is counted once the queue's first backlog read is back
        if down.pending == 500:
            break
        await asyncio.sleep(0.01)
    assert down.pending == 500
    report = await down.aclose(timeout=0.2)
    assert not report.flushed and report.remaining > 0
    down.dispose()
    await store.close()
    assert received == []

    up.set()
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        again = rxsinks.Endpoint(
            "a", url, store=store, store_window=64, batch=rxsinks.Batching(max_events=20)
        )
        again.start()
        live = events(5, "live")
        for seq, event in zip(await store.append(live, [["a"]] * 5), live, strict=True):
            again.on_stored(seq, event)
        report = await again.aclose(timeout=30)
        assert report.flushed
        assert received == [e.id for e in batch + live]  # each once, in order
        assert again.metrics().pending == 0
        assert await store.pending("a") == 0
    finally:
        await store.close()


@pytest.fixture
async def posting_hook(aiohttp_server) -> tuple[str, list[list[str]]]:  # type: ignore[no-untyped-def]
    """A receiver that answers 200 and records the event ids of each POST."""
    posts: list[list[str]] = []

    async def handler(request: web.Request) -> web.Response:
        posts.append([e["id"] for e in (await request.json())["events"]])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), posts


async def within(seconds: float, check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds, ``seconds`` at most (then the caller's assert tells)."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)


async def test_durable_endpoint_waits_max_delay_to_fill_a_block(
    tmp_path: Path, posting_hook: tuple[str, list[list[str]]]
) -> None:
    # live events trickling in go out together, as the memory queue's batch operator does:
    # a partial block waits up to batch_max_delay, a full one goes at once
    url, posts = posting_hook
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        endpoint = rxsinks.Endpoint(
            "a", url, store=store, batch=rxsinks.Batching(max_events=5, max_delay=2.0)
        )
        endpoint.start()
        trickle = events(8, "t")
        for event in trickle[:3]:  # three, a little apart: one partial block
            (seq,) = await store.append([event], [["a"]])
            endpoint.on_stored(seq, event)
            await asyncio.sleep(0.02)
        await within(6, lambda: bool(posts))
        assert posts == [[e.id for e in trickle[:3]]]
        for seq, event in zip(
            await store.append(trickle[3:], [["a"]] * 5), trickle[3:], strict=True
        ):
            endpoint.on_stored(seq, event)  # a full block: no wait
        await within(1, lambda: len(posts) == 2)  # well within the 2 s a partial block waits
        assert posts[1:] == [[e.id for e in trickle[3:]]]
        last = events(1, "last")
        (seq,) = await store.append(last, [["a"]])
        endpoint.on_stored(seq, last[0])
        report = await endpoint.aclose(timeout=30)  # closing sends the partial block
        assert report.flushed and posts[2:] == [[last[0].id]]
    finally:
        await store.close()


async def test_a_backlog_from_before_the_start_does_not_wait_for_more(
    tmp_path: Path, posting_hook: tuple[str, list[list[str]]]
) -> None:
    # events this process did not see arrive have waited long enough: no batching delay
    url, posts = posting_hook
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        backlog = events(3, "old")
        await store.append(backlog, [["a"]] * 3)
        endpoint = rxsinks.Endpoint(
            "a", url, store=store, batch=rxsinks.Batching(max_events=10, max_delay=30.0)
        )
        endpoint.start()
        await within(5, lambda: bool(posts))  # far less than the 30 s a waiting block takes
        assert posts == [[e.id for e in backlog]]
        assert (await endpoint.aclose(timeout=30)).flushed
    finally:
        await store.close()


async def test_a_backlog_drained_through_the_window_goes_in_full_posts(
    tmp_path: Path, posting_hook: tuple[str, list[list[str]]]
) -> None:
    # 20,060 events waiting on disk, 100 per POST, the default window of 1,024 events: every
    # refill of the window completes the block short of it, so 201 POSTs (not 216)
    url, posts = posting_hook
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        backlog = events(20_060, "b")
        for start in range(0, len(backlog), 2_000):
            chunk = backlog[start : start + 2_000]
            await store.append(chunk, [["a"]] * len(chunk))
        endpoint = rxsinks.Endpoint("a", url, store=store, batch=rxsinks.Batching(max_events=100))
        endpoint.start()
        assert (await endpoint.aclose(timeout=120)).flushed
        assert [len(post) for post in posts] == [100] * 200 + [60]
        assert [name for post in posts for name in post] == [e.id for e in backlog]
        assert await store.pending("a") == 0
    finally:
        await store.close()


async def test_durable_endpoint_dead_letters_into_the_store(
    tmp_path: Path,
    aiohttp_server,  # type: ignore[no-untyped-def]
) -> None:
    received: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        ids = [e["id"] for e in body["events"]]
        if "e1" in ids:
            return web.Response(status=422)
        received.extend(ids)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handler)
    server = await aiohttp_server(app)
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        endpoint = rxsinks.Endpoint(
            "a",
            str(server.make_url("/hook")),
            store=store,
            webhook=rxsinks.WebhookOptions(permanent_statuses=[422]),
        )
        endpoint.start()
        batch = events(3)
        for seq, event in zip(await store.append(batch, [["a"]] * 3), batch, strict=True):
            endpoint.on_stored(seq, event)
        assert (await endpoint.aclose(timeout=10)).flushed
        assert received == ["e0", "e2"]
        letters = await store.dead_letters("a")
        assert [d.event.id for d in letters] == ["e1"]
        assert "422" in letters[0].error and letters[0].attempts == 1
    finally:
        await store.close()


async def test_durable_endpoint_refuses_plain_writes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        endpoint = rxsinks.Endpoint("a", "http://127.0.0.1:9/", store=store)
        with pytest.raises(TypeError, match="durable"):
            endpoint.on_next(events(1)[0])
        await endpoint.aclose(timeout=1)
    finally:
        await store.close()
