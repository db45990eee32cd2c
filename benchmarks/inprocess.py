"""In-process dispatch speed: rxsinks operators beside a hand-written asyncio baseline.

Both sides do the same work per endpoint: drop ignored events (pulls), buffer the rest in a FIFO
that decouples the producer, and hand each event to a counting sink through a retry step
(try/except with a breaker check) on the event loop. rxsinks runs
``EventSubject -> ignore -> deliver(count, retry=retry_with_breaker())`` with every outcome
emitted to a subscriber; the baseline runs one ``asyncio.Queue`` and one worker task per
endpoint. Both run in the same process, one after the
other, several rounds, best round kept (the machine is shared and noisy: compare the ratio).

Last line: one JSON object with ``rxsinks_events_per_s``, ``baseline_events_per_s`` and ``ratio``
(rxsinks / baseline, 10-endpoint case; the outcome streams subscribed without an ``on_next``,
so the stages build no outcome), ``ratio_outcomes`` (the same with every outcome delivered to a
counting ``on_next``), plus the 1-endpoint figures.

Usage: ``python benchmarks/inprocess.py [--events N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import rxsinks
from rxsinks import Event

IGNORED_ACTIONS = frozenset({"pull"})


def make_events(count: int) -> list[Event]:
    """Registry-shaped events, one in ten a pull (ignored by every endpoint)."""
    return [
        Event.new(
            "pull" if i % 10 == 9 else "push",
            target={
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "repository": f"library/app{i % 50}",
                "digest": f"sha256:{i:064x}",
                "tag": "latest",
            },
        )
        for i in range(count)
    ]


async def run_rxsinks(
    events: list[Event], endpoints: int, *, outcomes: bool = False
) -> tuple[float, int]:
    subject = rxsinks.EventSubject()
    delivered = [0]
    seen = [0]

    def count(_: object) -> None:
        delivered[0] += 1

    def see(_: object) -> None:
        seen[0] += 1

    for _ in range(endpoints):
        subject.pipe(
            rxsinks.ignore(actions=IGNORED_ACTIONS),
            rxsinks.deliver(count, retry=rxsinks.retry_with_breaker()),
        ).subscribe(see if outcomes else None)
    start = time.perf_counter()
    for event in events:
        subject.on_next(event)
    report = await subject.aclose()
    elapsed = time.perf_counter() - start
    assert report.flushed
    assert seen[0] == (delivered[0] if outcomes else 0)
    return elapsed, delivered[0]


async def run_baseline(events: list[Event], endpoints: int) -> tuple[float, int]:
    delivered = [0]
    threshold, backoff = 10, 1.0

    def count(_: object) -> None:
        delivered[0] += 1

    async def worker(queue: asyncio.Queue[Event | None]) -> None:
        failures, last = 0, 0.0
        while True:
            event = await queue.get()
            if event is None:
                return
            while True:
                if failures >= threshold:
                    await asyncio.sleep(max(0.0, last + backoff - time.monotonic()))
                try:
                    count(event)
                except Exception:
                    failures, last = failures + 1, time.monotonic()
                    continue
                failures = 0
                break

    queues: list[asyncio.Queue[Event | None]] = [asyncio.Queue() for _ in range(endpoints)]
    tasks = [asyncio.create_task(worker(q)) for q in queues]
    start = time.perf_counter()
    for event in events:
        if event.action in IGNORED_ACTIONS:
            continue
        for q in queues:
            q.put_nowait(event)
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return elapsed, delivered[0]


async def measure(events: list[Event], endpoints: int, rounds: int) -> dict[str, float]:
    expected = sum(1 for e in events if e.action not in IGNORED_ACTIONS) * endpoints
    best_rx = best_base = best_out = float("inf")
    for _ in range(rounds):
        # alternate the order so neither side always runs on a warmer (or hotter) machine
        elapsed, delivered = await run_baseline(events, endpoints)
        assert delivered == expected, (delivered, expected)
        best_base = min(best_base, elapsed)
        elapsed, delivered = await run_rxsinks(events, endpoints)
        assert delivered == expected, (delivered, expected)
        best_rx = min(best_rx, elapsed)
        elapsed, delivered = await run_rxsinks(events, endpoints, outcomes=True)
        assert delivered == expected, (delivered, expected)
        best_out = min(best_out, elapsed)
    return {
        "rxsinks_events_per_s": len(events) / best_rx,
        "baseline_events_per_s": len(events) / best_base,
        "rxsinks_deliveries_per_s": expected / best_rx,
        "ratio": best_base / best_rx,
        "rxsinks_outcomes_events_per_s": len(events) / best_out,
        "ratio_outcomes": best_base / best_out,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    one = await measure(events, 1, args.rounds)
    ten = await measure(events, 10, args.rounds)
    print(
        f"1 endpoint:   rxsinks {one['rxsinks_events_per_s']:,.0f} ev/s, "
        f"baseline {one['baseline_events_per_s']:,.0f} ev/s, ratio {one['ratio']:.2f}"
    )
    print(
        f"10 endpoints: rxsinks {ten['rxsinks_events_per_s']:,.0f} ev/s "
        f"({ten['rxsinks_deliveries_per_s']:,.0f} deliveries/s), "
        f"baseline {ten['baseline_events_per_s']:,.0f} ev/s, ratio {ten['ratio']:.2f}"
    )
    result = {
        "benchmark": "inprocess",
        "events": args.events,
        "rxsinks_events_per_s": round(ten["rxsinks_events_per_s"]),
        "baseline_events_per_s": round(ten["baseline_events_per_s"]),
        "ratio": round(ten["ratio"], 3),
        "rxsinks_outcomes_events_per_s": round(ten["rxsinks_outcomes_events_per_s"]),
        "ratio_outcomes": round(ten["ratio_outcomes"], 3),
        "rxsinks_deliveries_per_s_10": round(ten["rxsinks_deliveries_per_s"]),
        "rxsinks_events_per_s_1": round(one["rxsinks_events_per_s"]),
        "baseline_events_per_s_1": round(one["baseline_events_per_s"]),
        "ratio_1": round(one["ratio"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
