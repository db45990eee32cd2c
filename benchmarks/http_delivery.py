"""HTTP delivery speed: an rxsinks Endpoint beside a raw aiohttp loop, same POSTs, same run.

A counting receiver runs in its own process on 127.0.0.1. The same events are delivered
(a) one event per POST and (b) in blocks of ``--batch`` events per POST, each time by an
``rxsinks.Endpoint`` (one block in flight, the registry's model) and by a hand-written loop over
one ``aiohttp.ClientSession`` posting the same bodies sequentially (the same concurrency: one
request at a time). Rounds alternate between the two; the best round of each is kept, since the
machine is shared and noisy.

Last line: one JSON object with ``ratio_single``, ``ratio_batched`` (rxsinks / raw aiohttp),
``events_per_s_single`` and ``events_per_s_batched`` (rxsinks).

Usage: ``python benchmarks/http_delivery.py [--events N] [--batch B] [--rounds R]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from _support import counts, machine, receiver, reset

import rxsinks
from rxsinks import Event, encode_envelope


def make_events(count: int) -> list[Event]:
    template = rxsinks.sample_events()
    return [
        Event.from_dict({**template[i % len(template)].to_dict(), "id": f"bench-{i}"})
        for i in range(count)
    ]


async def run_endpoint(url: str, events: list[Event], batch: int) -> float:
    endpoint = rxsinks.Endpoint(
        "bench", url, timeout=10.0, batch=rxsinks.Batching(max_events=batch)
    )
    start = time.perf_counter()
    for event in events:
        endpoint.on_next(event)
    report = await endpoint.aclose()
    elapsed = time.perf_counter() - start
    assert report.flushed
    metrics = endpoint.metrics()
    assert metrics.successes == len(events), metrics
    return elapsed


async def run_raw(url: str, events: list[Event], batch: int) -> float:
    headers = {"Content-Type": rxsinks.MEDIA_TYPE_V1}
    timeout = aiohttp.ClientTimeout(total=10.0)
    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(0, len(events), batch):
            body = encode_envelope(events[i : i + batch])
            while True:
                try:
                    async with session.post(url, data=body, headers=headers) as answer:
                        await answer.read()
                        if answer.status < 400:
                            break
                except aiohttp.ClientError:
                    continue
    return time.perf_counter() - start


async def compare(base: str, events: list[Event], batch: int, rounds: int) -> tuple[float, float]:
    url = f"{base}/events"
    best_rx = best_raw = float("inf")
    for _ in range(rounds):
        reset(base)
        best_raw = min(best_raw, await run_raw(url, events, batch))
        assert counts(base)["events"] == len(events)
        reset(base)
        best_rx = min(best_rx, await run_endpoint(url, events, batch))
        assert counts(base)["events"] == len(events)
    return len(events) / best_rx, len(events) / best_raw


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    with receiver() as base:
        rx_single, raw_single = await compare(base, events, 1, args.rounds)
        many = make_events(args.events * 10)
        rx_batched, raw_batched = await compare(base, many, args.batch, args.rounds)
    print(f"one event per POST: rxsinks {rx_single:,.0f} ev/s, raw aiohttp {raw_single:,.0f} ev/s")
    print(
        f"{args.batch} events per POST: rxsinks {rx_batched:,.0f} ev/s, "
        f"raw aiohttp {raw_batched:,.0f} ev/s"
    )
    result = {
        "benchmark": "http_delivery",
        "events_single": args.events,
        "events_batched": args.events * 10,
        "batch": args.batch,
        "events_per_s_single": round(rx_single),
        "events_per_s_batched": round(rx_batched),
        "raw_events_per_s_single": round(raw_single),
        "raw_events_per_s_batched": round(raw_batched),
        "ratio_single": round(rx_single / raw_single, 3),
        "ratio_batched": round(rx_batched / raw_batched, 3),
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
