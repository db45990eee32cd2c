"""The Redis Streams store against a real ``redis-server``, and a durable endpoint over it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

import rxsinks
from rxsinks._exceptions import StoreError
from rxsinks._store.redis import RedisStore

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]  # the redis_server, redis_url and own_redis fixtures


def events(count: int, prefix: str = "e") -> list[rxsinks.Event]:
    return [
        rxsinks.Event.new("push", target={"repository": f"r/{i}"}, id=f"{prefix}{i}")
        for i in range(count)
    ]


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_url)
    await opened.open()
    yield opened
    await opened.close()


async def seqs_of(store: RedisStore, endpoint: str, after: int = 0) -> list[int]:
    return [seq for seq, _ in await store.read(endpoint, after, 10_000)]


async def test_append_read_confirm_in_order(store: RedisStore) -> None:
    batch = events(10)
    seqs = await store.append(batch, [["a", "b"]] * 5 + [["a"]] * 5)
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    rows = await store.read("a", 0, 100)
    assert [seq for seq, _ in rows] == seqs
    assert [e.to_dict() for _, e in rows] == [e.to_dict() for e in batch]  # every field kept
    assert await store.backlog("b") == (5, seqs[-1])
    await store.confirm("a", seqs[:3])
    assert await seqs_of(store, "a") == seqs[3:]
    assert [seq for seq, _ in await store.read("a", seqs[5], 2)] == seqs[6:8]
    assert await store.pending() == 12
    assert await store.pending("b") == 5
    assert await store.endpoints() == ["a", "b"]
    assert await store.compact() == 0  # confirmed entries are already gone
    assert await store.append([], []) == []


async def test_read_arrivals_tells_when_each_event_was_appended(store: RedisStore) -> None:
    # a delivery delay counts from it (for an event without a timestamp), across restarts; a
    # delivery put back from the dead letters has served its delay already: unknown
    before = time.time()
    seqs = await store.append(events(3), [["a"], ["a"], ["a"]])
    after = time.time()
    await store.dead_letter("a", seqs[1:2], "x", 1)
    await store.replay("a")
    rows = await store.read_arrivals("a", 0, 10)
    assert [seq for seq, _, _ in rows] == seqs
    first, replayed, last = (when for _, _, when in rows)
    assert first is not None and before <= first <= after and first == last
    assert replayed is None
    assert [e.id for _, e, _ in rows] == [e.id for _, e in await store.read("a", 0, 10)]


async def test_dead_letters_list_and_replay_keep_the_original_order(store: RedisStore) -> None:
    seqs = await store.append(events(4), [["a"]] * 4)
    await store.dead_letter("a", seqs[1:3], "422 Unprocessable Entity", 3)
    letters = await store.dead_letters("a")
    assert [(d.seq, d.event.id, d.error, d.attempts) for d in letters] == [
        (seqs[1], "e1", "422 Unprocessable Entity", 3),
        (seqs[2], "e2", "422 Unprocessable Entity", 3),
    ]
    assert letters[0].id < letters[1].id and letters[0].endpoint == "a"
    assert await seqs_of(store, "a") == [seqs[0], seqs[3]]
    assert await store.backlog("a") == (2, seqs[3])
    assert await store.dead_letters("other") == []
    later = await store.append(events(1, "late"), [["a"]])

    assert await store.replay("a") == [("a", seqs[1]), ("a", seqs[2])]
    rows = await store.read("a", 0, 10)
    assert [seq for seq, _ in rows] == [*seqs, *later]  # back in their original places
    assert [event.id for _, event in rows] == ["e0", "e1", "e2", "e3", "late0"]
    assert [seq for seq, _ in await store.read("a", seqs[0], 2)] == seqs[1:3]
    assert await store.backlog("a") == (5, later[0])
    assert await store.dead_letters() == []
    assert await store.replay("a") == []  # nothing left to replay

    # a replayed delivery is confirmed and dead-lettered like any other
    await store.confirm("a", [seqs[1]])
    await store.dead_letter("a", [seqs[2]], "again", 1)
    assert await seqs_of(store, "a") == [seqs[0], seqs[3], later[0]]
    assert [(d.seq, d.error) for d in await store.dead_letters()] == [(seqs[2], "again")]
    assert await store.replay() == [("a", seqs[2])]
    assert await seqs_of(store, "a") == [seqs[0], seqs[2], seqs[3], later[0]]


async def test_dead_letters_across_endpoints_since_and_limit(store: RedisStore) -> None:
    seqs = await store.append(events(3), [["a", "b"]] * 3)
    await store.dead_letter("b", seqs[:1], "first", 1)
    await store.dead_letter("a", seqs[1:2], "second", 2)
    cut = time.time()
    await asyncio.sleep(0.01)  # so the next one is given up strictly after the cut
    await store.dead_letter("b", seqs[2:], "third", 3)
    everything = await store.dead_letters()
    assert [(d.endpoint, d.seq, d.error) for d in everything] == [
        ("b", seqs[0], "first"),
        ("a", seqs[1], "second"),
        ("b", seqs[2], "third"),
    ]
    assert [d.error for d in await store.dead_letters(limit=2)] == ["first", "second"]
    assert [d.error for d in await store.dead_letters(since=cut)] == ["third"]
    assert await store.replay(since=cut) == [("b", seqs[2])]
    assert [d.error for d in await store.dead_letters()] == ["first", "second"]
    assert await store.replay() == [("b", seqs[0]), ("a", seqs[1])]
    assert await seqs_of(store, "b") == seqs
    assert await seqs_of(store, "a") == seqs


async def test_dead_lettering_a_confirmed_delivery_keeps_nothing(store: RedisStore) -> None:
    seqs = await store.append(events(2), [["a"]] * 2)
    await store.confirm("a", seqs[:1])
    await store.dead_letter("a", seqs, "late", 1)
    assert [d.seq for d in await store.dead_letters("a")] == [seqs[1]]


async def test_a_new_store_on_the_same_redis_sees_the_backlog(redis_url: str) -> None:
    first = RedisStore(redis_url)
    await first.open()
    seqs = await first.append(events(3), [["a"]] * 3)
    await first.confirm("a", seqs[:1])
    await first.close()
    second = RedisStore(redis_url)
    await second.open()
    try:
        assert await second.backlog("a") == (2, seqs[-1])
        assert await seqs_of(second, "a") == seqs[1:]
        more = await second.append(events(1, "x"), [["a"]])
        assert more[0] > seqs[-1]
    finally:
        await second.close()


async def test_prefixes_keep_two_relays_apart(redis_url: str) -> None:
    one, two = RedisStore(redis_url, prefix="one"), RedisStore(redis_url, prefix="two")
    await one.open()
    await two.open()
    try:
        await one.append(events(2), [["a"]] * 2)
        assert await two.pending() == 0
        assert await two.endpoints() == []
        assert await one.pending("a") == 2
    finally:
        await one.close()
        await two.close()


async def test_acknowledged_appends_survive_a_redis_crash(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url, timeout=2)
    await store.open()
    seqs = await store.append(events(50), [["a", "b"]] * 40 + [["b"]] * 10)
    await store.confirm("a", [*seqs[10:20], *seqs[:5]])  # out of order: a gap at 5..9
    await store.confirm("b", seqs[:40])
    await store.close()
    own_redis.kill()  # SIGKILL: only the append-only file remains
    own_redis.start()
    again = RedisStore(own_redis.url, timeout=2)
    await again.open()
    try:
        assert await seqs_of(again, "a") == seqs[5:10] + seqs[20:40]
        assert await seqs_of(again, "b") == seqs[40:]
        assert await again.backlog("a") == (25, seqs[-1])
        assert await again.pending() == 35
    finally:
        await again.close()


async def test_redis_going_away_is_a_store_error(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url, timeout=1)
    await store.open()
    try:
        own_redis.kill()
        with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{own_redis.port}.*append failed"):
            await store.append(events(1), [["a"]])
    finally:
        await store.close()


async def test_concurrent_appends_keep_stream_order_equal_to_seq_order(
    redis_url: str,
) -> None:
    """Two stores (two instances) ingest at once while a third tails the stream: the tail must
    see every event, which fails if an entry could become visible before a smaller seq."""
    writers = [RedisStore(redis_url), RedisStore(redis_url)]
    reader = RedisStore(redis_url)
    for store in (*writers, reader):
        await store.open()
    appended: list[int] = []
    done = asyncio.Event()

    async def write(store: RedisStore, tag: str) -> None:
        for i in range(60):
            batch = events(3, f"{tag}{i}-")
            appended.extend(await store.append(batch, [["a"], ["a", "b"], ["b"]]))

    async def tail() -> list[int]:
        seen: list[int] = []
        while True:
            rows = await reader.tail("a", seen[-1] if seen else 0, 50, wait=0.05)
            seen += [seq for seq, _ in rows]
            if not rows and done.is_set():
                return seen

    try:
        tailing = asyncio.create_task(tail())
        await asyncio.gather(*(write(store, f"w{n}") for n, store in enumerate(writers)))
        done.set()
        seen = await tailing
        per_a = await seqs_of(reader, "a")
        assert len(appended) == 360 and len(set(appended)) == 360
        assert len(per_a) == 240 and per_a == sorted(per_a)
        assert seen == per_a  # nothing skipped: visible order is seq order
        assert len(await seqs_of(reader, "b")) == 240
    finally:
        for store in (*writers, reader):
            await store.close()


async def test_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    with socket_on_free_port() as port:
        url = f"redis://user:s3cret@127.0.0.1:{port}/0"
        with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{port}.*cannot reach") as caught:
            await RedisStore(url, timeout=1).open()
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


async def test_bad_urls_and_arguments_are_clear_errors(store: RedisStore) -> None:
    with pytest.raises(StoreError, match="not a Redis URL"):
        await RedisStore("http://127.0.0.1:1/").open()
    with pytest.raises(ValueError, match="redis:// URL"):
        RedisStore("")
    unopened = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError, match="not open"):
        await unopened.read("a", 0, 1)
    with pytest.raises(ValueError, match="2 events but 1 routes"):
        await store.append(events(2), [["a"]])
    with pytest.raises(ValueError, match="after must be an integer >= 0"):
        await store.read("a", -1, 10)
    with pytest.raises(ValueError, match="endpoint name"):
        await store.append(events(1), [[""]])
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.backlog("a")


class socket_on_free_port:
    """A port nobody listens on, held bound (not listening) so nothing else takes it."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# -- a durable endpoint over Redis ---------------------------------------------------------------


async def hook_server(
    aiohttp_server: object, up: asyncio.Event, received: list[str], refuse: str = ""
) -> TestServer:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        ids = [e["id"] for e in body["events"]]
        if not up.is_set():
            return web.Response(status=503)
        if refuse in ids:
            return web.Response(status=422)
        received.extend(ids)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handler)
    server: TestServer = await aiohttp_server(app)  # type: ignore[operator]
    return server


async def test_durable_endpoint_over_redis_delivers_after_an_outage_in_order(
    redis_url: str,
    aiohttp_server: object,
) -> None:
    received: list[str] = []
    up = asyncio.Event()
    server = await hook_server(aiohttp_server, up, received)
    url = str(server.make_url("/hook"))
    batch = events(300)

    store = RedisStore(redis_url)
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
    for i in range(0, 300, 50):
        chunk = batch[i : i + 50]
        for seq, event in zip(await store.append(chunk, [["a"]] * 50), chunk, strict=True):
            down.on_stored(seq, event)
    # the queue counts its backlog once its first read of the store is back
    for _ in range(500):
        if down.pending == 300:
            break
        await asyncio.sleep(0.02)
    assert down.pending == 300
    report = await down.aclose(timeout=0.2)
    assert not report.flushed and report.remaining > 0
    down.dispose()
    await store.close()
    assert received == []

    # another instance (a new store client) takes the endpoint over with the receiver up
    up.set()
    store = RedisStore(redis_url)
    await store.open()
    try:
        again = rxsinks.Endpoint(
            "a", url, store=store, store_window=64, batch=rxsinks.Batching(max_events=20)
        )
        again.start()
        live = events(5, "live")
        for seq, event in zip(await store.append(live, [["a"]] * 5), live, strict=True):
            again.on_stored(seq, event)
        assert (await again.aclose(timeout=30)).flushed
        assert received == [e.id for e in batch + live]  # each once, in order
        assert again.metrics().pending == 0
        assert await store.pending("a") == 0
    finally:
        await store.close()


async def test_durable_endpoint_dead_letters_into_redis_and_replay_delivers_them(
    redis_url: str,
    aiohttp_server: object,
) -> None:
    received: list[str] = []
    up = asyncio.Event()
    up.set()
    server = await hook_server(aiohttp_server, up, received, refuse="e1")
    url = str(server.make_url("/hook"))
    store = RedisStore(redis_url)
    await store.open()
    try:
        endpoint = rxsinks.Endpoint(
            "a", url, store=store, webhook=rxsinks.WebhookOptions(permanent_statuses=[422])
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

        # the receiver is fixed; replayed, the event goes out from the store's backlog
        assert await store.replay("a") == [("a", letters[0].seq)]
        fixed = await hook_server(aiohttp_server, up, received)
        again = rxsinks.Endpoint("a", str(fixed.make_url("/hook")), store=store)
        again.start()
        assert (await again.aclose(timeout=10)).flushed
        assert received == ["e0", "e2", "e1"]
        assert await store.pending("a") == 0 and await store.dead_letters() == []
    finally:
        await store.close()


async def test_a_replay_by_another_process_reaches_the_running_holder(
    redis_url: str,
    aiohttp_server: object,
) -> None:
    received: list[str] = []
    up = asyncio.Event()
    up.set()
    refusing = {"e1"}

    async def handle(request: web.Request) -> web.Response:
        ids = [event["id"] for event in (await request.json())["events"]]
        if refusing & set(ids):
            return web.Response(status=422)
        received.extend(ids)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)  # type: ignore[operator]
    holder_store, other_store = RedisStore(redis_url), RedisStore(redis_url)
    await holder_store.open()
    await other_store.open()
    try:
        # the relay that delivers (polling, as with several instances) keeps running
        endpoint = rxsinks.Endpoint(
            "a",
            str(server.make_url("/hook")),
            store=holder_store,
            webhook=rxsinks.WebhookOptions(permanent_statuses=[422]),
            poll_interval=0.02,
        )
        endpoint.start()
        batch = events(3)
        await other_store.append(batch, [["a"]] * 3)  # ingested by another instance
        for _ in range(500):
            if len(await holder_store.dead_letters("a")) == 1 and len(received) == 2:
                break
            await asyncio.sleep(0.01)
        assert received == ["e0", "e2"]

        refusing.clear()  # the receiver is fixed; another process replays
        assert [seq for _, seq in await other_store.replay("a")]
        for _ in range(500):
            if len(received) == 3:
                break
            await asyncio.sleep(0.01)
        assert received == ["e0", "e2", "e1"]  # without a restart of the holder
        await endpoint.aclose(timeout=5)
    finally:
        await holder_store.close()
        await other_store.close()


async def test_the_holder_learns_of_another_instance_s_events_without_polling(
    redis_url: str,
    aiohttp_server: object,
) -> None:
    # the queue waits on a blocking read of its stream: an event another instance stores
    # arrives long before the next poll (30 s here) would have found it
    received: list[str] = []
    up = asyncio.Event()
    up.set()
    server = await hook_server(aiohttp_server, up, received)
    holder_store, other_store = RedisStore(redis_url), RedisStore(redis_url)
    await holder_store.open()
    await other_store.open()
    try:
        endpoint = rxsinks.Endpoint(
            "a", str(server.make_url("/hook")), store=holder_store, poll_interval=30.0
        )
        endpoint.start()
        await asyncio.sleep(0.3)  # the queue has read its (empty) backlog and waits
        batch = events(3)
        for event in batch:
            await other_store.append([event], [["a"]])
            await asyncio.sleep(0.05)
        for _ in range(500):  # 10 s at most, a third of one poll
            if len(received) == 3:
                break
            await asyncio.sleep(0.02)
        assert received == [e.id for e in batch]
        assert (await endpoint.aclose(timeout=10)).flushed
    finally:
        await holder_store.close()
        await other_store.close()


async def test_keys_follow_the_documented_layout(store: RedisStore, redis_url: str) -> None:
    seqs = await store.append(events(3), [["a", "b"], ["a", "b"], ["b"]])
    await store.dead_letter("a", seqs[:1], "x", 1)
    await store.confirm("b", seqs[1:2])
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(await client.keys("rxsinks:*"))
        assert keys == [
            "rxsinks:cur:a",
            "rxsinks:cur:b",
            "rxsinks:dlq:a",
            "rxsinks:dlseq",
            "rxsinks:done:b",
            "rxsinks:endpoints",
            "rxsinks:epr:a",
            "rxsinks:epr:b",
            "rxsinks:events",
            "rxsinks:rcount",
            "rxsinks:route:1",
            "rxsinks:route:2",
            "rxsinks:routes",
            "rxsinks:routeseq",
            "rxsinks:seq",
            "rxsinks:settled:a",
            "rxsinks:settled:b",
            "rxsinks:trimat",
        ]
        # each event once, whatever the number of endpoints, with its route set's id
        entries: Any = await client.xrange("rxsinks:events")
        assert [entry_id for entry_id, _ in entries] == [f"{seq}-0" for seq in seqs]
        assert [fields["r"] for _, fields in entries] == ["1", "1", "2"]
        assert await client.hgetall("rxsinks:routes") == {"a\nb": "1", "b": "2"}
        assert await client.smembers("rxsinks:route:1") == {"a", "b"}
        assert await client.hgetall("rxsinks:rcount") == {"1": "2", "2": "1"}
        # a's first delivery was dead lettered: its cursor passed it (done set emptied)
        assert await client.get("rxsinks:cur:a") == str(seqs[0])
        assert await client.zrange("rxsinks:done:a", 0, -1) == []
        # b confirmed its second before its first: beyond the cursor, in the done set
        assert await client.get("rxsinks:cur:b") == "0"
        assert await client.zrange("rxsinks:done:b", 0, -1) == [str(seqs[1])]
    finally:
        await client.aclose()


async def raw(redis_url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(redis_url, decode_responses=True)


async def test_each_endpoint_gets_only_the_events_routed_to_it(store: RedisStore) -> None:
    routes = [["a"], ["b"], ["a", "b", "c"], [], ["c"], ["b", "a"]]
    seqs = await store.append(events(6), routes)
    assert await seqs_of(store, "a") == [seqs[0], seqs[2], seqs[5]]
    assert await seqs_of(store, "b") == [seqs[1], seqs[2], seqs[5]]
    assert await seqs_of(store, "c") == [seqs[2], seqs[4]]
    assert await seqs_of(store, "nobody") == []
    assert [await store.pending(name) for name in ("a", "b", "c")] == [3, 3, 2]
    assert await store.pending() == 8
    assert await store.backlog("c") == (2, seqs[-1])
    # an event routed to nobody still takes a seq, and costs no stream entry
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    assert await store.tail("c", 0, 10, wait=0.01) == [
        (seq, event) for seq, event in await store.read("c", 0, 10)
    ]


async def test_tail_waits_for_the_endpoint_s_own_events_only(redis_url: str) -> None:
    reader, writer = RedisStore(redis_url), RedisStore(redis_url)
    await reader.open()
    await writer.open()
    try:
        await writer.append(events(3), [["b"]] * 3)
        assert await reader.tail("a", 0, 10, wait=0.05) == []  # b's events do not wake it

        async def later() -> list[int]:
            await asyncio.sleep(0.05)
            await writer.append(events(2, "x"), [["b"], ["a", "b"]])
            return await writer.append(events(1, "y"), [["a"]])

        appending = asyncio.create_task(later())
        rows = await reader.tail("a", 0, 10, wait=5)
        mine = await appending
        # (y0 too, only when the machine is slow enough to append it before the tail looked)
        assert [event.id for _, event in rows] in (["x1"], ["x1", "y0"])
        assert rows[0][0] == mine[0] - 1
    finally:
        await reader.close()
        await writer.close()


async def test_confirms_out_of_order_move_the_cursor_over_the_contiguous_run(
    store: RedisStore, redis_url: str
) -> None:
    seqs = await store.append(events(6), [["a"]] * 6)
    client = await raw(redis_url)
    try:
        await store.confirm("a", [seqs[2], seqs[4]])  # per-key blocks confirm in any order
        assert await seqs_of(store, "a") == [seqs[0], seqs[1], seqs[3], seqs[5]]
        assert await store.backlog("a") == (4, seqs[-1])
        assert int(await client.get("rxsinks:cur:a") or 0) < seqs[0]
        await store.confirm("a", [seqs[0], seqs[1]])
        # the cursor went over 0..2 (the run), and stopped at the first owed
        assert await client.get("rxsinks:cur:a") == str(seqs[2])
        assert await client.zrange("rxsinks:done:a", 0, -1) == [str(seqs[4])]
        assert await seqs_of(store, "a") == [seqs[3], seqs[5]]
        assert await store.read("a", seqs[3], 10) == (await store.read("a", 0, 10))[1:]
        await store.confirm("a", [seqs[3], seqs[3], seqs[1]])  # again: counted once
        assert await store.backlog("a") == (1, seqs[-1])
        await store.confirm("a", [seqs[5]])
        assert await client.get("rxsinks:cur:a") == str(seqs[5])
        assert await client.zcard("rxsinks:done:a") == 0
        assert await store.pending() == 0 and await store.backlogs() == []
    finally:
        await client.aclose()


async def test_replays_merge_with_the_stream_by_seq(store: RedisStore) -> None:
    seqs = await store.append(events(6), [["a", "b"]] * 6)
    await store.dead_letter("a", [seqs[1], seqs[4]], "500", 3)
    await store.confirm("a", [seqs[0], seqs[2]])
    assert await store.replay("a") == [("a", seqs[1]), ("a", seqs[4])]
    # replayed 1 and 4 between the stream's 3 and 5, in seq order; b never lost them
    assert await seqs_of(store, "a") == [seqs[1], seqs[3], seqs[4], seqs[5]]
    assert [seq for seq, _ in await store.read("a", 0, 2)] == [seqs[1], seqs[3]]
    assert [seq for seq, _ in await store.read("a", seqs[3], 1)] == [seqs[4]]
    assert await seqs_of(store, "b") == seqs
    assert await store.backlog("a") == (4, seqs[-1])
    assert await store.backlogs() == [
        rxsinks._store.sqlite.EndpointBacklog("a", 4, 0),
        rxsinks._store.sqlite.EndpointBacklog("b", 6, 0),
    ]
    await store.confirm("a", [seqs[4], seqs[1]])
    assert await seqs_of(store, "a") == [seqs[3], seqs[5]]
    assert await store.backlog("a") == (2, seqs[-1])


async def test_the_stream_is_trimmed_once_every_endpoint_is_past_it(
    store: RedisStore, redis_url: str
) -> None:
    client = await raw(redis_url)
    try:
        seqs = await store.append(events(20), [["a", "b"]] * 10 + [["a"]] * 10)
        await store.confirm("a", seqs)
        assert await client.xlen("rxsinks:events") == 20  # b is down: it holds them all
        assert await store.compact() == 0
        await store.confirm("b", seqs[:5])
        assert await store.compact() == 5  # up to b's cursor
        assert await client.xlen("rxsinks:events") == 15
        assert await seqs_of(store, "b") == seqs[5:10]
        await store.confirm("b", seqs[5:10])
        # b's cursor moves over the events not routed to it, a's is at the end: all go
        assert await store.compact() == 15
        assert await client.xlen("rxsinks:events") == 0
        assert await store.pending() == 0
        more = await store.append(events(2, "m"), [["a"], ["b"]])
        assert await seqs_of(store, "a") == more[:1] and await seqs_of(store, "b") == more[1:]
    finally:
        await client.aclose()


async def test_a_confirm_trims_at_most_once_a_second(store: RedisStore, redis_url: str) -> None:
    client = await raw(redis_url)
    try:
        seqs = await store.append(events(4), [["a"]] * 4)
        await store.confirm("a", seqs[:2])
        assert await client.xlen("rxsinks:events") == 2  # trimmed right away
        await store.confirm("a", seqs[2:])
        assert await client.xlen("rxsinks:events") == 2  # not again within the second
        await client.delete("rxsinks:trimat")  # (as if the second were over)
        await store.confirm("a", seqs[2:])
        assert await client.xlen("rxsinks:events") == 0
    finally:
        await client.aclose()


async def test_dropping_an_endpoint_releases_the_stream(store: RedisStore, redis_url: str) -> None:
    client = await raw(redis_url)
    try:
        seqs = await store.append(events(6), [["a", "gone"]] * 6)
        await store.dead_letter("gone", seqs[:1], "x", 1)
        await store.confirm("a", seqs)
        assert await store.compact() == 0  # gone's cursor holds them
        dropped = await store.drop_endpoint("gone")
        assert (dropped.endpoint, dropped.pending, dropped.dead_letters) == ("gone", 5, 1)
        assert await store.compact() == 5  # (the first went at a's confirm)
        assert await client.xlen("rxsinks:events") == 0
        assert await store.endpoints() == []
        assert await client.sismember("rxsinks:endpoints", "gone") == 0
        # routed to it again, it comes back with only the new events
        more = await store.append(events(2, "m"), [["a", "gone"], ["gone"]])
        assert await seqs_of(store, "gone") == more
        assert await store.backlog("gone") == (2, more[-1])
        assert await store.endpoints() == ["a", "gone"]
        assert await store.drop_endpoint("nobody") == rxsinks._store.sqlite.EndpointBacklog(
            "nobody", 0, 0
        )
    finally:
        await client.aclose()


async def test_a_sparse_endpoint_scans_in_bounded_steps_and_not_twice(
    store: RedisStore, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rxsinks._store.redis, "SCAN", 1000)
    routes = [["busy"]] * 10_000
    for i in (1234, 5678, 9000):
        routes[i] = ["busy", "sparse"]
    seqs: list[int] = []
    for i in range(0, 10_000, 1000):
        seqs += await store.append(events(1000, f"b{i}-"), routes[i : i + 1000])
    calls: list[int] = []  # entries each script call looked at
    script = store._scripts["read"]

    async def counting(keys: Any, args: Any, client: Any) -> Any:
        reply = await script(keys, args, client)
        calls.append(int(reply[4]))
        return reply

    monkeypatch.setitem(store._scripts, "read", counting)  # type: ignore[arg-type]
    wanted = [seqs[1234], seqs[5678], seqs[9000]]
    assert await seqs_of(store, "sparse") == wanted
    # bounded calls, each entry once: from the cursor set when the first route set holding
    # the endpoint was made (with the second batch) to the end
    assert max(calls) <= 1000 and sum(calls) == 9_000
    calls.clear()
    assert await seqs_of(store, "sparse", wanted[-1]) == []
    assert calls == [0]  # the stretch after the last one is known empty: not scanned again
    calls.clear()
    more = await store.append(events(3, "late"), [["busy"], ["sparse"], ["busy"]])
    assert await seqs_of(store, "sparse", wanted[-1]) == more[1:2]
    assert sum(calls) == 3  # just the new entries
    assert await store.tail("sparse", more[1], 10, wait=0.01) == []
    await store.confirm("sparse", [*wanted, more[1]])
    client = await raw(redis_url)
    try:
        # a confirm moves the cursor over ADVANCE entries at most; compact() the rest
        cursor = int(await client.get("rxsinks:cur:sparse") or 0)
        assert wanted[0] <= cursor <= wanted[0] + rxsinks._store.redis.ADVANCE
        await store.confirm("busy", [*seqs, more[0]])
        assert await store.compact() == 10_002  # up to busy's cursor (more[2] is owed)
        assert await client.get("rxsinks:cur:sparse") == str(more[2])
        assert await store.pending() == 1
    finally:
        await client.aclose()


async def test_a_previous_format_is_moved_at_open(redis_url: str) -> None:
    """Keys as the previous version wrote them (a stream per endpoint) are delivered after
    the upgrade, in seq order, and the old streams are gone."""
    client = await raw(redis_url)
    try:
        await client.set("rxsinks:seq", 3)
        await client.sadd("rxsinks:endpoints", "a", "b")
        bodies = {seq: rxsinks.Event.new("push", id=f"old{seq}") for seq in (1, 2, 3)}
        for seq in (1, 2, 3):
            await client.xadd("rxsinks:ep:a", {"e": encode(bodies[seq]), "t": "1.5"}, f"{seq}-0")
        await client.xadd("rxsinks:ep:b", {"e": encode(bodies[3])}, "3-0")
        await client.xadd("rxsinks:dlq:b", {"seq": 2, "body": encode(bodies[2]), "error": "x",
                                             "attempts": 1, "time": 1.0}, "1-0")  # fmt: skip
        await client.set("rxsinks:dlseq", 1)
        store = RedisStore(redis_url)
        await store.open()
        try:
            assert await client.keys("rxsinks:ep:*") == []
            new = await store.append(events(1, "new"), [["a"]])
            assert new == [4]
            assert [(seq, e.id) for seq, e in await store.read("a", 0, 10)] == [
                (1, "old1"), (2, "old2"), (3, "old3"), (4, "new0")
            ]  # fmt: skip
            assert [seq for seq, _, _ in await store.read_arrivals("a", 2, 10)] == [3, 4]
            assert await store.backlogs() == [
                rxsinks._store.sqlite.EndpointBacklog("a", 4, 0),
                rxsinks._store.sqlite.EndpointBacklog("b", 1, 1),
            ]
            await store.confirm("a", [1, 2, 3, 4])
            await store.confirm("b", [3])
            assert await store.replay("b") == [("b", 2)]
            assert await seqs_of(store, "b") == [2]
            assert await store.pending() == 1
        finally:
            await store.close()
        again = RedisStore(redis_url)  # nothing left to move: opens as usual
        await again.open()
        try:
            assert await again.pending() == 1
        finally:
            await again.close()
    finally:
        await client.aclose()


def encode(event: rxsinks.Event) -> str:
    from rxsinks._event import encode_event

    return encode_event(event)


async def test_moving_an_endpoint_is_refused_with_what_to_do(store: RedisStore) -> None:
    await store.append(events(1), [["old"]])
    with pytest.raises(StoreError, match=r"not supported on Redis.*drop-endpoint old"):
        await store.move_endpoint("old", "new")
    assert await store.pending("old") == 1


async def test_a_newline_in_an_endpoint_name_is_refused(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="newline"):
        await store.append(events(1), [["a\nb"]])


async def test_the_cli_says_move_endpoint_is_not_for_redis(
    store: RedisStore, redis_url: str, tmp_path: Path
) -> None:
    await store.append(events(2), [["before"]] * 2)
    config = tmp_path / "cli.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": "127.0.0.1:1"},
                "store": {"url": redis_url},
                "notifications": {"endpoints": [{"name": "after", "url": "http://127.0.0.1:1/"}]},
            }
        )
    )
    command = [sys.executable, "-m", "rxsinks", "store", "move-endpoint", "before", "after"]
    moved = await asyncio.to_thread(
        subprocess.run,
        [*command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert moved.returncode == 1, moved.stderr
    assert "not supported on Redis" in moved.stderr and "drop-endpoint before" in moved.stderr
    assert await store.pending("before") == 2  # nothing touched
