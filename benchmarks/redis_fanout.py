"""The Redis store's cost per event as the number of endpoints grows.

A throwaway ``redis-server`` (``appendonly yes``, as a relay's Redis should be) takes
``--events`` registry ``push`` events, appended ``--batch`` per call of
:meth:`rxsinks.RedisStore.append`, each routed to all of ``--endpoints`` endpoints that are down
(nothing confirmed). Measured per layout:

* **commands per event**: the Redis commands executed (``INFO commandstats``: the scripts' own
  commands and the EVALSHA calls, INFO itself left out) divided by the events;
* **bytes per pending event**: ``used_memory`` after the appends minus before, per event;
* **appends/s**: events appended per second of wall clock, one client, one call at a time.

Side by side in the same run: the store with **1 endpoint** (the floor), and the **previous
layout** (a stream per endpoint, the event XADDed to each of them: the previous version's
append script, run as it was) with ``--old-events`` events, as it takes ``--endpoints`` times
the memory. Then, in the store with ``--endpoints`` endpoints, each endpoint confirms
everything (``--confirm`` seqs per call) and
:meth:`~rxsinks.RedisStore.compact` trims: the commands per event-delivery confirmed and the
stream's length after.

Last line: one JSON object with ``commands_per_event_<E>``, ``bytes_per_pending_event_<E>``,
``appends_per_s_<E>`` (E = the endpoint count, then 1), the same with ``old_`` in front for the
previous layout, ``confirm_commands_per_delivery_<E>`` and ``stream_entries_after_drain``.

Usage: ``python benchmarks/redis_fanout.py [--endpoints 300] [--events 20000] [--batch 10]
[--old-events 1000] [--confirm 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import redis.asyncio
from _relay_process import redis_server
from _support import machine

import rxsinks
from rxsinks._event import encode_event
from rxsinks._store.redis import RedisStore

# The previous version's append script (a stream per endpoint), unchanged.
# KEYS: seq, endpoints set, then one stream per distinct endpoint.
# ARGV: m, the time, the m endpoint names, then per event: body, k, k indexes into the streams.
OLD_APPEND = """
local m = tonumber(ARGV[1])
local now = ARGV[2]
if m > 0 then redis.call('SADD', KEYS[2], unpack(ARGV, 3, m + 2)) end
local pos = m + 3
local seqs = {}
while pos <= #ARGV do
  local body = ARGV[pos]
  local k = tonumber(ARGV[pos + 1])
  local seq = redis.call('INCR', KEYS[1])
  local id = string.format('%.0f', seq) .. '-0'
  for j = 1, k do
    redis.call('XADD', KEYS[2 + tonumber(ARGV[pos + 1 + j])], id, 'e', body, 't', now)
  end
  seqs[#seqs + 1] = seq
  pos = pos + 2 + k
end
return seqs
"""


def make_events(count: int) -> list[rxsinks.Event]:
    return [
        rxsinks.Event.new("push", target={"repository": f"fanout/app{i % 50}", "tag": f"t{i}"})
        for i in range(count)
    ]


async def commands(client: redis.asyncio.Redis) -> int:
    """Commands Redis executed so far, INFO itself left out."""
    stats: dict[str, Any] = await client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name.startswith("cmdstat_") and name != "cmdstat_info"
    )


async def memory(client: redis.asyncio.Redis) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


async def measure(
    client: redis.asyncio.Redis, append: Any, events: int, batch: int
) -> dict[str, float]:
    """Append ``events`` through ``append(batch)``; commands, bytes and rate per event."""
    await client.config_resetstat()
    mem_before, calls_before = await memory(client), await commands(client)
    start = time.perf_counter()
    for index in range(0, events, batch):
        await append(make_events(min(batch, events - index)))
    seconds = time.perf_counter() - start
    calls = await commands(client) - calls_before
    return {
        "commands_per_event": calls / events,
        "bytes_per_pending_event": (await memory(client) - mem_before) / events,
        "appends_per_s": events / seconds,
    }


async def new_layout(
    url: str, endpoints: int, events: int, batch: int, confirm: int
) -> dict[str, float]:
    """The store as it is: one stream entry per event, a cursor per endpoint."""
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    await client.flushall()
    store = RedisStore(url, timeout=60)
    await store.open()
    names = [f"ep{i:03d}" for i in range(endpoints)]
    seqs: list[int] = []

    async def append(chunk: list[rxsinks.Event]) -> None:
        seqs.extend(await store.append(chunk, [names] * len(chunk)))

    try:
        figures = await measure(client, append, events, batch)
        # every endpoint confirms everything, in blocks as a relay would
        before = await commands(client)
        for name in names:
            for index in range(0, len(seqs), confirm):
                await store.confirm(name, seqs[index : index + confirm])
        figures["confirm_commands_per_delivery"] = (await commands(client) - before) / (
            len(seqs) * endpoints
        )
        await store.compact()
        figures["stream_entries_after_drain"] = int(await client.xlen("rxsinks:events"))
        assert await store.pending() == 0
    finally:
        await store.close()
        await client.aclose()
    return figures


async def old_layout(url: str, endpoints: int, events: int, batch: int) -> dict[str, float]:
    """The previous layout: each event XADDed to each endpoint's own stream."""
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    await client.flushall()
    script = client.register_script(OLD_APPEND)
    names = [f"ep{i:03d}" for i in range(endpoints)]
    keys = ["old:seq", "old:endpoints", *(f"old:ep:{name}" for name in names)]
    targets = list(range(1, endpoints + 1))

    async def append(chunk: list[rxsinks.Event]) -> None:
        args: list[Any] = [endpoints, repr(time.time()), *names]
        for event in chunk:
            args += [encode_event(event), endpoints, *targets]
        await script(keys, args, client)

    try:
        return await measure(client, append, events, batch)
    finally:
        await client.flushall()
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=300)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10, help="events per append call")
    parser.add_argument("--old-events", type=int, default=1_000)
    parser.add_argument("--confirm", type=int, default=50, help="seqs per confirm call")
    args = parser.parse_args()
    n = args.endpoints
    figures: dict[str, Any] = {
        "benchmark": "redis_fanout",
        "endpoints": n,
        "events": args.events,
        "batch": args.batch,
        "event_bytes": len(encode_event(make_events(1)[0])),
    }
    with redis_server() as url:
        if url is None:
            print(
                json.dumps({"benchmark": "redis_fanout", "skipped": "redis-server not installed"})
            )
            return
        for endpoints in (n, 1):
            result = await new_layout(url, endpoints, args.events, args.batch, args.confirm)
            for key in ("commands_per_event", "bytes_per_pending_event", "appends_per_s"):
                figures[f"{key}_{endpoints}"] = round(result[key], 2)
            if endpoints == n:
                figures[f"confirm_commands_per_delivery_{n}"] = round(
                    result["confirm_commands_per_delivery"], 3
                )
                figures["stream_entries_after_drain"] = result["stream_entries_after_drain"]
        old = await old_layout(url, n, args.old_events, args.batch)
        for key, value in old.items():
            figures[f"old_{key}_{n}"] = round(value, 2)
    figures["machine"] = machine()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
