"""Ingest speed by store: events/s accepted by POST /events and delivered (memory, SQLite, Redis).

For each store, in the same run: `rxsinks serve` in its own process with one endpoint (blocks of
up to 100 events) pointing at a counting receiver in another process; ``--clients`` concurrent
clients POST registry envelopes of ``--per-post`` events (the registry posts one at a time). An
event counts as accepted when the ingest answered 200 (for durable stores: committed) and as
delivered when the receiver has it.

Last line: one JSON object with ``memory``, ``sqlite``, ``redis`` (each: ``accepted_per_s``,
``delivered_per_s``) and ``ratio_sqlite_vs_memory`` (accepted, SQLite / memory). The stores
take turns ``--rounds`` times (3 by default); each figure is the store's median round, and
``ratio_sqlite_vs_memory_rounds`` has each round's ratio.

Usage: ``python benchmarks/ingest.py [--events N] [--per-post K] [--clients C] [--rounds R]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _relay_process import post_envelopes, redis_server, serve
from _support import counts, machine, receiver, reset

import rxsinks


def make_events(count: int) -> list[rxsinks.Event]:
    template = rxsinks.sample_events()
    return [
        rxsinks.Event.from_dict({**template[i % len(template)].to_dict(), "id": f"ingest-{i}"})
        for i in range(count)
    ]


async def measure(
    store: dict[str, Any], base: str, events: list[rxsinks.Event], per_post: int, clients: int
) -> dict[str, float]:
    reset(base)
    with tempfile.TemporaryDirectory() as directory:
        if store.get("path") == "DB":
            store = {**store, "path": str(Path(directory) / "rxsinks.db")}
        endpoint = {"url": f"{base}/events", "batch": {"maxevents": 100, "maxdelay": "5ms"}}
        async with serve(store, endpoint, Path(directory)) as (url, _):
            start = time.perf_counter()
            accepted = await post_envelopes(url, events, per_post, clients)
            deadline = time.monotonic() + 120
            while counts(base)["events"] < len(events):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {counts(base)['events']} delivered")
                await asyncio.sleep(0.01)
            delivered = time.perf_counter() - start
    return {
        "accepted_per_s": round(len(events) / accepted),
        "delivered_per_s": round(len(events) / delivered),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--per-post", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="the stores take turns this many times; medians"
    )
    args = parser.parse_args()
    events = make_events(args.events)
    result: dict[str, Any] = {"benchmark": "ingest", "events": args.events,
                              "per_post": args.per_post, "clients": args.clients}  # fmt: skip
    # one run moves by a third on this shared machine: the stores take turns, medians count
    runs: dict[str, list[dict[str, float]]] = {"memory": [], "sqlite": [], "redis": []}
    with receiver() as base, redis_server() as redis_url:
        for _ in range(max(args.rounds, 1)):
            stores: dict[str, dict[str, Any]] = {
                "memory": {"kind": "memory"},
                "sqlite": {"path": "DB"},
            }
            if redis_url:
                stores["redis"] = {"url": redis_url}
            for kind, store in stores.items():
                runs[kind].append(await measure(store, base, events, args.per_post, args.clients))
    for kind, rounds in runs.items():
        result[kind] = (
            {
                figure: round(statistics.median(r[figure] for r in rounds))
                for figure in ("accepted_per_s", "delivered_per_s")
            }
            if rounds
            else None
        )
    result["rounds"] = len(runs["memory"])
    result["ratio_sqlite_vs_memory_rounds"] = [
        round(lite["accepted_per_s"] / mem["accepted_per_s"], 3)
        for lite, mem in zip(runs["sqlite"], runs["memory"], strict=True)
    ]
    for kind in ("memory", "sqlite", "redis"):
        figures = result[kind]
        if figures:
            print(f"{kind:7} accepted {figures['accepted_per_s']:>8,} ev/s, "
                  f"delivered {figures['delivered_per_s']:>8,} ev/s")  # fmt: skip
    result["ratio_sqlite_vs_memory"] = round(
        result["sqlite"]["accepted_per_s"] / result["memory"]["accepted_per_s"], 3
    )
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
