"""`rxsinks serve` as a real subprocess, and a receiver the test controls: for process tests."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

import rxsinks

DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A receiver whose answer is chosen per request: ``status(ids) -> int``."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.refused = 0
        self.status: Callable[[list[str]], int] = lambda ids: 200

    async def handle(self, request: web.Request) -> web.Response:
        ids = [event["id"] for event in (await request.json())["events"]]
        code = self.status(ids)
        if code < 300:
            self.received.extend(ids)
        else:
            self.refused += 1
        return web.Response(status=code)


class Serve:
    """`rxsinks serve` in a subprocess."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.port = yaml.safe_load(config.read_text())["ingest"]["addr"].rsplit(":", 1)[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rxsinks", "serve", "--config", str(self.config)],
                stdout=out,
                stderr=out,
            )
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                if self.proc.poll() is not None:
                    raise AssertionError(f"serve exited: {self.log.read_text()}")
                try:
                    async with session.get(f"{self.base}/healthz") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"serve did not become healthy: {self.log.read_text()}")

    @property
    def token(self) -> str | None:
        """The ingest token of the configuration as it is now (``None`` without one)."""
        token: str | None = yaml.safe_load(self.config.read_text())["ingest"].get("token")
        return token

    async def post(self, events: list[rxsinks.Event]) -> int:
        headers = {"Content-Type": rxsinks.MEDIA_TYPE_V1}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.base}/events", data=rxsinks.encode_envelope(events), headers=headers
            ) as answer,
        ):
            await answer.read()
            return answer.status

    async def signal(self, signum: int) -> int:
        """Send ``signum`` and wait for the exit code, keeping the test's loop (and so the
        receiver) running: a blocked receiver would answer the relay's last attempt late."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), DEADLINE)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)


def make_events(count: int, prefix: str) -> list[rxsinks.Event]:
    return [
        rxsinks.Event.new("push", target={"repository": f"r/{i % 3}"}, id=f"{prefix}-{i:05d}")
        for i in range(count)
    ]


async def until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def post_all(serve: Serve, events: list[rxsinks.Event], per_request: int = 25) -> None:
    for i in range(0, len(events), per_request):
        assert await serve.post(events[i : i + per_request]) == 200
