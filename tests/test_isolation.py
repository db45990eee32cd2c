"""Endpoints are isolated: one endpoint's slow receiver never delays another endpoint.

Each webhook has its own connection pool, sized to the requests it has in flight. With one pool
shared by every endpoint (aiohttp's default limit is 100 connections), 250 endpoints whose
receivers take half a second hold every connection, and a healthy endpoint's requests wait in the
pool until their timeout: failures, errors, a breaker opening. Here they do not wait at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

import rxsinks
from tests.endpoint_fixtures import eventually, make_events

SLOW_ENDPOINTS = 250
SLOW_ANSWER = 0.5  # seconds each slow receiver takes to answer
SLOW_EVENTS = 6  # per slow endpoint: it is busy for at least 6 x 0.5 s
FAST_EVENTS = 20


@dataclass
class Receivers:
    """One server on 127.0.0.1 playing many receivers: ``/slow/<n>`` answers after
    :data:`SLOW_ANSWER` seconds, ``/fast`` at once."""

    base: str
    received: int = 0
    """Requests to slow receivers that arrived (answered or not)."""
    answered: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    found = Receivers("")

    async def slow(request: web.Request) -> web.Response:
        found.received += 1
        await asyncio.sleep(SLOW_ANSWER)
        found.answered[request.path] = found.answered.get(request.path, 0) + 1
        return web.Response()

    async def fast(request: web.Request) -> web.Response:
        found.answered[request.path] = found.answered.get(request.path, 0) + 1
        return web.Response()

    app = web.Application()
    app.router.add_post("/slow/{n}", slow)
    app.router.add_post("/fast", fast)
    runner = web.AppRunner(app)
    await runner.setup()
    # every endpoint connects at once: the listen backlog must hold them all
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    found.base = f"http://{host}:{port}"
    yield found
    await runner.cleanup()


async def deliver_fast(receivers: Receivers) -> tuple[rxsinks.Endpoint, float]:
    """Deliver through a new endpoint to the fast receiver; the endpoint and the seconds it
    took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    fast = rxsinks.Endpoint("fast", f"{receivers.base}/fast")
    for event in make_events(FAST_EVENTS):
        fast.on_next(event)
    # (a request that fails is retried: this waits for all of them to succeed)
    await eventually(
        lambda: fast.metrics().successes == FAST_EVENTS, "the fast endpoint", timeout=60
    )
    return fast, loop.time() - started


async def test_a_fast_endpoint_is_not_held_up_by_250_slow_ones(receivers: Receivers) -> None:
    # alone, for comparison
    alone, alone_seconds = await deliver_fast(receivers)
    assert (await alone.aclose(timeout=10)).flushed

    slow = [
        rxsinks.Endpoint(f"slow-{n}", f"{receivers.base}/slow/{n}") for n in range(SLOW_ENDPOINTS)
    ]
    for endpoint in slow:
        for event in make_events(SLOW_EVENTS):
            endpoint.on_next(event)
    # every slow endpoint has a request in flight: with one shared pool of 100 connections,
    # 150 of them would be waiting for one, and so would the fast endpoint's requests
    await eventually(lambda: receivers.received >= SLOW_ENDPOINTS, "the slow requests")
    fast, busy_seconds = await deliver_fast(receivers)
    print(f"fast endpoint: {alone_seconds:.3f} s alone, {busy_seconds:.3f} s beside the slow ones")

    # done while every slow endpoint still had events to deliver (each needs 3 s at least)
    assert all(endpoint.metrics().pending > 0 for endpoint in slow)
    assert busy_seconds < SLOW_ANSWER * SLOW_EVENTS
    snapshot = fast.metrics()
    # and not one of its requests waited for a connection until it timed out
    assert (snapshot.successes, snapshot.failures, snapshot.errors) == (FAST_EVENTS, 0, 0)
    assert snapshot.breaker == "closed"
    assert receivers.answered["/fast"] == 2 * FAST_EVENTS

    reports = await asyncio.gather(*(endpoint.aclose(timeout=30) for endpoint in (fast, *slow)))
    assert all(report.flushed for report in reports)
    assert sum(endpoint.metrics().errors for endpoint in slow) == 0
    assert all(receivers.answered[f"/slow/{n}"] == SLOW_EVENTS for n in range(SLOW_ENDPOINTS))
