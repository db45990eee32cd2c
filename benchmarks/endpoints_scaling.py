"""The store's cost in the number of endpoints, and the disk it gives back.

1. **Scaling.** `rxsinks serve` with ``--endpoints`` endpoints (one receiver process, one URL path
   per endpoint, delivering up to ``--per-post`` events per POST), offered ``--rate`` events/s in
   POSTs of ``--post`` events for ``--seconds`` seconds, once with the SQLite store and once with
   the memory store. The relay's CPU time (``/proc/<pid>/stat``: user + system) over the run and
   the drain after it, divided by the event-deliveries made (events x endpoints), is its cost per
   event-delivery. It *keeps up* when the ingest took the offer at its pace (the POSTs took at
   most 10% longer than ``--seconds``: a relay too busy to answer slows the offer down, which is
   falling behind too) and every event reached every endpoint within ``--tail`` seconds after.
2. **Disk given back.** An endpoint that is down collects a backlog of ``--backlog`` events
   (posted in large POSTs), then its receiver comes up and the backlog drains; once the relay has
   compacted the store (every 30 s) and its checkpoints caught up, the size of its write-ahead
   log (``rxsinks.db-wal``) and of the database is read: the files are polled until they stop
   shrinking (two compaction rounds at most).

3. **Falling behind** (with ``--behind-rate R``): the SQLite relay is offered ``R`` events/s in
   POSTs of 200 for ``--seconds`` seconds, more than it can deliver to ``--endpoints``
   endpoints, so its backlog grows far past each endpoint's in-memory window; the
   event-deliveries per second are sampled every 3 s until the backlog is drained. A relay
   that degrades gracefully keeps its rate as the lag grows: ``behind_rate_min``,
   ``behind_rate_mean`` and ``behind_rate_max`` (event-deliveries/s over the samples taken
   while behind), ``behind_peak_lag`` (event-deliveries not yet made, at most) and
   ``behind_cpu_us_per_delivery``.

The scaling phase runs ``--rounds`` times per store, the two stores taking turns (a single
round moves by a third on a shared machine); each store's median round counts, and keeping up
means keeping up in every round.

Last line: one JSON object with ``sqlite_keeps_up_<E>``, ``memory_keeps_up_<E>``,
``sqlite_cpu_us_per_delivery_<E>``, ``memory_cpu_us_per_delivery_<E>`` (medians),
``sqlite_vs_memory_cpu_<E>`` (E = the endpoint count; the ratio of the medians),
``sqlite_vs_memory_cpu_rounds_<E>`` (each round's ratio), ``sqlite_offered_seconds_<E>`` (how
long the offer took, at most), ``wal_bytes_after_drain``, ``db_bytes_after_drain``, the
backlog's size at its peak and ``db_bytes_per_pending_event`` (the database and its log at the
peak, per event).

Usage: ``python benchmarks/endpoints_scaling.py [--endpoints 300] [--rate 200] [--seconds 20]
[--rounds 3] [--backlog 1000000] [--behind-rate 800]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _relay_process import post_envelopes, serve
from _support import counts, machine, receiver

import rxsinks

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def make_events(count: int) -> list[rxsinks.Event]:
    return [
        rxsinks.Event.new("push", target={"repository": f"scale/app{i % 50}", "tag": f"t{i}"})
        for i in range(count)
    ]


async def offer(url: str, events: list[rxsinks.Event], per_post: int, rate: float) -> float:
    """POST ``events`` in envelopes of ``per_post`` at ``rate`` events/s; seconds taken."""
    start = time.monotonic()
    for index in range(0, len(events), per_post):
        due = start + index / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await post_envelopes(url, events[index : index + per_post], per_post, 1)
    return time.monotonic() - start


def endpoint_hooks(base: str, endpoints: int, per_post: int) -> list[dict[str, Any]]:
    """``endpoints`` endpoints ``e0``.., each its own path on the receiver at ``base``."""
    return [
        {
            "name": f"e{index}",
            "url": f"{base}/events/e{index}",
            "batch": {"maxevents": per_post, "maxdelay": "250ms"},
        }
        for index in range(endpoints)
    ]


async def scaling_run(
    directory: Path, store: dict[str, Any], endpoints: int, args: argparse.Namespace, round_: int
) -> dict[str, float | bool]:
    label = store.get("kind", "sqlite")
    work = directory / f"scale-{label}-{endpoints}-{round_}"
    work.mkdir()
    if label != "memory":
        store = {**store, "path": str(work / "rxsinks.db")}
    else:
        store = {**store, "maxevents": 0, "maxsize": "1GiB"}
    events = make_events(int(args.rate * args.seconds))
    expected = len(events) * endpoints
    with receiver() as base:
        hooks = endpoint_hooks(base, endpoints, args.per_post)
        async with serve(store, hooks, work) as (url, pid):
            before = cpu_seconds(pid)
            offered_for = await offer(url, events, args.post, args.rate)
            deadline = time.monotonic() + args.tail
            while counts(base)["events"] < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            delivered = counts(base)["events"]
            keeps_up = delivered >= expected and offered_for <= args.seconds * 1.1
            # the rest drains (outside the keeping-up window) so CPU covers every delivery
            drain_deadline = time.monotonic() + 600
            while counts(base)["events"] < expected and time.monotonic() < drain_deadline:
                await asyncio.sleep(0.2)
            cpu = cpu_seconds(pid) - before
            final = counts(base)
            delivered = final["events"]
    print(
        f"{label}, {endpoints} endpoints: offered {len(events):,} events in {offered_for:.1f} s; "
        f"{'kept up' if keeps_up else 'fell behind'}; "
        f"{cpu * 1e6 / max(delivered, 1):.1f} us CPU per event-delivery; "
        f"{delivered / max(final['requests'], 1):.1f} events per delivery POST",
        flush=True,
    )
    return {
        "keeps_up": keeps_up,
        "cpu_us_per_delivery": cpu * 1e6 / max(delivered, 1),
        "offered_seconds": offered_for,
    }


async def behind_run(
    directory: Path, endpoints: int, rate: float, args: argparse.Namespace
) -> dict[str, float]:
    """The SQLite relay offered more than it delivers: its delivery rate as the lag grows."""
    work = directory / "behind"
    work.mkdir()
    events = make_events(int(rate * args.seconds))
    expected = len(events) * endpoints
    with receiver() as base:
        hooks = endpoint_hooks(base, endpoints, args.per_post)
        async with serve({"path": str(work / "rxsinks.db")}, hooks, work) as (url, pid):
            offering = asyncio.ensure_future(offer(url, events, 200, rate))
            start = time.monotonic()
            cpu_start = cpu_seconds(pid)
            rates: list[float] = []
            lags: list[int] = []
            before = 0
            deadline = start + 600
            while before < expected and time.monotonic() < deadline:
                await asyncio.sleep(3)
                delivered = counts(base)["events"]
                # (what the offer's schedule has posted by now: all of it once it is over)
                elapsed = time.monotonic() - start
                offered = expected
                if not offering.done():
                    offered = min(expected, int(expected * elapsed / args.seconds))
                lag = offered - delivered
                if lag > 0 and delivered < expected:
                    rates.append((delivered - before) / 3)
                    lags.append(lag)
                before = delivered
            cpu = cpu_seconds(pid) - cpu_start
            await offering
    print(
        f"behind, {endpoints} endpoints at {rate:.0f} events/s: lag up to {max(lags, default=0):,}"
        f" event-deliveries, {min(rates, default=0):,.0f} to {max(rates, default=0):,.0f} per s",
        flush=True,
    )
    return {
        "behind_rate_min": round(min(rates, default=0)),
        "behind_rate_mean": round(sum(rates) / max(len(rates), 1)),
        "behind_rate_max": round(max(rates, default=0)),
        "behind_peak_lag": max(lags, default=0),
        "behind_cpu_us_per_delivery": round(cpu * 1e6 / max(before, 1), 2),
    }


def files_bytes(db: Path, wal: Path) -> tuple[int, int]:
    """The sizes of the database and of its write-ahead log (0 if there is none)."""
    return db.stat().st_size, wal.stat().st_size if wal.exists() else 0


async def disk_run(directory: Path, backlog: int) -> dict[str, float]:
    """A backlog of ``backlog`` events for a down endpoint, drained; the files' sizes after."""
    from _relay_process import free_port

    work = directory / "disk"
    work.mkdir()
    db = work / "rxsinks.db"
    port = free_port()
    hooks = [
        {
            "name": "down",
            "url": f"http://127.0.0.1:{port}/events",
            "batch": {"maxevents": 100},
            "threshold": 1,
            "backoff": "1s",
        }
    ]
    events = make_events(10_000)
    peak_db = peak_wal = 0
    async with serve({"path": str(db)}, hooks, work) as (url, _):
        for _ in range(backlog // len(events)):
            await post_envelopes(url, events, 1000, 4)
        wal = Path(f"{db}-wal")
        peak_db = db.stat().st_size
        peak_wal = wal.stat().st_size if wal.exists() else 0
        print(f"backlog of {backlog:,} events: db {peak_db:,} B, wal {peak_wal:,} B", flush=True)
        with receiver("--port", str(port)) as base:
            deadline = time.monotonic() + 1200
            while counts(base)["events"] < backlog and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            if counts(base)["events"] < backlog:
                raise RuntimeError("the backlog did not drain")
            # compaction runs every 30 s, then checkpoints copy the log back and truncate it:
            # wait until the files stop shrinking (a round with no change), two rounds at most
            sizes = files_bytes(db, wal)
            deadline = time.monotonic() + 65
            still_since = time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - still_since < 35:
                await asyncio.sleep(1)
                now = files_bytes(db, wal)
                if now != sizes:
                    sizes, still_since = now, time.monotonic()
            db_after, wal_after = sizes
    print(f"drained: db {db_after:,} B, wal {wal_after:,} B", flush=True)
    return {
        "backlog_events": backlog,
        "db_bytes_per_pending_event": round((peak_db + peak_wal) / backlog, 1),
        "db_bytes_at_peak": peak_db,
        "wal_bytes_at_peak": peak_wal,
        "db_bytes_after_drain": db_after,
        "wal_bytes_after_drain": wal_after,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=300)
    parser.add_argument("--rate", type=float, default=200.0, help="events offered per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--post", type=int, default=10, help="events per ingest POST")
    parser.add_argument("--per-post", type=int, default=50, help="events per delivery POST")
    parser.add_argument("--tail", type=float, default=5.0, help="seconds to catch up after")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="scaling rounds per store, SQLite and memory alternating; the median counts",
    )
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument(
        "--behind-rate", type=float, default=0.0, help="events/s for the falling-behind phase"
    )
    args = parser.parse_args()
    figures: dict[str, Any] = {"benchmark": "endpoints_scaling", "endpoints": args.endpoints}
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        # the machine is shared: a round alone moves by a third, so the stores take turns and
        # each one's median round counts
        runs: dict[str, list[dict[str, float | bool]]] = {"sqlite": [], "memory": []}
        for round_ in range(max(args.rounds, 1)):
            for kind, store in (("sqlite", {}), ("memory", {"kind": "memory"})):
                runs[kind].append(await scaling_run(directory, store, args.endpoints, args, round_))
        n = args.endpoints
        cpu: dict[str, float] = {}
        for kind, rounds in runs.items():
            cpu[kind] = statistics.median(float(r["cpu_us_per_delivery"]) for r in rounds)
            figures[f"{kind}_keeps_up_{n}"] = all(bool(r["keeps_up"]) for r in rounds)
            figures[f"{kind}_cpu_us_per_delivery_{n}"] = round(cpu[kind], 2)
            figures[f"{kind}_offered_seconds_{n}"] = round(
                max(float(r["offered_seconds"]) for r in rounds), 1
            )
        figures[f"sqlite_vs_memory_cpu_{n}"] = round(cpu["sqlite"] / cpu["memory"], 3)
        figures[f"sqlite_vs_memory_cpu_rounds_{n}"] = [
            round(float(lite["cpu_us_per_delivery"]) / float(mem["cpu_us_per_delivery"]), 3)
            for lite, mem in zip(runs["sqlite"], runs["memory"], strict=True)
        ]
        if args.backlog:
            figures.update(await disk_run(directory, args.backlog))
        if args.behind_rate:
            figures.update(await behind_run(directory, n, args.behind_rate, args))
    figures["machine"] = machine()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
