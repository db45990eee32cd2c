"""Latency under a steady load, ingest to receipt: `rxsinks serve`, memory and SQLite stores.

A sender posts registry events to `rxsinks serve` (its own process) at a fixed rate, one event
per POST as the registry does, for ``--seconds``; its endpoint (one event per POST, the registry's
defaults) delivers to the counting receiver (``benchmarks/receiver.py``, another process) which
records the time each request arrived. Each event carries its send time in an extra field,
``bench_sent_at`` (unknown fields are forwarded unchanged), taken with ``time.time()`` just
before its POST to the ingest; all processes read the same machine clock. The load is open-loop:
each POST is started on schedule whatever the earlier ones are doing, so a slow relay shows up as
latency, not as a lower rate. ``--warmup`` events go first and are not measured.

Last line: one JSON object with, per store (``memory``, ``sqlite``): ``p50_ms``, ``p90_ms``,
``p99_ms``, ``max_ms``, ``mean_ms``, the rate achieved and the events measured.

Usage: ``python benchmarks/latency.py [--rate R] [--seconds S] [--warmup W]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _relay_process import serve
from _support import counts, machine, receiver

import rxsinks

SENT_AT = "bench_sent_at"
DELIVERY_TIMEOUT = 120.0


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def send_at_rate(url: str, prefix: str, rate: float, count: int) -> float:
    """POST ``count`` events, one per request, started ``1/rate`` s apart; the rate achieved."""
    template = rxsinks.sample_events()[0].to_dict()
    headers = {"Content-Type": rxsinks.MEDIA_TYPE_V1}
    failures: list[str] = []

    async def post(session: aiohttp.ClientSession, index: int) -> None:
        event = {**template, "id": f"{prefix}-{index}", SENT_AT: time.time()}
        body = json.dumps({"events": [event]}).encode()
        async with session.post(url, data=body, headers=headers) as answer:
            await answer.read()
            if answer.status != 200:
                failures.append(f"ingest answered {answer.status}")

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=256)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(count):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, index)))
        elapsed = loop.time() - start
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{len(failures)} POSTs failed, first: {failures[0]}")
    return count / elapsed if elapsed > 0 else float("inf")


async def wait_received(base: str, expected: int) -> None:
    """Poll the receiver until it counted ``expected`` events in all."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while (got := counts(base)["events"]) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {expected} events delivered")
        await asyncio.sleep(0.05)


async def run_store(
    name: str, store: dict[str, Any], base: str, args: argparse.Namespace, directory: Path
) -> float:
    """Warm up, then send at the fixed rate through one `rxsinks serve`; the rate achieved."""
    work = directory / name
    work.mkdir()
    if name == "sqlite":
        store = {**store, "path": str(work / "rxsinks.db")}
    total = counts(base)["events"]
    measured = int(args.rate * args.seconds)
    endpoint = {"url": f"{base}/events"}
    async with serve(store, endpoint, work) as (url, _):
        await send_at_rate(url, f"warmup-{name}", args.rate, args.warmup)
        await wait_received(base, total + args.warmup)
        achieved = await send_at_rate(url, f"latency-{name}", args.rate, measured)
        await wait_received(base, total + args.warmup + measured)
    return achieved


def latencies(record: Path) -> dict[str, list[float]]:
    """Store name -> sorted ingest-to-receipt latencies (ms) of the measured events."""
    found: dict[str, list[float]] = {}
    for line in record.read_text().splitlines():
        request = json.loads(line)
        for event in request["events"]:
            kind, _, store_index = str(event["id"]).partition("-")
            if kind == "latency":
                store = store_index.rsplit("-", 1)[0]
                found.setdefault(store, []).append((request["received"] - event[SENT_AT]) * 1e3)
    return {store: sorted(values) for store, values in found.items()}


def summary(values: list[float], expected: int, achieved: float) -> dict[str, float]:
    if len(values) < expected:
        raise RuntimeError(f"{len(values)} measured events recorded, expected {expected}")
    return {
        "events": len(values),
        "rate_per_s": round(achieved, 1),
        "p50_ms": round(percentile(values, 0.50), 2),
        "p90_ms": round(percentile(values, 0.90), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "max_ms": round(values[-1], 2),
        "mean_ms": round(sum(values) / len(values), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to send")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured events first")
    args = parser.parse_args()
    stores = {"memory": {"kind": "memory"}, "sqlite": {"path": "DB"}}
    achieved: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        record = directory / "received.ndjson"
        with receiver("--record", str(record)) as base:
            for store, config in stores.items():
                achieved[store] = await run_store(store, config, base, args, directory)
        found = latencies(record)
    measured = int(args.rate * args.seconds)
    result: dict[str, Any] = {
        "benchmark": "latency",
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "per_post": 1,
    }
    for store in stores:
        figures = summary(found.get(store, []), measured, achieved[store])
        result[store] = figures
        print(
            f"{store:6} store at {figures['rate_per_s']:,.0f} ev/s: p50 {figures['p50_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms"
        )
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
