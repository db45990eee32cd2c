"""Several `rxsinks serve` instances on one Redis: shared ingest and delivery, with failover.

Two real serve processes share a real `redis-server` and four endpoints; the test posts to both
ingests (a load balancer would), SIGKILLs one mid-stream and keeps posting to the survivor. Every
accepted event must reach every endpoint, in order per endpoint (the only repeats allowed are the
block in flight when the instance died: receivers dedupe on the event id).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.serve import Receiver, Serve, free_port, make_events, until

pytest_plugins = ["tests.redis_server"]  # the redis_server and redis_url fixtures

NAMES = ("alpha", "beta", "gamma", "delta")


@pytest.fixture
async def receivers(aiohttp_server: Any) -> AsyncIterator[dict[str, tuple[Receiver, str]]]:
    made: dict[str, tuple[Receiver, str]] = {}
    for name in NAMES:
        target = Receiver()
        app = web.Application()
        app.router.add_post("/hook", target.handle)
        server = await aiohttp_server(app)
        made[name] = (target, str(server.make_url("/hook")))
    yield made


def write_config(path: Path, redis_url: str, receivers: dict[str, tuple[Receiver, str]]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": f"127.0.0.1:{free_port()}", "grace": "1s"},
                "store": {"url": redis_url},
                "notifications": {
                    "endpoints": [
                        {"name": name, "url": url, "threshold": 1, "backoff": "50ms"}
                        for name, (_, url) in receivers.items()
                    ]
                },
            }
        )
    )
    return path


def first_seen(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


async def test_two_instances_share_the_work_and_survive_a_kill(
    tmp_path: Path, redis_url: str, receivers: dict[str, tuple[Receiver, str]]
) -> None:
    one = Serve(write_config(tmp_path / "one.yml", redis_url, receivers), tmp_path / "one.log")
    two = Serve(write_config(tmp_path / "two.yml", redis_url, receivers), tmp_path / "two.log")
    try:
        await one.start()
        await two.start()
        events = make_events(400, "ev")
        # a load balancer alternates: both instances accept, both deliver
        for i in range(0, 200, 10):
            assert await (one if i % 20 == 0 else two).post(events[i : i + 10]) == 200
        await until(
            lambda: all(len(target.received) >= 100 for target, _ in receivers.values()),
            "deliveries from both instances",
        )
        # both instances hold leases (the work is spread), as their logs say
        await until(
            lambda: (
                "lease acquired" in one.log.read_text() and "lease acquired" in two.log.read_text()
            ),
            "both instances delivering",
        )

        assert await one.signal(signal.SIGKILL) == -signal.SIGKILL  # mid-stream
        for i in range(200, 400, 10):
            assert await two.post(events[i : i + 10]) == 200
        expected = [e.id for e in events]
        await until(
            lambda: all(
                first_seen(target.received) == expected for target, _ in receivers.values()
            ),
            "every event at every endpoint after the failover",
        )
        for name, (target, _) in receivers.items():
            # order kept per endpoint; a repeat is only ever the block in flight at the kill
            assert first_seen(target.received) == expected, name
            assert len(target.received) - len(expected) <= 10, name
        assert await two.signal(signal.SIGTERM) == 0
    finally:
        one.kill()
        two.kill()
        await asyncio.sleep(0)
