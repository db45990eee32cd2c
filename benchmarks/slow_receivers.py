"""Slow receivers: the real Docker registry beside `rxsinks serve`, same receivers.

Two scenarios, each run on both sides with the same events and the same receiver processes
(``benchmarks/receiver.py --delay``), timed from the first event received to the last:

1. **One slow receiver, parallel delivery.** The receiver answers each request after 20 ms. An
   image is pushed (``skopeo``) into 32 repositories; ``--events`` HEAD requests on its blob,
   spread over the repositories, queue one ``pull`` event each in the registry while its endpoint
   is down; then the receiver comes up and the registry drains its queue, one request at a time
   (its design: about 1/latency events per second). The same events are posted to `rxsinks
   serve` (SQLite store) whose endpoint has ``concurrency: 16`` and ``orderby: repository``, and
   drained to a receiver of the same speed. The receiver's record is checked: the events of each
   repository arrived in the order the registry emitted them.
   ``ratio_concurrent`` = rxsinks' events/s / the registry's.
2. **Many slow endpoints.** ``--endpoints`` endpoints (each its own URL), every request answered
   after 100 ms; ``--per-endpoint`` events reach every endpoint. The registry gets them from HEAD
   requests while its endpoints are up; `rxsinks serve` (SQLite store) from one POST.
   ``ratio_many_endpoints`` = the registry's seconds / rxsinks' seconds.

Last line: one JSON object with ``ratio_concurrent``, ``ratio_many_endpoints`` and the figures
behind them. If ``docker-registry`` or ``skopeo`` is missing it says so and prints
``{"skipped": ...}``.

Usage: ``python benchmarks/slow_receivers.py [--events N] [--endpoints E] [--per-endpoint K]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _registry import INSTALL_HINT, build_oci_image, missing_binaries, push, registry
from _relay_process import free_port, post_envelopes, serve
from _support import counts, machine, receiver
from vs_registry import hammer_heads, unique_events, wait_pending

import rxsinks

REPOSITORIES = 32
BREAKER = {"timeout": "5s", "threshold": 10, "backoff": "1s"}
TIMEOUT = 600.0


def read_record(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def span(lines: list[dict[str, Any]]) -> float:
    """Seconds from the first request received to the last."""
    times = [line["received"] for line in lines]
    return max(times) - min(times)


async def wait_events(base: str, expected: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while (got := counts(base)["events"]) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {expected} events received in {TIMEOUT}s")
        await asyncio.sleep(0.05)


async def settled(base: str, quiet: float = 1.0) -> int:
    """Wait until the receiver's count stays the same for ``quiet`` seconds; returns it."""
    last, since = counts(base)["events"], time.monotonic()
    while time.monotonic() - since < quiet:
        await asyncio.sleep(0.1)
        now = counts(base)["events"]
        if now != last:
            last, since = now, time.monotonic()
    return last


def per_repository(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = defaultdict(list)
    for event in events:
        order[event["target"]["repository"]].append(event["id"])
    return order


# -- scenario 1 --------------------------------------------------------------------------------


async def registry_slow_drain(directory: Path, events: int) -> tuple[list[dict[str, Any]], float]:
    """The registry's queue of ``events`` pulls over 32 repositories, drained to a 20 ms receiver.

    Returns the events in the order they arrived and the registry's events/s.
    """
    hook_port = free_port()
    endpoint = {"name": "slow", "url": f"http://127.0.0.1:{hook_port}/events", **BREAKER}
    image = build_oci_image(directory / "image", "v1", {"slow.txt": str(time.time()).encode()})
    with registry(directory / "registry-1", [endpoint]) as running:
        for index in range(REPOSITORIES):
            push(image, f"{running.host}/slow/app{index}:v1", directory / "skopeo-home")
        per_repo = events // REPOSITORIES
        for index in range(REPOSITORIES):
            blob = f"http://{running.host}/v2/slow/app{index}/blobs/{image.layer_digest}"
            await hammer_heads(blob, per_repo, 4)
        await asyncio.sleep(1.0)
        pending = int(running.notification_metrics()["slow"]["Pending"])
        print(f"registry: {pending:,} events pending, draining to a 20 ms receiver...", flush=True)
        record = directory / "registry-slow.ndjson"
        with receiver("--port", str(hook_port), "--record", str(record), "--delay", "0.02") as base:
            await wait_events(base, pending)
    lines = read_record(record)
    received = [event for line in lines for event in line["events"]]
    timed = len(received) - len(lines[0]["events"])
    return received, timed / span(lines)


async def rxsinks_slow_drain(
    directory: Path, events: list[rxsinks.Event], concurrency: int
) -> tuple[list[dict[str, Any]], float]:
    """The same events through `rxsinks serve` (SQLite), drained with ``concurrency``."""
    dead_port = free_port()
    endpoint = {
        "url": f"http://127.0.0.1:{dead_port}/events",
        **BREAKER,
        "concurrency": concurrency,
        "orderby": "repository",
    }
    work = directory / f"rxsinks-slow-{concurrency}"
    work.mkdir()
    store = {"path": str(work / "rxsinks.db")}
    record = work / "drain.ndjson"
    async with serve(store, endpoint, work) as (url, _):
        await post_envelopes(url, events, 1, 8)
        await wait_pending(url, len(events))
        with receiver("--port", str(dead_port), "--record", str(record), "--delay", "0.02") as base:
            await wait_events(base, len(events))
    lines = read_record(record)
    received = [event for line in lines for event in line["events"]]
    timed = len(received) - len(lines[0]["events"])
    return received, timed / span(lines)


# -- scenario 2 --------------------------------------------------------------------------------


async def registry_many_endpoints(
    directory: Path, endpoints: int, per_endpoint: int
) -> tuple[list[dict[str, Any]], float]:
    """``per_endpoint`` pulls reaching ``endpoints`` endpoints answering after 100 ms."""
    record = directory / "registry-many.ndjson"
    image = build_oci_image(directory / "image2", "v1", {"many.txt": str(time.time()).encode()})
    with receiver("--record", str(record), "--delay", "0.1") as base:
        hooks = [
            {"name": f"e{index}", "url": f"{base}/events/e{index}", **BREAKER}
            for index in range(endpoints)
        ]
        with registry(directory / "registry-2", hooks) as running:
            push(image, f"{running.host}/many/app:v1", directory / "skopeo-home")
            already = await settled(base)  # the push's events, to every endpoint
            blob = f"http://{running.host}/v2/many/app/blobs/{image.layer_digest}"
            await hammer_heads(blob, per_endpoint, 1)
            await wait_events(base, already + endpoints * per_endpoint)
    lines = [line for line in read_record(record) if line["events"][0]["action"] == "pull"]
    events = [line["events"][0] for line in lines if line["path"] == "e0"]
    return events, span(lines)


async def rxsinks_many_endpoints(
    directory: Path, events: list[rxsinks.Event], endpoints: int
) -> float:
    """The same events to ``endpoints`` endpoints of `rxsinks serve` (SQLite)."""
    work = directory / "rxsinks-many"
    work.mkdir()
    record = work / "many.ndjson"
    with receiver("--record", str(record), "--delay", "0.1") as base:
        hooks = [
            {"name": f"e{index}", "url": f"{base}/events/e{index}", **BREAKER}
            for index in range(endpoints)
        ]
        async with serve({"path": str(work / "rxsinks.db")}, hooks, work) as (url, _):
            await post_envelopes(url, events, len(events), 1)
            await wait_events(base, endpoints * len(events))
    return span(read_record(record))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=640, help="scenario 1: events queued")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--endpoints", type=int, default=200, help="scenario 2")
    parser.add_argument("--per-endpoint", type=int, default=20, help="scenario 2")
    args = parser.parse_args()
    missing = missing_binaries()
    if missing:
        reason = f"{' and '.join(missing)} not installed ({INSTALL_HINT})"
        print(f"slow_receivers skipped: {reason}")
        print(json.dumps({"benchmark": "slow_receivers", "skipped": reason}))
        return
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        captured, registry_rate = await registry_slow_drain(directory, args.events)
        events = unique_events(captured)
        print(f"registry: {registry_rate:,.1f} events/s to a 20 ms receiver", flush=True)
        received, rxsinks_rate = await rxsinks_slow_drain(directory, events, args.concurrency)
        expected_order = per_repository([event.to_dict() for event in events])
        got_order = per_repository(received)
        if got_order != expected_order:
            raise RuntimeError("rxsinks broke the order of events within a repository")
        print(
            f"rxsinks (concurrency {args.concurrency}): {rxsinks_rate:,.1f} events/s, "
            f"order kept in all {len(got_order)} repositories",
            flush=True,
        )
        pulls, registry_seconds = await registry_many_endpoints(
            directory, args.endpoints, args.per_endpoint
        )
        print(
            f"registry: {args.endpoints} endpoints x {args.per_endpoint} events in "
            f"{registry_seconds:.2f} s",
            flush=True,
        )
        rxsinks_seconds = await rxsinks_many_endpoints(
            directory, unique_events(pulls), args.endpoints
        )
        print(f"rxsinks: the same in {rxsinks_seconds:.2f} s", flush=True)
    figures = {
        "benchmark": "slow_receivers",
        "events": len(events),
        "repositories": REPOSITORIES,
        "concurrency": args.concurrency,
        "registry_events_per_s_slow": round(registry_rate, 1),
        "rxsinks_events_per_s_slow": round(rxsinks_rate, 1),
        "ratio_concurrent": round(rxsinks_rate / registry_rate, 2),
        "order_kept_repositories": len(got_order),
        "endpoints": args.endpoints,
        "events_per_endpoint": args.per_endpoint,
        "registry_seconds_many": round(registry_seconds, 2),
        "rxsinks_seconds_many": round(rxsinks_seconds, 2),
        "ratio_many_endpoints": round(registry_seconds / rxsinks_seconds, 2),
        "machine": machine(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
