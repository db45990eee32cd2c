"""A durable endpoint in a process of its own, for the crash tests (tests/test_durability.py).

``python -m tests.durable_child --store sqlite:PATH|redis:URL --url RECEIVER [--concurrency N]
[--window W] [--block-size B]`` opens the store (SQLite with the relay's exclusive lock; Redis as
a relay on Redis reads it, every event from the store), and delivers the endpoint ``hook``'s
backlog to the receiver with the library's delivery stage: ``deliver(WebhookSink(url).deliver,
queue=DurableQueue(store, "hook", ...), concurrency=N, key=<the block's repository>)``, the
registry's retry and breaker. It prints ``ready`` once delivering, and runs until it is killed.

This is what ``rxsinks serve`` runs for an endpoint with ``concurrency: N`` (the repository as
the key), without the ingest: the tests fill the store before they start it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Hashable, Sequence

from reactivex.subject import Subject

from rxsinks import DurableQueue, Event, WebhookOptions, WebhookSink, deliver, retry_with_breaker
from rxsinks._store.protocol import Store
from rxsinks._store.redis import RedisStore
from rxsinks._store.sqlite import SQLiteStore


def repository(block: Sequence[Event]) -> Hashable:
    return block[0].target.repository


async def main(arguments: argparse.Namespace) -> None:
    kind, _, where = arguments.store.partition(":")
    store: Store = SQLiteStore(where, exclusive=True) if kind == "sqlite" else RedisStore(where)
    await store.open()
    queue = DurableQueue(
        store,
        "hook",
        block_size=arguments.block_size,
        window=arguments.window,
        poll_interval=0.05 if kind == "redis" else None,
    )
    # a long timeout: a request the receiver holds stays in flight until the kill
    sink = WebhookSink(arguments.url, WebhookOptions(timeout=60.0), name="hook")
    source: Subject[tuple[int, Event]] = Subject()
    source.pipe(
        deliver(
            sink.deliver,
            queue=queue,
            concurrency=arguments.concurrency,
            key=repository,
            retry=retry_with_breaker(threshold=10, backoff=0.05),
            endpoint="hook",
        )
    ).subscribe()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
