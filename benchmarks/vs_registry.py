"""Draining a backlog: the real Docker registry's dispatcher beside `rxsinks serve`, same receiver.

1. The registry (Debian's ``docker-registry``, filesystem storage in a temporary directory) has
   one notification endpoint whose port nothing listens on yet. One small image is pushed with
   ``skopeo``, then ``--events`` HEAD requests on its layer blob each queue one ``pull`` event in
   the registry's memory (the endpoint is down). The registry's RSS is read before and after.
2. The counting receiver (``benchmarks/receiver.py``, its own process) is started on that port,
   recording every event it gets. The registry's next attempt (after its ``backoff``) opens the
   breaker and the queue drains; the rate is timed from the first event received to the last,
   so the backoff wait is not counted.
3. The same events, exactly as captured, are posted one per request to ``rxsinks serve`` (its
   own process) whose endpoint points at another port where nothing listens; once all are
   accepted, a fresh receiver is started on that port and the drain is timed the same way:
   (a) one event per POST, as the registry; (b) up to ``--batch`` events per POST. Each with the
   SQLite store (the default, durable: the backlog is on disk) and with the memory store.

Every receiver records what it got; the run fails if rxsinks did not deliver every captured event.

Last line: one JSON object with ``registry_events_per_s``, ``rxsinks_single_events_per_s`` and
``rxsinks_batched_events_per_s`` (SQLite store), ``ratio_single`` and ``ratio_batched`` (rxsinks /
registry), the memory-store figures (``memory_*``) and ``registry_rss_bytes_per_pending_event``.
With ``--rounds R`` (3 by default) the whole run is made R times, one after the other; every
figure is the median round's, and ``ratio_single_rounds`` has each round's single-event ratio.
If ``docker-registry`` or ``skopeo`` is missing it says so and prints ``{"skipped": ...}``.

Usage: ``python benchmarks/vs_registry.py [--events N] [--batch B] [--rounds R]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _registry import (
    INSTALL_HINT,
    build_oci_image,
    missing_binaries,
    push,
    registry,
    registry_version,
)
from _relay_process import free_port, post_envelopes, rss_bytes, serve
from _support import counts, machine, receiver

import rxsinks

REPOSITORY = "bench/app"
# the registry's own defaults, given to both sides: 10 fast tries, then one try per second
BREAKER = {"timeout": "1s", "threshold": 10, "backoff": "1s"}
DRAIN_TIMEOUT = 300.0


@dataclass(frozen=True)
class Drain:
    """A timed drain: events received, seconds from the first to the last, events/s."""

    events: list[dict[str, Any]]
    seconds: float
    events_per_s: float
    requests: int


def read_drain(record: Path, expected: int) -> Drain:
    """Time a drain from a receiver's record file.

    The clock starts at the first request received, so the events of that request are not
    counted in the rate: ``(expected - first request's events) / (last - first)``.
    """
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    if not lines:
        raise RuntimeError(f"the receiver recorded nothing in {record}")
    received = sum(len(line["events"]) for line in lines)
    if received < expected:
        raise RuntimeError(f"the receiver recorded {received} events, expected {expected}")
    first = lines[0]["received"]
    seconds = lines[-1]["received"] - first
    timed = expected - len(lines[0]["events"])
    events = [event for line in lines for event in line["events"]]
    return Drain(events, seconds, timed / seconds if seconds > 0 else float("inf"), len(lines))


async def wait_received(base: str, expected: int) -> None:
    """Poll the receiver until it counted ``expected`` events."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while (got := counts(base)["events"]) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {expected} events received in {DRAIN_TIMEOUT}s")
        await asyncio.sleep(0.05)


async def drain_to(port: int, expected: int, record: Path) -> Drain:
    """Bring the receiver up on ``port`` (where a backlog waits), time the drain."""
    with receiver("--port", str(port), "--record", str(record)) as base:
        await wait_received(base, expected)
    return read_drain(record, expected)


async def hammer_heads(url: str, count: int, concurrency: int) -> float:
    """``count`` HEAD requests on ``url`` from ``concurrency`` clients; seconds taken."""
    remaining = [count]

    async def client(session: aiohttp.ClientSession) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with session.head(url) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"HEAD {url} answered {answer.status}")

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return time.perf_counter() - start


@dataclass(frozen=True)
class RegistryRun:
    """The registry's side: its drain (with the captured events) and what the backlog cost."""

    drain: Drain
    heads_per_s: float
    rss_bytes_per_pending_event: float


async def registry_backlog(directory: Path, events: int) -> RegistryRun:
    """Phases 1 and 2: the registry's backlog of ``events`` pulls (plus the push), its drain."""
    hook_port = free_port()
    endpoint = {"name": "bench", "url": f"http://127.0.0.1:{hook_port}/events", **BREAKER}
    image = build_oci_image(directory / "image", "v1", {"bench.txt": str(time.time()).encode()})
    with registry(directory / "registry", [endpoint]) as running:
        push(image, f"{running.host}/{REPOSITORY}:v1", directory / "skopeo-home")
        blob = f"http://{running.host}/v2/{REPOSITORY}/blobs/{image.layer_digest}"
        await hammer_heads(blob, 200, 8)  # warm up the registry before reading its RSS
        await asyncio.sleep(1.0)
        before = rss_bytes(running.pid)
        queued_before = running.notification_metrics()["bench"]["Pending"]
        head_seconds = await hammer_heads(blob, events, 8)
        await asyncio.sleep(1.0)
        after = rss_bytes(running.pid)
        metrics = running.notification_metrics()["bench"]
        pending = int(metrics["Pending"])
        if pending - queued_before < events:
            raise RuntimeError(f"{events} HEADs queued only {pending - queued_before} events")
        print(
            f"registry: {pending:,} events pending ({events:,} HEADs at "
            f"{events / head_seconds:,.0f}/s), draining...",
            flush=True,
        )
        drain = await drain_to(hook_port, pending, directory / "registry-drain.ndjson")
    return RegistryRun(drain, events / head_seconds, (after - before) / (pending - queued_before))


async def rxsinks_drain(
    directory: Path, store: dict[str, Any], events: Sequence[rxsinks.Event], batch: int
) -> Drain:
    """Phase 3: the same events through `rxsinks serve`, backlogged, then drained."""
    dead_port = free_port()
    endpoint: dict[str, Any] = {"url": f"http://127.0.0.1:{dead_port}/events", **BREAKER}
    if batch > 1:
        # a memory-store endpoint forms blocks as events arrive, so it needs time to fill them
        endpoint["batch"] = {"maxevents": batch, "maxdelay": "100ms"}
    label = f"{store.get('kind', 'sqlite')}-{batch}"
    work = directory / label
    work.mkdir()
    if store.get("kind") != "memory":
        store = {**store, "path": str(work / "rxsinks.db")}
    async with serve(store, endpoint, work) as (url, _):
        # one event per request, as the registry posts them
        await post_envelopes(url, list(events), 1, 8)
        await wait_pending(url, len(events))
        drain = await drain_to(dead_port, len(events), work / "drain.ndjson")
    sent = [event.id for event in events]
    got = [str(event["id"]) for event in drain.events]
    if sorted(set(got)) != sorted(sent):
        raise RuntimeError(f"rxsinks ({label}) did not deliver exactly the captured events")
    return drain


async def wait_pending(url: str, expected: int) -> None:
    """Wait until `rxsinks serve`'s endpoint counts ``expected`` events pending.

    A partial batch waits up to its ``maxdelay`` before the queue counts it.
    """
    vars_url = url.rsplit("/", 1)[0] + "/debug/vars"
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(vars_url, timeout=10) as answer:
            document = json.load(answer)
        metrics = document["registry"]["notifications"]["endpoints"][0]["Metrics"]
        if int(metrics["Pending"]) >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"rxsinks holds {metrics['Pending']} pending, expected {expected}")
        await asyncio.sleep(0.05)


def unique_events(captured: list[dict[str, Any]]) -> list[rxsinks.Event]:
    """The captured events in arrival order, once each (a retried POST may repeat one)."""
    seen: set[str] = set()
    events = []
    for raw in captured:
        if raw["id"] not in seen:
            seen.add(raw["id"])
            events.append(rxsinks.Event.from_dict(raw))
    return events


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="HEAD requests (backlog)")
    parser.add_argument("--batch", type=int, default=100, help="events per POST when batched")
    parser.add_argument(
        "--rounds", type=int, default=3, help="whole runs, one after the other; medians count"
    )
    args = parser.parse_args()
    missing = missing_binaries()
    if missing:
        reason = f"{' and '.join(missing)} not installed ({INSTALL_HINT})"
        print(f"vs_registry skipped: {reason}")
        print(json.dumps({"benchmark": "vs_registry", "skipped": reason}))
        return
    # the machine is shared and one drain moves by a fifth: every round drains the registry and
    # each rxsinks variant one after the other, and each one's median round counts
    runs: dict[str, list[float]] = {}
    registry_runs: list[RegistryRun] = []
    for round_ in range(max(args.rounds, 1)):
        with tempfile.TemporaryDirectory() as name:
            directory = Path(name)
            reg = await registry_backlog(directory, args.events)
            registry_runs.append(reg)
            drain = reg.drain
            events = unique_events(drain.events)
            runs.setdefault("registry", []).append(drain.events_per_s)
            print(
                f"round {round_ + 1}: registry drained {len(events):,} events at "
                f"{drain.events_per_s:,.0f} ev/s ({drain.requests:,} requests)",
                flush=True,
            )
            for kind, store in (("sqlite", {"path": "DB"}), ("memory", {"kind": "memory"})):
                for mode, batch in (("single", 1), ("batched", args.batch)):
                    result = await rxsinks_drain(directory, store, events, batch)
                    runs.setdefault(f"{kind}_{mode}", []).append(result.events_per_s)
                    print(
                        f"rxsinks {kind} store, {mode}: {result.events_per_s:,.0f} ev/s "
                        f"({result.requests:,} requests)",
                        flush=True,
                    )
    rates = {name: statistics.median(values) for name, values in runs.items()}
    registry_rate = rates["registry"]
    figures = {
        "benchmark": "vs_registry",
        "events": len(events),
        "batch": args.batch,
        "rounds": len(registry_runs),
        "store": "sqlite",
        "registry_events_per_s": round(registry_rate),
        "rxsinks_single_events_per_s": round(rates["sqlite_single"]),
        "rxsinks_batched_events_per_s": round(rates["sqlite_batched"]),
        "ratio_single": round(rates["sqlite_single"] / registry_rate, 3),
        "ratio_batched": round(rates["sqlite_batched"] / registry_rate, 3),
        "ratio_single_rounds": [
            round(mine / theirs, 3)
            for mine, theirs in zip(runs["sqlite_single"], runs["registry"], strict=True)
        ],
        "memory_single_events_per_s": round(rates["memory_single"]),
        "memory_batched_events_per_s": round(rates["memory_batched"]),
        "memory_ratio_single": round(rates["memory_single"] / registry_rate, 3),
        "memory_ratio_batched": round(rates["memory_batched"] / registry_rate, 3),
        "registry_heads_per_s": round(statistics.median(r.heads_per_s for r in registry_runs)),
        "registry_rss_bytes_per_pending_event": round(
            statistics.median(r.rss_bytes_per_pending_event for r in registry_runs), 1
        ),
        "registry_version": registry_version(),
        "machine": machine(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
