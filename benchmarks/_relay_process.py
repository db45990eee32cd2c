"""Run `rxsinks serve` (and, when needed, `redis-server`) as processes for the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

import rxsinks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port; None (and a message) if missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not installed (apt-get install redis-server): Redis skipped")
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def serve(
    store: dict[str, Any],
    endpoint: dict[str, Any] | list[dict[str, Any]],
    directory: Path,
) -> AsyncIterator[tuple[str, int]]:
    """`rxsinks serve` with one endpoint (named ``bench``) or a list of named ones; yields
    (ingest URL, pid)."""
    endpoints = [{"name": "bench", **endpoint}] if isinstance(endpoint, dict) else endpoint
    port = free_port()
    config = directory / f"rxsinks-{port}.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": f"127.0.0.1:{port}", "grace": "2s", "max_body": "64MiB"},
                "store": store,
                "log": {"level": "error"},
                "notifications": {"endpoints": endpoints},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rxsinks", "serve", "--config", str(config)],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/healthz") as answer:
                        if answer.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("rxsinks serve did not start")
        yield f"{base}/events", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def post_envelopes(
    url: str, events: list[rxsinks.Event], per_post: int, concurrency: int
) -> float:
    """POST the events in envelopes of ``per_post`` from ``concurrency`` clients; seconds taken."""
    bodies = [
        rxsinks.encode_envelope(events[i : i + per_post]) for i in range(0, len(events), per_post)
    ]
    headers = {"Content-Type": rxsinks.MEDIA_TYPE_V1}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"ingest answered {answer.status}")

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return time.perf_counter() - start
