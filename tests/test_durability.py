"""Nothing accepted is lost: `rxsinks serve` with its SQLite store, as real processes.

Each test runs `python -m rxsinks serve` in a subprocess on a free loopback port, posts events to
its ingest over HTTP, and delivers to a receiver in the test's own event loop whose answers the
test controls (up, down, or a permanent refusal for chosen events). The crash tests with several
blocks in flight run a durable endpoint with ``concurrency`` in a process of its own
(tests/durable_child.py), over SQLite and over Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

import rxsinks
from rxsinks._exceptions import ConfigErrors
from rxsinks._service.config import parse_config
from rxsinks._store.redis import RedisStore
from rxsinks._store.sqlite import SQLiteStore
from tests.serve import DEADLINE, Receiver, Serve, free_port, make_events, post_all, until

pytest_plugins = ["tests.redis_server"]  # the redis_url fixture


async def hook(aiohttp_server: Any, handle: Any) -> str:
    """Serve ``handle`` at ``/hook`` on a free loopback port; returns the URL."""
    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


def serve_config(directory: Path, endpoints: list[dict[str, Any]]) -> Path:
    """A configuration for `rxsinks serve` with these endpoints, on a free port, its store in
    ``directory`` (a window of 32 events)."""
    config = directory / "rxsinks.yml"
    document = {
        "ingest": {"addr": f"127.0.0.1:{free_port()}", "grace": "1s"},
        "store": {"path": str(directory / "rxsinks.db"), "window": 32},
        "notifications": {"endpoints": endpoints},
    }
    config.write_text(yaml.safe_dump(document))
    return config


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    yield target, await hook(aiohttp_server, target.handle)


@pytest.fixture
def serve_factory(tmp_path: Path) -> Any:
    started: list[Serve] = []

    def make(url: str, **endpoint: Any) -> Serve:
        config = tmp_path / "rxsinks.yml"
        if not config.exists():
            document = {
                "ingest": {"addr": f"127.0.0.1:{free_port()}", "grace": "1s"},
                "store": {"path": str(tmp_path / "rxsinks.db"), "window": 32},
                "notifications": {
                    "endpoints": [
                        {"name": "hook", "url": url, "threshold": 1, "backoff": "50ms", **endpoint}
                    ]
                },
            }
            config.write_text(yaml.safe_dump(document))
        serve = Serve(config, tmp_path / "serve.log")
        started.append(serve)
        return serve

    yield make
    for serve in started:
        serve.kill()


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
async def test_a_crash_or_stop_in_an_outage_loses_nothing(
    receiver: tuple[Receiver, str], serve_factory: Any, stop: str
) -> None:
    target, url = receiver
    first = make_events(40, "before")
    queued = make_events(300, "during")

    serve = serve_factory(url, batch={"maxevents": 10})
    await serve.start()
    await post_all(serve, first)
    await until(lambda: len(target.received) == len(first), "the first events")

    target.status = lambda ids: 503  # the outage starts
    await post_all(serve, queued)
    await until(lambda: target.refused >= 3, "attempts during the outage")
    if stop == "sigkill":
        assert await serve.signal(signal.SIGKILL) == -signal.SIGKILL
    else:
        assert await serve.signal(signal.SIGTERM) == 0
    assert target.received == [e.id for e in first]

    target.status = lambda ids: 200  # the receiver recovers; the relay restarts on its store
    again = serve_factory(url)
    await again.start()
    late = make_events(20, "after")
    await post_all(again, late)
    expected = [e.id for e in first + queued + late]
    await until(lambda: len(target.received) >= len(expected), "every event")
    await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive now
    # every event once, in order; nothing confirmed before the crash was sent again
    assert target.received == expected
    assert await again.signal(signal.SIGTERM) == 0


@pytest.mark.parametrize("after_ms", [0, 1, 3])
async def test_a_crash_mid_delivery_repeats_at_most_the_block_in_flight(
    receiver: tuple[Receiver, str], serve_factory: Any, after_ms: int
) -> None:
    # the confirm of a delivered block is noted (in the store's journal) before the next block
    # goes: whenever the kill lands, only the block in flight may arrive twice
    target, url = receiver
    events = make_events(200, "mid")
    serve = serve_factory(url)
    await serve.start()
    assert serve.proc is not None
    pid = serve.proc.pid

    def answer(ids: list[str]) -> int:
        if ids == [events[60].id]:  # kill just after answering this one
            asyncio.get_running_loop().call_later(after_ms / 1000, os.kill, pid, signal.SIGKILL)
        return 200

    target.status = answer
    await post_all(serve, events)
    assert await asyncio.wait_for(asyncio.to_thread(serve.proc.wait), DEADLINE) == -signal.SIGKILL
    before = list(target.received)
    expected = [e.id for e in events]
    assert before == expected[: len(before)] and len(before) >= 61

    target.status = lambda ids: 200
    again = serve_factory(url)
    await again.start()
    await until(lambda: expected[-1] in target.received, "every event")
    await asyncio.sleep(0.3)  # anything extra would arrive now
    after = target.received[len(before) :]
    rest = expected[len(before) :]
    assert after in (rest, [before[-1], *rest])  # the in-flight block at most, once
    assert await again.signal(signal.SIGTERM) == 0


async def test_a_crash_with_filtered_endpoints_repeats_at_most_each_ones_block_in_flight(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    # two endpoints share the store's events through their routes: one takes every event,
    # the other only repository r/1's; the kill lands while both deliver, each at its own
    # place: after the restart each gets every event routed to it, in order, and only its
    # block in flight at the kill may arrive twice
    every, some = Receiver(), Receiver()
    every_url = await hook(aiohttp_server, every.handle)
    some_url = await hook(aiohttp_server, some.handle)
    events = make_events(240, "route")
    endpoint = {"threshold": 1, "backoff": "50ms"}
    config = serve_config(
        tmp_path,
        [
            {"name": "every", "url": every_url, **endpoint},
            {"name": "some", "url": some_url, "match": {"repositories": ["r/1"]}, **endpoint},
        ],
    )
    serve = Serve(config, tmp_path / "serve.log")
    again = Serve(config, tmp_path / "serve.log")
    try:
        await serve.start()
        assert serve.proc is not None
        pid = serve.proc.pid

        def answer(ids: list[str]) -> int:
            if ids == [events[150].id]:  # kill just after answering this one
                os.kill(pid, signal.SIGKILL)
            return 200

        every.status = answer
        await post_all(serve, events)
        code = await asyncio.wait_for(asyncio.to_thread(serve.proc.wait), DEADLINE)
        assert code == -signal.SIGKILL
        every.status = lambda ids: 200
        before = {"every": list(every.received), "some": list(some.received)}
        await again.start()
        expected = {
            "every": [e.id for e in events],
            "some": [e.id for e in events if e.target.repository == "r/1"],
        }
        await until(
            lambda: (
                expected["every"][-1] in every.received and expected["some"][-1] in some.received
            ),
            "every event",
        )
        await asyncio.sleep(0.3)  # anything extra would arrive now
        assert await again.signal(signal.SIGTERM) == 0
    finally:
        serve.kill()
        again.kill()
    for name, target in (("every", every), ("some", some)):
        got, want = before[name], expected[name]
        assert got == want[: len(got)]
        after = target.received[len(got) :]
        assert after in (want[len(got) :], [got[-1], *want[len(got) :]]), name
    assert len(before["every"]) >= 151


async def test_dead_letters_list_and_replay_through_the_cli(
    receiver: tuple[Receiver, str], serve_factory: Any
) -> None:
    target, url = receiver
    events = make_events(10, "dl")
    poisoned = {events[3].id, events[7].id}
    target.status = lambda ids: 422 if poisoned & set(ids) else 200

    serve = serve_factory(url, permanentstatuses=[422])
    # the admin routes the CLI goes through need the token
    document = yaml.safe_load(serve.config.read_text())
    document["ingest"]["token"] = "adm1n-t0ken"
    serve.config.write_text(yaml.safe_dump(document))
    await serve.start()
    await post_all(serve, events, per_request=1)
    await until(lambda: len(target.received) == 8, "the deliverable events")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rxsinks", "dead-letters", *args, "--config", str(serve.config)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            env={**os.environ, "COLUMNS": "200"},
        )

    # while serving, the CLI goes through the relay
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["event"]["id"] for row in rows] == [events[3].id, events[7].id]
    assert all("422" in row["error"] and row["endpoint"] == "hook" for row in rows)

    target.status = lambda ids: 200  # the receiver was fixed: replay
    replayed = cli("replay", "--endpoint", "hook")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 2 dead letter(s) into the running relay" in replayed.stdout
    await until(lambda: len(target.received) == 10, "the replayed events")
    assert target.received[8:] == [events[3].id, events[7].id]
    assert cli("list", "--json").stdout.strip() == ""

    # stopped: the CLI opens the store itself
    assert await serve.signal(signal.SIGTERM) == 0
    assert cli("list").returncode == 0


async def test_a_corrupt_store_stops_serve_with_a_clear_error(
    tmp_path: Path, receiver: tuple[Receiver, str], serve_factory: Any
) -> None:
    _, url = receiver
    serve = serve_factory(url)
    garbage = b"definitely not sqlite " * 400
    (tmp_path / "rxsinks.db").write_bytes(garbage)
    with pytest.raises(AssertionError, match="serve exited"):
        await serve.start()
    assert serve.proc is not None and serve.proc.wait(timeout=DEADLINE) == 1
    output = serve.log.read_text()
    assert "rxsinks.db" in output and "not a database" in output
    assert "Traceback" not in output
    assert (tmp_path / "rxsinks.db").read_bytes() == garbage  # left untouched


async def test_a_full_store_answers_503_and_keeps_what_it_accepted(
    tmp_path: Path, receiver: tuple[Receiver, str], serve_factory: Any
) -> None:
    target, url = receiver
    target.status = lambda ids: 503  # nothing drains: the store fills up
    config = tmp_path / "rxsinks.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": f"127.0.0.1:{free_port()}", "grace": "1s"},
                "store": {"path": str(tmp_path / "rxsinks.db"), "maxsize": "256KiB"},
                "notifications": {
                    "endpoints": [{"name": "hook", "url": url, "threshold": 1, "backoff": "50ms"}]
                },
            }
        )
    )
    serve = serve_factory(url)
    await serve.start()
    accepted: list[str] = []
    refused = 0
    for i in range(400):  # bounded: 400 x 2 KB is far past 256 KiB
        event = rxsinks.Event.new("push", id=f"full-{i:04d}", padding="x" * 2000)
        status = await serve.post([event])
        if status == 200:
            accepted.append(event.id)
        else:
            assert status == 503
            refused += 1
            if refused >= 3:
                break
    assert accepted and refused == 3, (len(accepted), refused)
    target.status = lambda ids: 200
    await until(lambda: len(target.received) >= len(accepted), "the accepted events")
    assert target.received == accepted  # every acknowledged event, once, in order
    assert await serve.signal(signal.SIGTERM) == 0


# -- several blocks in flight ------------------------------------------------------------------

ROOT = Path(__file__).parent.parent
REPOSITORIES = 6
# how long the receiver takes per repository: blocks finish (and are confirmed) out of seq order
TAKES = [0.0, 0.004, 0.001, 0.006, 0.002, 0.003]


class HoldingReceiver:
    """A receiver answering 200 after a delay that depends on the block's repository, until
    it holds: from then on every new request waits unanswered (in flight for the relay).

    Attributes:
        seen: every request's event ids, in arrival order.
        answered: the event ids of the requests answered 200, in answer order.
        held: the requests kept waiting.
    """

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self.answered: list[list[str]] = []
        self.held: list[list[str]] = []
        self.hold_after: int | None = None  # hold once this many events were answered
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        events = (await request.json())["events"]
        ids = [event["id"] for event in events]
        self.seen.append(ids)
        if self.hold_after is not None and sum(map(len, self.answered)) >= self.hold_after:
            self.held.append(ids)
            await self.release.wait()
            return web.Response(status=503)  # (nobody is listening any more)
        await asyncio.sleep(TAKES[int(events[0]["target"]["repository"][2:])])
        self.answered.append(ids)
        return web.Response(status=200)

    def killed(self) -> tuple[list[list[str]], int]:
        """The relay was killed: returns the blocks held (in flight at the kill) and how many
        blocks were answered before; from now on every request is answered."""
        held, before = [list(block) for block in self.held], len(self.answered)
        self.hold_after = None
        self.release.set()
        return held, before

    async def until_every(self, events: list[rxsinks.Event]) -> None:
        """Wait until every one of ``events`` was answered 200, and a little more: anything
        extra (a repeat) would arrive then."""
        expected = {event.id for event in events}
        await until(
            lambda: {name for block in self.answered for name in block} == expected,
            "every event",
        )
        await asyncio.sleep(0.3)


class Child:
    """tests/durable_child.py in a subprocess."""

    def __init__(self, store: str, url: str, log: Path, **options: int) -> None:
        self.args = [sys.executable, "-m", "tests.durable_child", "--store", store, "--url", url]
        for name, value in options.items():
            self.args += [f"--{name.replace('_', '-')}", str(value)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as errors:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), DEADLINE)
        assert line.strip() == b"ready", self.log.read_text()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        code = await asyncio.wait_for(asyncio.to_thread(self.proc.wait), DEADLINE)
        assert code == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def check_crash(
    events: list[rxsinks.Event],
    target: HoldingReceiver,
    held: list[list[str]],
    blocks_before: int,
) -> None:
    """After a crash with ``held`` in flight (``blocks_before`` blocks answered before it) and a
    restart that delivered the rest: every event was answered 200 once, each repository in
    order; the held blocks, of four repositories, arrived twice, first for their repository
    after the restart, and nothing else arrived twice."""
    answered = [name for block in target.answered for name in block]
    assert sorted(answered) == sorted(event.id for event in events)
    repository = {event.id: event.target.repository for event in events}
    assert len({repository[block[0]] for block in held}) == 4  # four keys in flight
    seen = [name for block in target.seen for name in block]
    repeated = sorted(name for name in set(seen) if seen.count(name) > 1)
    assert repeated == sorted(name for block in held for name in block)
    assert all(seen.count(name) == 2 for name in repeated)
    for key in set(repository.values()):
        mine = [name for name in answered if repository[name] == key]
        assert mine == sorted(mine)  # each repository in order, across the crash
    restarted = target.answered[blocks_before:]
    for block in held:
        first = next(b for b in restarted if repository[b[0]] == repository[block[0]])
        assert first[: len(block)] == block


@pytest.fixture
async def holding(aiohttp_server: Any) -> AsyncIterator[tuple[HoldingReceiver, str]]:
    target = HoldingReceiver()
    yield target, await hook(aiohttp_server, target.handle)
    target.release.set()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_crash_with_several_keys_in_flight_repeats_only_the_blocks_in_flight(
    tmp_path: Path, holding: tuple[HoldingReceiver, str], redis_url: str, kind: str
) -> None:
    # four blocks of four repositories in flight when the process is killed; blocks of other
    # repositories were confirmed out of seq order before it: after the restart, every event
    # arrives, each repository in order, and only the four blocks in flight arrive again
    target, url = holding
    events = [
        rxsinks.Event.new("push", target={"repository": f"r/{i % REPOSITORIES}"}, id=f"k-{i:03d}")
        for i in range(240)
    ]
    store: SQLiteStore | RedisStore
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "rxsinks.db")
        where = f"sqlite:{tmp_path / 'rxsinks.db'}"
    else:
        store = RedisStore(redis_url)
        where = f"redis:{redis_url}"
    await store.open()
    try:
        await store.append(events, [["hook"]] * len(events))
    finally:
        if kind == "sqlite":
            await store.close()  # the child takes the store's lock

    options = {"concurrency": 4, "window": 32, "block_size": 2}
    target.hold_after = 80
    child = Child(where, url, tmp_path / "child.log", **options)
    again = Child(where, url, tmp_path / "child.log", **options)
    try:
        await child.start()
        await until(lambda: len(target.held) == 4, "four blocks in flight")
        if kind == "redis":
            # Redis confirms a block while the next goes: wait for the confirms under way
            answered = sum(map(len, target.answered))
            deadline = asyncio.get_running_loop().time() + DEADLINE
            while await store.pending("hook") != len(events) - answered:
                assert asyncio.get_running_loop().time() < deadline, "confirms never landed"
                await asyncio.sleep(0.02)
        await child.kill()
        held, blocks_before = target.killed()
        await again.start()
        await target.until_every(events)
    finally:
        child.stop()
        again.stop()
        if kind == "redis":
            await store.close()

    check_crash(events, target, held, blocks_before)
    before = [name for block in target.answered[:blocks_before] for name in block]
    assert before != sorted(before)  # blocks were confirmed out of seq order before the kill


def _serve_takes_concurrency() -> bool:
    """Whether this version's configuration has the endpoint keys ``concurrency``/``orderby``."""
    document = {
        "notifications": {
            "endpoints": [
                {
                    "name": "hook",
                    "url": "http://127.0.0.1:9/",
                    "concurrency": 4,
                    "orderby": "repository",
                }
            ]
        }
    }
    try:
        parse_config(document)
    except ConfigErrors:
        return False
    return True


@pytest.mark.skipif(
    not _serve_takes_concurrency(),
    reason="the endpoint keys concurrency/orderby are not in this version's configuration",
)
async def test_serve_killed_with_several_keys_in_flight_repeats_only_those_blocks(
    tmp_path: Path, holding: tuple[HoldingReceiver, str]
) -> None:
    # the same crash through `rxsinks serve` itself: its ingest stores the events, its endpoint
    # delivers four repositories at once
    target, url = holding
    events = [
        rxsinks.Event.new("push", target={"repository": f"r/{i % REPOSITORIES}"}, id=f"s-{i:03d}")
        for i in range(240)
    ]
    config = serve_config(
        tmp_path,
        [
            {
                "name": "hook",
                "url": url,
                "timeout": "60s",
                "backoff": "50ms",
                "concurrency": 4,
                "orderby": "repository",
                "batch": {"maxevents": 2},
            }
        ],
    )
    serve = Serve(config, tmp_path / "serve.log")
    again = Serve(config, tmp_path / "serve.log")
    target.hold_after = 80
    try:
        await serve.start()
        await post_all(serve, events)
        await until(lambda: len(target.held) == 4, "four blocks in flight")
        assert await serve.signal(signal.SIGKILL) == -signal.SIGKILL
        held, blocks_before = target.killed()
        await again.start()
        await target.until_every(events)
        assert await again.signal(signal.SIGTERM) == 0
    finally:
        serve.kill()
        again.kill()
    check_crash(events, target, held, blocks_before)
