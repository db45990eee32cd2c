"""Nothing accepted is lost: `rxsinks serve` with its SQLite store, as real processes.

Each test runs `python -m rxsinks serve` in a subprocess on a free loopback port, posts events to
its ingest over HTTP, and delivers to a receiver in the test's own event loop whose answers the
test controls (up, down, or a permanent refusal for chosen events).
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
from tests.serve import DEADLINE, Receiver, Serve, free_port, make_events, post_all, until


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    server = await aiohttp_server(app)
    yield target, str(server.make_url("/hook"))


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
