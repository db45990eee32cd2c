"""Shared test fixtures: real HTTP receivers on 127.0.0.1, never mocked sessions."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy, MultiMapping

from rxsinks._event import ENVELOPE_MEDIA_TYPES, Event, decode_envelope
from rxsinks._exceptions import EnvelopeError


@dataclass(frozen=True)
class Received:
    """One request as a :class:`Receiver` saw it (rejected ones included)."""

    method: str
    path: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    body: bytes
    connection: object
    """The server side of the connection it came on (one object per TCP connection)."""
    peercert: dict[str, object] | None
    """The client certificate presented over TLS (``None`` without one)."""


class Receiver:
    """A webhook receiver behaving like the registry's reference test server.

    It answers 405 unless the method is POST, 415 unless the content type is one of
    ``media_types``, 400 unless the body is a registry envelope. Otherwise it answers, in order of
    precedence: the next status queued with :meth:`answer_next`, else the query's ``status``
    (default 200). More query parameters: ``location`` and ``retry_after`` set those headers
    (``location=.`` redirects to the request's own URL), ``delay`` sleeps that many seconds
    first, ``hang=1`` waits for :attr:`release` (set when the fixture ends).

    Every request is kept in :attr:`requests` as it arrives; the events of accepted ones (2xx)
    in :attr:`events`.
    """

    def __init__(self, media_types: Iterable[str] = ENVELOPE_MEDIA_TYPES) -> None:
        self.media_types = frozenset(media_types)
        self.requests: list[Received] = []
        self.events: list[Event] = []
        self.release = asyncio.Event()
        self._script: deque[int] = deque()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server: TestServer | None = None

    @property
    def server(self) -> TestServer:
        """The running server."""
        assert self._server is not None, "the receiver is not started"
        return self._server

    def url(self, path: str = "/hook", **query: str | int | float) -> str:
        """An absolute URL of this receiver, e.g. ``url(status=503, retry_after=7)``."""
        return str(self.server.make_url(path).with_query(query))

    def answer_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order, whatever their query says."""
        self._script.extend(statuses)

    @property
    def connections(self) -> int:
        """How many distinct TCP connections requests arrived on."""
        return len({id(request.connection) for request in self.requests})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Received(
                method=request.method,
                path=request.path,
                query=request.query,
                headers=request.headers,
                body=body,
                connection=request.protocol,
                peercert=request.transport.get_extra_info("peercert")
                if request.transport is not None
                else None,
            )
        )
        status, headers = await self._answer(request, body)
        text = "" if status < 300 else f"rejected with {status}"
        return web.Response(status=status, headers=headers, text=text)

    async def _answer(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str]]:
        if request.method != "POST":
            return 405, {}
        if request.content_type not in self.media_types:
            return 415, {}
        try:
            events = decode_envelope(body)
        except EnvelopeError:
            return 400, {}
        query = request.query
        if "delay" in query:
            await asyncio.sleep(float(query["delay"]))
        if query.get("hang") == "1":
            await self.release.wait()
        status = self._script.popleft() if self._script else int(query.get("status", "200"))
        headers = {}
        if "location" in query:
            location = query["location"]
            headers["Location"] = str(request.rel_url) if location == "." else location
        if "retry_after" in query:
            headers["Retry-After"] = query["retry_after"]
        if 200 <= status < 300:
            self.events.extend(events)
        return status, headers


MakeReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def make_receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[MakeReceiver]:
    """A factory of started :class:`Receiver` servers: ``await make_receiver(ssl=ctx)``."""
    receivers: list[Receiver] = []

    async def make(
        *, ssl: ssl.SSLContext | None = None, media_types: Iterable[str] = ENVELOPE_MEDIA_TYPES
    ) -> Receiver:
        receiver = Receiver(media_types)
        receiver._server = await aiohttp_server(receiver.app, ssl=ssl)
        receivers.append(receiver)
        return receiver

    yield make
    for receiver in receivers:
        receiver.release.set()


@pytest.fixture
async def receiver(make_receiver: MakeReceiver) -> Receiver:
    """A started plain-HTTP :class:`Receiver` on 127.0.0.1."""
    return await make_receiver()


@pytest.fixture
async def closing_listener() -> AsyncIterator[str]:
    """URL of a TCP listener on 127.0.0.1 that accepts each connection and closes it at once."""

    async def close_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/hook"
    server.close()
    await server.wait_closed()
