"""A real relay for the operator page's tests: three endpoints and their receivers on 127.0.0.1.

``healthy`` always answers 200; ``down`` answers 503 until :meth:`Target.recover` (its breaker
opens after 2 failures and tries again every second); ``dead`` answers 422, a permanent status
there, so each event is dead-lettered at once, until it is told to answer 200 (then a replay
delivers). Every secret of the configuration contains :data:`PLANTED`, so a test checks that
no page or API answer reveals one by looking for that word alone: the ingest token, a query
value, URL user info, an Authorization header, a secret header, a signing secret.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

import rxsinks
from rxsinks._service.config import parse_config
from rxsinks._service.relay import Relay

PLANTED = "PLANTED"
"""In every secret of the scenario's configuration, and nowhere else."""
TOKEN = "tok-PLANTED-ingest-1f3a9c"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"PLANTED-signing-secret-0123456").decode()
HOSTILE_REPOSITORY = '<img src=x onerror="document.title=1">'
"""A repository name a posting client chose: shown as text, never as HTML."""

AiohttpServer = Callable[..., Awaitable[TestServer]]


class Target:
    """A webhook receiver whose answer the test sets; records the ids it accepted."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[str] = []
        self.requests = 0
        self.url = ""

    def recover(self) -> None:
        """Answer 200 from now on."""
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        ids = [event["id"] for event in (await request.json())["events"]]
        self.requests += 1
        if self.status < 300:
            self.received.extend(ids)
        return web.Response(status=self.status)


async def start_target(aiohttp_server: AiohttpServer, status: int = 200) -> Target:
    target = Target(status)
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    server = await aiohttp_server(app)
    target.url = str(server.make_url("/hook"))
    return target


def scenario_config(
    healthy: str, down: str, dead: str, store: dict[str, Any], token: str | None = TOKEN
) -> rxsinks.RelayConfig:
    """The three endpoints, their secrets planted, on an ingest at a free loopback port."""
    ingest: dict[str, Any] = {"addr": "127.0.0.1:0", "grace": "1s"}
    if token is not None:
        ingest["token"] = token
    credentials = down.replace("http://", "http://PLANTED-user:PLANTED-pass@", 1)
    return parse_config(
        {
            "ingest": ingest,
            "store": store,
            "notifications": {
                "endpoints": [
                    {
                        "name": "healthy",
                        "url": healthy + "?api_key=PLANTED-query-7d2e&region=eu",
                        "headers": {
                            "Authorization": ["Bearer PLANTED-header-a41f"],
                            "X-Api-Key": ["PLANTED-xkey-3c9d"],
                            "X-Team": ["platform"],
                        },
                        "secretheaders": ["X-Api-Key"],
                        "secret": SIGNING_SECRET,
                    },
                    {"name": "down", "url": credentials, "threshold": 2, "backoff": "1s"},
                    {"name": "dead", "url": dead, "permanentstatuses": [422]},
                ]
            },
        },
        source="ui-test",
    )


class Scenario:
    """The relay and its three receivers, started; :meth:`stop` ends the relay."""

    def __init__(self, relay: Relay, healthy: Target, down: Target, dead: Target) -> None:
        self.relay = relay
        self.healthy = healthy
        self.down = down
        self.dead = dead
        self.base = relay.url.rsplit("/events", 1)[0]

    @classmethod
    async def start(
        cls,
        aiohttp_server: AiohttpServer,
        tmp_path: Path,
        *,
        token: str | None = TOKEN,
        store: dict[str, Any] | None = None,
    ) -> Scenario:
        healthy = await start_target(aiohttp_server)
        down = await start_target(aiohttp_server, 503)
        dead = await start_target(aiohttp_server, 422)
        config = scenario_config(
            healthy.url,
            down.url,
            dead.url,
            {"path": str(tmp_path / "ui.db")} if store is None else store,
            token,
        )
        relay = Relay(config)
        await relay.start()
        return cls(relay, healthy, down, dead)

    async def stop(self) -> None:
        await self.relay.stop(0)

    def events(self, count: int, prefix: str = "ev") -> list[rxsinks.Event]:
        """``count`` events; the first one's repository is :data:`HOSTILE_REPOSITORY`."""
        return [
            rxsinks.Event.new(
                "push",
                target={
                    "repository": HOSTILE_REPOSITORY if i == 0 else f"team/app{i}",
                    "tag": "v1",
                },
                id=f"{prefix}-{i:03d}",
            )
            for i in range(count)
        ]

    async def post(self, events: list[rxsinks.Event], token: str | None = TOKEN) -> int:
        headers = {"Content-Type": rxsinks.MEDIA_TYPE_V1}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.relay.url, data=rxsinks.encode_envelope(events), headers=headers
            ) as answer,
        ):
            await answer.read()
            return answer.status


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(page: str) -> str:
    """The CSRF token a page was served with (its ``data-csrf`` attribute)."""
    found = re.search(r'data-csrf="([^"]*)"', page)
    assert found is not None, "no data-csrf attribute in the page"
    return found.group(1)
