"""Hardening against hostile clients, receivers and files (issue 12), with real parts in-process.

Each test reproduces one attack against a real relay (``Relay`` with its ingest on 127.0.0.1),
a real webhook receiver (``aiohttp.web``) or a real SQLite store, and checks what must happen
instead. The attacks that need a whole ``rxsinks serve`` process are in
``test_hardening_serve.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from tenacity.stop import stop_after_attempt

import rxsinks
from rxsinks._event import MEDIA_TYPE_V1, Event
from rxsinks._exceptions import (
    ConfigError,
    StoreError,
    WebhookStatusError,
)
from rxsinks._http.signing import message_id
from rxsinks._http.sink import MAX_RETRY_AFTER, WebhookSink, parse_retry_after
from rxsinks._options import TLS, WebhookOptions
from rxsinks._redact import redact_text, redact_url
from rxsinks._service.config import IngestConfig, exposure_problems, parse_config
from rxsinks._service.relay import Relay
from rxsinks._store.sqlite import SQLiteStore
from tests.conftest import MakeReceiver, Receiver
from tests.endpoint_fixtures import StartHook, eventually, start_hook

__all__ = ["start_hook"]  # the fixture, re-exported for pytest

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": MEDIA_TYPE_V1}

MakeRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(tmp_path: Path) -> AsyncIterator[MakeRelay]:
    """Start relays on 127.0.0.1:0: ``await make_relay(endpoints, ingest={...}, store={...})``."""
    relays: list[Relay] = []

    async def make(
        *endpoints: dict[str, Any],
        ingest: dict[str, Any] | None = None,
        store: dict[str, Any] | None = None,
    ) -> Relay:
        config = parse_config(
            {
                "ingest": {"addr": "127.0.0.1:0", "grace": "1s", **(ingest or {})},
                "store": store if store is not None else {"path": str(tmp_path / "relay.db")},
                "notifications": {"endpoints": list(endpoints)},
            }
        )
        relay = Relay(config)
        await relay.start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.stop(0)


class Switch:
    """A receiver whose answer the test switches: ``status`` for every request; the ids of the
    events it accepted (2xx) in ``received``."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        events = (await request.json())["events"]
        if self.status < 300:
            self.received.extend(event.get("id", "") for event in events)
        return web.Response(status=self.status)


@pytest.fixture
async def switch(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Switch:
    target = Switch()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    server = await aiohttp_server(app)
    target.url = str(server.make_url("/hook"))
    return target


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(relay: Relay) -> str:
    return relay.url.removesuffix("/events")


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


# --------------------------------------------------------------------------- 1. poison event ids


@pytest.mark.parametrize(
    ("event_id", "problem"),
    [
        ("evil\r\nX: y", "control or separator characters"),
        ("nul\x00inside", "control or separator characters"),
        ("x" * 20_000, "20000 characters long; at most 255"),
        (12345, "must be a string"),
    ],
)
async def test_an_event_id_that_cannot_be_a_header_is_refused_at_the_ingest(
    make_relay: MakeRelay,
    start_hook: StartHook,
    client: aiohttp.ClientSession,
    event_id: object,
    problem: str,
) -> None:
    hook = await start_hook()
    relay = await make_relay({"name": "signed", "url": hook.url, "secret": SECRET})
    body = envelope({"id": event_id, "action": "push"})
    async with client.post(relay.url, data=body, headers=JSON) as answer:
        assert answer.status == 400
        assert problem in (await answer.json())["error"]
        assert "events[0].id" in (await answer.json())["error"]
    # the next event goes through: nothing of the refused request was stored
    async with client.post(relay.url, data=envelope({"id": "ok-1"}), headers=JSON) as answer:
        assert answer.status == 200
    await eventually(lambda: hook.delivered == ["ok-1"], "the good event")


async def test_a_stored_poison_event_does_not_block_a_signed_endpoint(
    tmp_path: Path, make_relay: MakeRelay, start_hook: StartHook
) -> None:
    # events an older version accepted and stored: one whose id held a line break first
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    poison = Event.from_dict({"id": "evil\r\nX: y", "action": "push"})
    huge = Event.from_dict({"id": "h" * 20_000, "action": "push"})
    good = [Event.from_dict({"id": f"good-{i}", "action": "push"}) for i in range(3)]
    await store.append([poison, huge, *good], [["signed"]] * 5)
    await store.close()

    hook = await start_hook(secret=SECRET)  # verifies every signature (standardwebhooks)
    await make_relay(
        {"name": "signed", "url": hook.url, "secret": SECRET}, store={"path": str(path)}
    )
    # before: aiohttp refused the header, the failure was retried for ever, and every later
    # event stayed pending, across restarts
    await eventually(lambda: len(hook.delivered) == 5, "all five events, the poison ones too")
    assert hook.bad_signatures == []
    assert hook.delivered[2:] == [event.id for event in good]
    ids = [hit.headers["webhook-id"] for hit in hook.hits]
    assert ids[0] == message_id([poison.id]) and ids[0].startswith("evt_")
    assert ids[1].startswith("evt_") and len(ids[1]) == 36
    assert ids[2:] == ["good-0", "good-1", "good-2"]


async def test_a_single_attempt_with_a_poison_id_is_sent_with_a_hashed_webhook_id(
    start_hook: StartHook,
) -> None:
    hook = await start_hook(secret=SECRET)
    sink = WebhookSink(hook.url, WebhookOptions(secret=SECRET))
    try:
        attempt = await sink.send([Event.from_dict({"id": "a\nb", "action": "push"})])
    finally:
        await sink.aclose()
    assert attempt.ok and hook.bad_signatures == []
    assert hook.hits[0].headers["webhook-id"] == message_id(["a\nb"])


def test_message_ids_are_always_safe_header_values() -> None:
    for unsafe in ("a\r\nb", "nul\x00", "x" * 256, "caf\u00e9", "has space", "\u2028"):
        derived = message_id([unsafe])
        assert derived.startswith("evt_") and derived.isascii() and derived.isprintable()
        assert derived == message_id([unsafe])  # the same on every retry
    for safe in ("45e1b4e6-94b6-4d12-8a1a-8bd0a0e1b5f1", "x" * 255, "msg_p5jXN8AQ"):
        assert message_id([safe]) == safe


# --------------------------------------------------------------------------- 2. no open relay


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.0.2.1"])
def test_listening_beyond_loopback_without_a_token_is_a_problem(host: str) -> None:
    (problem,) = exposure_problems(IngestConfig(host=host, port=15059))
    assert problem.path == "ingest.addr"
    assert "without ingest.token" in problem.detail and "insecure: true" in problem.detail


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert exposure_problems(IngestConfig(host=host, port=15059)) == []


def test_a_token_or_insecure_allows_every_interface() -> None:
    assert exposure_problems(IngestConfig(host="", token="t")) == []
    assert exposure_problems(IngestConfig(host="", insecure=True)) == []


async def test_a_relay_refuses_to_start_open_beyond_loopback() -> None:
    relay = Relay(parse_config({"ingest": {"addr": ":0"}, "store": {"kind": "memory"}}))
    with pytest.raises(ConfigError, match=r"beyond loopback, without ingest\.token"):
        await relay.start()
    assert not relay.accepting


async def test_insecure_runs_open_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: the check passes, the WARNING
    # is logged, and the bind fails without anything ever listening
    config = parse_config(
        {"ingest": {"addr": "192.0.2.1:0", "insecure": True}, "store": {"kind": "memory"}}
    )
    relay = Relay(config)
    with caplog.at_level(logging.WARNING, logger="rxsinks.relay"), pytest.raises(OSError):
        await relay.start()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("WITHOUT a token" in message for message in warnings)


async def test_the_real_bound_addresses_are_logged(
    make_relay: MakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rxsinks.relay"):
        relay = await make_relay(store={"kind": "memory"})
    _, port = relay.address
    line = next(r.getMessage() for r in caplog.records if "listening on" in r.getMessage())
    assert f"listening on 127.0.0.1:{port} " in line and ":0 " not in line


async def test_admin_routes_need_the_token_and_a_json_body(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    relay = await make_relay(
        {
            "name": "hooks",
            "url": receiver.url(status=422),
            "permanentstatuses": [422],
        },
        ingest={"token": TOKEN},
    )
    async with client.post(relay.url, data=envelope({"id": "dl-1"}), headers=JSON | AUTH) as a:
        assert a.status == 200
    await eventually(lambda: relay.endpoints[0].metrics().dead_letters == 1, "the dead letter")
    root = base(relay)
    async with client.get(f"{root}/dead-letters") as answer:
        assert answer.status == 401  # payloads are not for anyone
    async with client.get(f"{root}/dead-letters", headers=AUTH) as answer:
        assert answer.status == 200
        assert [row["event"]["id"] for row in (await answer.json())["dead_letters"]] == ["dl-1"]
    # what a cross-site HTML form can send: no token, a form body; and even with the token, a
    # form's content types are refused
    async with client.post(f"{root}/dead-letters/replay", data={"endpoint": "hooks"}) as answer:
        assert answer.status == 401
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = dict(AUTH)
        if content_type:
            headers["Content-Type"] = content_type
        async with client.post(f"{root}/dead-letters/replay", data=b"", headers=headers) as answer:
            assert answer.status == 415, content_type
            assert "JSON body" in (await answer.json())["error"]
    async with client.post(
        f"{root}/dead-letters/replay", json={"endpoint": "hooks"}, headers=AUTH
    ) as answer:
        assert answer.status == 200 and await answer.json() == {"replayed": 1}
    async with client.post(
        f"{root}/dead-letters/replay", json={"endpoint": ["x"]}, headers=AUTH
    ) as answer:
        assert answer.status == 400


async def test_without_a_token_the_admin_routes_are_closed(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url()})
    root = base(relay)
    async with client.get(f"{root}/dead-letters") as answer:
        assert answer.status == 403
        assert "need ingest.token" in (await answer.json())["error"]
    async with client.post(f"{root}/dead-letters/replay", json={}) as answer:
        assert answer.status == 403
    # the rest stays open on loopback without a token
    for path in ("/healthz", "/metrics", "/debug/vars"):
        async with client.get(root + path) as answer:
            assert answer.status == 200, path


@pytest.mark.parametrize("open_metrics", [False, True])
async def test_metrics_and_debug_vars_need_the_token_unless_opened(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession, open_metrics: bool
) -> None:
    relay = await make_relay(
        {"name": "hooks", "url": receiver.url()},
        ingest={"token": TOKEN, "open_metrics": open_metrics},
    )
    root = base(relay)
    for path in ("/metrics", "/debug/vars"):
        async with client.get(root + path) as answer:
            assert answer.status == (200 if open_metrics else 401), path
        async with client.get(root + path, headers=AUTH) as answer:
            assert answer.status == 200, path
    async with client.get(f"{root}/healthz") as answer:
        assert answer.status == 200  # probes never need the token


# --------------------------------------------------------------------------- 3. redaction


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@h.example/a?api_key=k&x=1#f", "https://***@h.example/a?api_key=***&x=***#***"),
        ("https://TOKEN@h.example/hook", "https://***@h.example/hook"),
        ("redis://:PASS@10.0.0.1:6379/0", "redis://***@10.0.0.1:6379/0"),
        ("redis://h:6379/0?password=PASS", "redis://h:6379/0?password=***"),
        ("https://h:notaport/x?TOKEN", "https://h:notaport/x?***"),
        ("redis//:PASS@host", "***@host"),
        ("http://127.0.0.1:5056/events", "http://127.0.0.1:5056/events"),
    ],
)  # fmt: skip
def test_redact_url_hides_user_info_and_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # redacting twice changes nothing


def test_redact_text_redacts_every_url_in_a_message() -> None:
    text = "POST 'https://u:PW@h/x?k=SECRET' failed; see http://h/ok and redis://:P2@r:1/0."
    redacted = redact_text(text)
    assert "PW" not in redacted and "SECRET" not in redacted and "P2" not in redacted
    assert "http://h/ok" in redacted and "'https://***@h/x?k=***'" in redacted


async def test_debug_vars_and_dead_letter_errors_hide_url_secrets(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    url = receiver.url(status=422, api_key="SECRET-KEY").replace("http://", "http://USERTOKEN@")
    relay = await make_relay(
        {"name": "hooks", "url": url, "permanentstatuses": [422]}, ingest={"token": TOKEN}
    )
    async with client.post(relay.url, data=envelope({"id": "e-1"}), headers=JSON | AUTH) as a:
        assert a.status == 200
    await eventually(lambda: relay.endpoints[0].metrics().dead_letters == 1, "the dead letter")
    root = base(relay)
    async with client.get(f"{root}/debug/vars", headers=AUTH) as answer:
        document = await answer.text()
    async with client.get(f"{root}/dead-letters", headers=AUTH) as answer:
        letters = await answer.text()
    assert "422" in letters  # the reason is there...
    for text in (document, letters, relay.endpoints[0].metrics().last_error):
        assert "SECRET-KEY" not in text and "USERTOKEN" not in text  # ...the secrets are not


async def test_the_cli_never_sends_the_token_through_an_environment_proxy(
    make_relay: MakeRelay,
    receiver: Receiver,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs} {request.headers.get('Authorization')}")
        return web.Response(status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    proxy_server = await aiohttp_server(app)
    relay = await make_relay({"name": "hooks", "url": receiver.url()}, ingest={"token": TOKEN})
    config = tmp_path / "cli.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": f"127.0.0.1:{relay.address[1]}", "token": TOKEN},
                "store": {"path": str(tmp_path / "relay.db")},
                "notifications": {"endpoints": [{"name": "hooks", "url": receiver.url()}]},
            }
        )
    )
    proxy_url = str(proxy_server.make_url("/"))
    env = {**os.environ, "http_proxy": proxy_url, "HTTP_PROXY": proxy_url, "NO_PROXY": ""}
    env.pop("no_proxy", None)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rxsinks", "dead-letters", "list", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert seen == []  # before: the health check and the token went to the proxy


# --------------------------------------------------------------------------- 6. memory bounds


def test_the_memory_store_is_bounded_by_default() -> None:
    store = parse_config({"store": {"kind": "memory"}}).store
    assert store.memory_max_events == 100_000
    assert store.memory_max_bytes == 64 * 1024 * 1024
    redacted = parse_config({"store": {"kind": "memory"}}).redacted()["store"]
    assert redacted["max_events"] == 100_000 and redacted["max_size"] == 64 * 1024 * 1024


@pytest.mark.parametrize("bound", [{"maxevents": 20}, {"maxsize": "8KiB"}])
async def test_a_full_memory_store_answers_503_with_retry_after(
    make_relay: MakeRelay, switch: Switch, client: aiohttp.ClientSession, bound: dict[str, Any]
) -> None:
    switch.status = 503  # down: nothing drains
    relay = await make_relay(
        {"name": "hooks", "url": switch.url, "threshold": 1, "backoff": "20ms"},
        store={"kind": "memory", **bound},
    )
    accepted = 0
    for i in range(200):  # bounded: far past either bound
        body = envelope({"id": f"m-{i}", "padding": "x" * 300})
        async with client.post(relay.url, data=body, headers=JSON) as answer:
            if answer.status != 200:
                assert answer.status == 503
                assert answer.headers["Retry-After"] == "5"
                assert "store.max" in (await answer.json())["error"]
                break
            accepted += 1
    assert 0 < accepted < 200
    async with client.get(f"{base(relay)}/healthz") as answer:
        assert answer.status == 200  # backpressure, not a failure
    switch.status = 200  # the receiver is back: the memory drains, the ingest accepts again
    await eventually(lambda: len(switch.received) == accepted, "the accepted events")
    async with client.post(relay.url, data=envelope({"id": "after"}), headers=JSON) as answer:
        assert answer.status == 200
    await eventually(lambda: len(switch.received) == accepted + 1, "the later event")
    assert switch.received == [f"m-{i}" for i in range(accepted)] + ["after"]


async def test_a_request_over_the_memory_bound_by_itself_is_413(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    relay = await make_relay(
        {"name": "hooks", "url": receiver.url()}, store={"kind": "memory", "maxevents": 5}
    )
    body = envelope(*({"id": f"b-{i}"} for i in range(6)))
    async with client.post(relay.url, data=body, headers=JSON) as answer:
        assert answer.status == 413
        assert "send fewer per request" in (await answer.json())["error"]


# --------------------------------------------------------------------------- 7, 15. bad bodies


async def test_a_bad_content_encoding_is_a_400_not_a_500(
    make_relay: MakeRelay,
    receiver: Receiver,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url()}, store={"kind": "memory"})
    with caplog.at_level(logging.DEBUG):
        for encoding in ("gzip", "deflate"):
            headers = JSON | {"Content-Encoding": encoding}
            async with client.post(relay.url, data=b"not compressed", headers=headers) as answer:
                assert answer.status == 400, encoding
                error = (await answer.json())["error"]
                assert "malformed request body" in error and encoding in error
        # an encoding aiohttp cannot decode at all is refused by its parser, still a 400
        headers = JSON | {"Content-Encoding": "br"}
        async with client.post(relay.url, data=b"not compressed", headers=headers) as answer:
            assert answer.status == 400
        # a valid compressed body still works
        headers = JSON | {"Content-Encoding": "gzip"}
        data = gzip.compress(envelope({"id": "gz"}))
        async with client.post(relay.url, data=data, headers=headers) as answer:
            assert answer.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    await eventually(lambda: [e.id for e in receiver.events] == ["gz"], "the gzip event")


async def test_aborted_uploads_log_one_debug_line_each(
    make_relay: MakeRelay, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url()}, store={"kind": "memory"})
    host, port = relay.address
    with caplog.at_level(logging.DEBUG):
        for _ in range(10):
            _, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"events": ['
            )
            await writer.drain()
            await asyncio.sleep(0.05)  # the handler is reading the body
            writer.transport.abort()
        await asyncio.sleep(0.2)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base(relay)}/healthz") as answer,
        ):
            assert answer.status == 200
    assert not [
        r for r in caplog.records if r.levelno >= logging.INFO and r.name != "rxsinks.relay"
    ]
    assert not [r for r in caplog.records if r.exc_info]
    # one DEBUG line per cut upload at most (none when the cut came before the handler read)
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) <= 10 and all(r.levelno == logging.DEBUG for r in lines)


# --------------------------------------------------------------------------- 8. Retry-After


@pytest.fixture
async def answering(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[..., Awaitable[str]]:
    """A receiver answering every POST with the given status, headers and body."""

    async def start(status: int, headers: dict[str, str], body: bytes = b"") -> str:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=status, headers=headers, body=body)

        app = web.Application()
        app.router.add_post("/hook", handle)
        server = await aiohttp_server(app)
        return str(server.make_url("/hook"))

    return start


@pytest.mark.parametrize("value", ["1" + "0" * 400, "1" * 5000, "99999999999999999999"])
async def test_a_huge_retry_after_is_capped_and_the_status_kept(
    answering: Callable[..., Awaitable[str]], value: str
) -> None:
    url = await answering(503, {"Retry-After": value})
    sink = WebhookSink(url, WebhookOptions(retry_after_cap=300.0))
    try:
        with pytest.raises(WebhookStatusError) as info:
            await sink.send([Event.new("push")])
    finally:
        await sink.aclose()
    assert info.value.status == 503 and info.value.retry_after == 300.0
    assert parse_retry_after(value) == MAX_RETRY_AFTER


async def test_a_huge_retry_after_counts_as_a_503_in_the_metrics(
    answering: Callable[..., Awaitable[str]],
) -> None:
    url = await answering(503, {"Retry-After": "1" + "0" * 400})
    subject = rxsinks.EventSubject()
    endpoint = rxsinks.Endpoint(
        "hooks", url, retry=rxsinks.retry_with_breaker(stop=stop_after_attempt(1))
    )
    subject.subscribe(endpoint)
    subject.on_next(Event.new("push"))
    await eventually(lambda: endpoint.metrics().dead_letters == 1, "the dead letter")
    metrics = endpoint.metrics()
    await endpoint.aclose(1)
    assert metrics.statuses == {"503 Service Unavailable": 1}
    assert metrics.failures == 1 and metrics.errors == 0


# --------------------------------------------------------------------------- 9. response bodies


async def test_a_compressed_answer_is_not_inflated(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KB, inflates to 64 MB
    asked: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        asked.append(request.headers.get("Accept-Encoding"))
        return web.Response(status=500, body=bomb, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    sink = WebhookSink(str(server.make_url("/hook")), WebhookOptions(timeout=10))
    tracemalloc.start()
    try:
        with pytest.raises(WebhookStatusError) as info:
            await sink.send([Event.new("push")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await sink.aclose()
    assert info.value.status == 500
    assert asked == ["identity"]
    assert peak < 16 * 1024 * 1024  # before: the 64 MB were inflated in memory


async def test_a_huge_answer_body_is_not_read_to_its_end(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    sent = 0
    finished = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"z" * 65536
        try:
            for _ in range(2048):  # 128 MiB, bounded
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            finished.set()
        return response

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    sink = WebhookSink(str(server.make_url("/hook")), WebhookOptions(timeout=30))
    try:
        attempt = await sink.send([Event.new("push")])
    finally:
        await sink.aclose()
    assert attempt.ok
    await asyncio.wait_for(finished.wait(), 30)
    assert sent < 64 * 1024 * 1024  # the sink stopped reading, the server could not finish


# --------------------------------------------------------------------------- 10, 14. store files


async def test_every_store_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, exclusive=True)
    await store.open()
    try:
        await store.append([Event.new("push")], [["a"]])
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-confirms")]
        files.append(Path(f"{path}.lock"))
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        await store.close()


async def test_world_readable_store_files_of_an_older_version_are_made_private(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    await store.append([Event.new("push")], [["a"]])
    await store.close()
    os.chmod(path, 0o644)
    again = SQLiteStore(path)
    await again.open()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for companion in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(companion.stat().st_mode) == 0o600
    finally:
        await again.close()


async def test_another_applications_database_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('alice')")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"app\.db.*something else \(tables: users\)"):
        await SQLiteStore(path).open()
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()  # its journal mode was not switched to WAL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert tables == {"users"}


async def test_a_store_lock_refuses_a_second_relay_but_not_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SQLiteStore(path, exclusive=True)
    await first.open()
    try:
        with pytest.raises(
            StoreError, match=rf"in use by another rxsinks relay \(pid {os.getpid()}"
        ):
            await SQLiteStore(path, exclusive=True).open()
        reader = SQLiteStore(path)  # the CLI, beside the relay
        await reader.open()
        assert await reader.dead_letters() == []
        await reader.close()
    finally:
        await first.close()
    second = SQLiteStore(path, exclusive=True)  # released with the first
    await second.open()
    await second.close()


# --------------------------------------------------------------------------- 11. orphans


async def test_an_endpoint_removed_from_the_configuration_does_not_pin_compaction(
    tmp_path: Path,
    make_relay: MakeRelay,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    shared = [Event.from_dict({"id": f"s-{i}"}) for i in range(3)]
    own = [Event.from_dict({"id": f"k-{i}"}) for i in range(5)]
    # the first events were routed to "old" too, an endpoint since removed (or renamed)
    await store.append(shared, [["old", "keep"]] * 3)
    await store.append(own, [["keep"]] * 5)
    await store.close()

    with caplog.at_level(logging.WARNING, logger="rxsinks.relay"):
        relay = await make_relay({"name": "keep", "url": receiver.url()}, store={"path": str(path)})
    warning = next(r.getMessage() for r in caplog.records if "'old'" in r.getMessage())
    assert "3 undelivered event(s)" in warning
    assert "rxsinks store drop-endpoint old" in warning and "move-endpoint old" in warning
    await eventually(lambda: len(receiver.events) == 8, "keep's events")
    # before: old's deliveries held MIN(seq) and nothing was ever compacted; the last confirm
    # may still be on its way to the store
    removed = 0
    for _ in range(100):
        removed += await relay.compact()
        if removed >= 5:
            break
        await asyncio.sleep(0.05)
    assert removed == 5
    # dropping old's backlog beside the running relay, with the CLI
    config = tmp_path / "cli.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": "127.0.0.1:1"},
                "store": {"path": str(path)},
                "notifications": {"endpoints": [{"name": "keep", "url": receiver.url()}]},
            }
        )
    )
    rxsinks_cli = [sys.executable, "-m", "rxsinks", "store"]
    listed = await asyncio.to_thread(
        subprocess.run,
        [*rxsinks_cli, "endpoints", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "old: 3 pending, 0 dead letter(s)  (not in the configuration)" in listed.stdout
    dropped = await asyncio.to_thread(
        subprocess.run,
        [*rxsinks_cli, "drop-endpoint", "old", "--yes", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped 3 pending event(s) and 0 dead letter(s)" in dropped.stdout
    assert await relay.compact() == 3
    refused = await asyncio.to_thread(
        subprocess.run,
        [*rxsinks_cli, "drop-endpoint", "keep", "--yes", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "is in the configuration" in refused.stderr


async def test_a_renamed_endpoint_gets_its_backlog_moved(
    tmp_path: Path, make_relay: MakeRelay, receiver: Receiver
) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    await store.append([Event.from_dict({"id": f"r-{i}"}) for i in range(4)], [["before"]] * 4)
    await store.close()
    config = tmp_path / "cli.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": "127.0.0.1:1"},
                "store": {"path": str(path)},
                "notifications": {"endpoints": [{"name": "after", "url": receiver.url()}]},
            }
        )
    )
    command = [sys.executable, "-m", "rxsinks", "store", "move-endpoint", "before", "after"]
    moved = await asyncio.to_thread(
        subprocess.run, [*command, "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert moved.returncode == 0, moved.stderr
    assert "moved 4 pending event(s)" in moved.stdout
    relay = await make_relay({"name": "after", "url": receiver.url()}, store={"path": str(path)})
    await eventually(lambda: len(receiver.events) == 4, "the moved backlog")
    assert [event.id for event in receiver.events] == [f"r-{i}" for i in range(4)]
    # with the relay running, the store is locked for a move
    again = await asyncio.to_thread(
        subprocess.run, [*command, "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "in use by another rxsinks relay" in again.stderr
    assert relay.accepting


# --------------------------------------------------------------------------- 12. disabled


async def test_an_endpoint_disabled_by_410_takes_no_new_events(
    tmp_path: Path,
    make_relay: MakeRelay,
    receiver: Receiver,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        relay = await make_relay({"name": "gone", "url": receiver.url(status=410)})
        (endpoint,) = relay.endpoints
        async with client.post(relay.url, data=envelope({"id": "first"}), headers=JSON) as a:
            assert a.status == 200
        await eventually(lambda: endpoint.disabled, "the endpoint to disable itself")
        for i in range(50):
            async with client.post(relay.url, data=envelope({"id": f"n-{i}"}), headers=JSON) as a:
                assert a.status == 200
    assert len(receiver.requests) == 1
    assert relay.store is not None
    with sqlite3.connect(tmp_path / "relay.db") as db:
        # the later events are routed to no endpoint: nothing to deliver for them
        routed = db.execute("SELECT COUNT(*) FROM events WHERE route != 0").fetchone()[0]
        dead = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    db.close()
    assert routed <= 1 and dead <= 1  # before: 50 more stored and dead-lettered
    metrics = endpoint.metrics()
    assert metrics.dropped == 50 and metrics.disabled
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(loud) == 1
    assert "410" in loud[0].getMessage() and "rxsinks dead-letters replay" in loud[0].getMessage()


async def test_a_disabled_endpoint_of_a_memory_relay_takes_no_new_events(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    relay = await make_relay(
        {"name": "gone", "url": receiver.url(status=410)}, store={"kind": "memory"}
    )
    (endpoint,) = relay.endpoints
    async with client.post(relay.url, data=envelope({"id": "first"}), headers=JSON) as a:
        assert a.status == 200
    await eventually(lambda: endpoint.disabled, "the endpoint to disable itself")
    for i in range(20):
        async with client.post(relay.url, data=envelope({"id": f"n-{i}"}), headers=JSON) as a:
            assert a.status == 200
    metrics = endpoint.metrics()
    assert metrics.dropped == 20 and metrics.events == 1 and metrics.dead_letters <= 1
    assert len(receiver.requests) == 1


# --------------------------------------------------------------------------- 13. downgrade


async def test_an_https_to_http_redirect_is_refused(
    make_receiver: MakeReceiver, tmp_path: Path
) -> None:
    import ssl

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cleartext = await make_receiver()
    secure = await make_receiver(ssl=context)
    url = secure.url(status=307, location=cleartext.url())
    sink = WebhookSink(url, WebhookOptions(tls=TLS(ca_file=str(ca_file)), secret=SECRET))
    try:
        with pytest.raises(WebhookStatusError) as info:
            await sink.send([Event.new("push")])
    finally:
        await sink.aclose()
    assert len(secure.requests) == 1
    assert cleartext.requests == []  # before: the body and its signature went in cleartext
    assert any("leaves https for http" in note for note in info.value.__notes__)


# --------------------------------------------------------------------------- 16. store health


async def test_healthz_says_when_the_store_cannot_write_and_recovers(
    tmp_path: Path, make_relay: MakeRelay, switch: Switch, client: aiohttp.ClientSession
) -> None:
    switch.status = 503  # nothing drains: the store fills up
    relay = await make_relay(
        {"name": "hooks", "url": switch.url, "threshold": 1, "backoff": "20ms"},
        store={"path": str(tmp_path / "full.db"), "maxsize": "256KiB"},
    )
    accepted = 0
    for i in range(400):  # bounded: 400 x 2 KB is far past 256 KiB
        body = envelope({"id": f"f-{i:04d}", "padding": "x" * 2000})
        async with client.post(relay.url, data=body, headers=JSON) as answer:
            if answer.status == 503:
                break
            assert answer.status == 200
            accepted += 1
    assert 0 < accepted < 400
    async with client.get(f"{base(relay)}/healthz") as answer:
        assert answer.status == 503  # before: 200 while every POST was refused
        assert (await answer.text()).startswith("store cannot write:")
    switch.status = 200  # the receiver is back: deliveries free room in the store
    await eventually(lambda: len(switch.received) >= accepted, "the accepted events")

    async def healthy() -> bool:
        async with client.get(f"{base(relay)}/healthz") as answer:
            return answer.status == 200

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await healthy():  # a test write is tried every few seconds
        assert loop.time() < deadline, "the store never became writable again"
        await asyncio.sleep(0.5)
