"""Memory under a long outage: RSS per pending event, durable store vs the in-memory queue.

One endpoint is down (its URL refuses connections). ``--events`` events are accepted by
`rxsinks serve` (in its own process) in envelopes of ``--per-post``; the serve process's RSS is
read from /proc before and after, once with the SQLite store (the backlog lives on disk, a window
in memory) and, in the same run, with ``store: {kind: memory}`` (the registry's behaviour: every
pending event in memory) as the baseline.

Last line: one JSON object with ``rss_bytes_per_pending_event`` (SQLite) and
``memory_store_rss_bytes_per_pending_event`` (baseline).

Usage: ``python benchmarks/backlog.py [--events N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from _relay_process import free_port, post_envelopes, rss_bytes, serve
from _support import machine

import rxsinks


def make_events(count: int) -> list[rxsinks.Event]:
    template = rxsinks.sample_events()
    return [
        rxsinks.Event.from_dict({**template[i % len(template)].to_dict(), "id": f"backlog-{i}"})
        for i in range(count)
    ]


async def pending(url: str) -> int:
    base = url.rsplit("/", 1)[0]
    async with aiohttp.ClientSession() as session, session.get(f"{base}/debug/vars") as answer:
        document = await answer.json()
    endpoints = document["registry"]["notifications"]["endpoints"]
    return int(endpoints[0]["Metrics"]["Pending"])


async def measure(store: dict[str, Any], events: list[rxsinks.Event], per_post: int) -> float:
    dead = f"http://127.0.0.1:{free_port()}/refused"  # nothing listens there
    with tempfile.TemporaryDirectory() as directory:
        if store.get("path") == "DB":
            store = {**store, "path": str(Path(directory) / "rxsinks.db")}
        endpoint = {"url": dead, "threshold": 1, "backoff": "1s"}
        async with serve(store, endpoint, Path(directory)) as (url, pid):
            # warm up: the first requests load code and allocate the pools for good
            await post_envelopes(url, events[:2000], per_post, 4)
            await asyncio.sleep(0.5)
            before = rss_bytes(pid)
            await post_envelopes(url, events[2000:], per_post, 4)
            await asyncio.sleep(1.0)
            after = rss_bytes(pid)
            backlog = await pending(url)
            if backlog < len(events):
                raise RuntimeError(f"only {backlog} of {len(events)} events pending")
    return (after - before) / (len(events) - 2000)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-post", type=int, default=100)
    args = parser.parse_args()
    events = make_events(args.events)
    sqlite = await measure({"path": "DB", "window": 1024}, events, args.per_post)
    # the memory store is bounded by default: lift the bound to measure an unbounded backlog
    memory = await measure(
        {"kind": "memory", "maxevents": 0, "maxsize": "1GiB"}, events, args.per_post
    )
    print(f"RSS per pending event: SQLite store {sqlite:,.0f} bytes, memory store {memory:,.0f}")
    print(
        json.dumps(
            {
                "benchmark": "backlog",
                "events": args.events,
                "rss_bytes_per_pending_event": round(sqlite, 1),
                "memory_store_rss_bytes_per_pending_event": round(memory, 1),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
