"""Receivers for the Endpoint and Prometheus tests: real aiohttp.web servers on 127.0.0.1.

A :class:`Hook` records every request with its arrival time on the loop's clock and answers from
a script (a status, or a status with headers), then 200. Imported by ``test_endpoint.py`` and
``test_prometheus.py``; the fixtures below are re-exported there (they are not in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

import rxsinks

Answer = int | tuple[int, Mapping[str, str]]
"""What a :class:`Hook` answers to one request: a status, or a status and headers."""


@dataclass(frozen=True)
class Hit:
    """One request as a :class:`Hook` saw it."""

    time: float
    """``loop.time()`` when the request's body had arrived."""
    ids: tuple[str, ...]
    """The ids of the events in the body, in order."""
    status: int
    """What the hook answered."""
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class Hook:
    """A webhook receiver: answers the scripted statuses in order, then ``default``.

    With ``secret``, every request's Standard Webhooks signature is checked with the reference
    ``standardwebhooks`` package; failures are kept in :attr:`bad_signatures` (and answered 401).
    """

    def __init__(self, *answers: Answer, default: int = 200, secret: str | None = None) -> None:
        self.script: deque[Answer] = deque(answers)
        self.default = default
        self.hits: list[Hit] = []
        self.bad_signatures: list[str] = []
        self.verifier = Webhook(secret) if secret is not None else None
        self.app = web.Application()
        self.app.router.add_post("/hook", self._handle)
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    @property
    def delivered(self) -> list[str]:
        """Ids of the events in requests answered 2xx, in arrival order."""
        return [event_id for hit in self.hits if 200 <= hit.status < 300 for event_id in hit.ids]

    @property
    def times(self) -> list[float]:
        return [hit.time for hit in self.hits]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = asyncio.get_running_loop().time()
        headers = dict(request.headers)
        ids = tuple(event["id"] for event in json.loads(body)["events"])
        answer = self.script.popleft() if self.script else self.default
        status, extra = (answer, {}) if isinstance(answer, int) else answer
        if self.verifier is not None:
            try:
                self.verifier.verify(body, headers)
            except WebhookVerificationError as exc:
                self.bad_signatures.append(str(exc))
                status, extra = 401, {}
        self.hits.append(Hit(arrived, ids, status, headers, body))
        return web.Response(status=status, headers=extra)


StartHook = Callable[..., Awaitable[Hook]]


@pytest.fixture
async def start_hook(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[StartHook]:
    """A factory of started hooks: ``hook = await start_hook(500, 500, secret=...)``."""

    async def start(*answers: Answer, default: int = 200, secret: str | None = None) -> Hook:
        hook = Hook(*answers, default=default, secret=secret)
        hook.server = await aiohttp_server(hook.app)
        return hook

    yield start


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: the port was bound, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def make_events(count: int, action: str = "push") -> list[rxsinks.Event]:
    """``count`` fresh events, ``r0``, ``r1``... as repositories."""
    return [
        rxsinks.Event.new(action, target={"repository": f"r{index}", "mediaType": "manifest"})
        for index in range(count)
    ]


def ids(events: list[rxsinks.Event]) -> list[str]:
    return [event.id for event in events]


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds; the timeout only bounds a broken run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)
