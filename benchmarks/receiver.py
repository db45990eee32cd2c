"""A counting webhook receiver for benchmarks, run in its own process.

``python benchmarks/receiver.py [--port P] [--record FILE] [--fail-first N] [--fail-status 503]
[--delay SECONDS]`` binds 127.0.0.1 on ``--port`` (default: a free port), prints ``PORT <n>`` on
stdout, then serves: ``POST /events`` (and ``POST /events/<name>``, one path per endpoint) counts
the events of each envelope (answering ``--fail-status`` to the first ``--fail-first`` requests,
and, with ``--delay``, answering each request that many seconds after it arrived: a slow
receiver), ``GET /count`` returns ``{"events": n, "requests": n, ...}``, ``POST /reset`` clears
the counts.

With ``--record FILE``, every counted request appends one line to FILE:
``{"received": <time.time()>, "path": "<name or ''>", "events": [...]}`` (the events exactly as
they arrived), so a benchmark can replay a sender's real events, time a drain, check the order
per repository, or compute per-event latency. The file is complete once the receiver has exited
(stdin closed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import IO

from aiohttp import web


def build_app(
    fail_first: int, fail_status: int, record: IO[str] | None = None, delay: float = 0.0
) -> web.Application:
    state = {"events": 0, "requests": 0, "failed": 0}

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        received = time.time()
        if delay:
            await asyncio.sleep(delay)
        if state["failed"] < fail_first:
            state["failed"] += 1
            return web.Response(status=fail_status)
        state["requests"] += 1
        envelope = json.loads(body)["events"]
        state["events"] += len(envelope)
        if record is not None:
            # re-serialised on one line: the registry indents its bodies over several lines
            path = request.match_info.get("name", "")
            line = {"received": received, "path": path, "events": envelope}
            record.write(json.dumps(line) + "\n")
        return web.Response(status=200)

    async def count(_: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(_: web.Request) -> web.Response:
        state.update(events=0, requests=0, failed=0)
        return web.json_response(state)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/events", events)
    app.router.add_post("/events/{name}", events)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--record", default=None, help="append each request's events to FILE")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    record = open(args.record, "a", encoding="utf-8") if args.record else None  # noqa: SIM115
    try:
        app = build_app(args.fail_first, args.fail_status, record, args.delay)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = runner.addresses[0][1]
        print(f"PORT {port}", flush=True)
        # serve until stdin closes (the parent died or is done)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await runner.cleanup()
    finally:
        if record is not None:
            record.close()


if __name__ == "__main__":
    asyncio.run(main())
