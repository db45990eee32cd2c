"""The relay (rxsinks._service.relay): endpoints built from configuration, accept, start and
stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import tenacity
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from rxsinks._event import MEDIA_TYPE_V2, Event, decode_envelope
from rxsinks._exceptions import ConfigErrors, SinkClosedError
from rxsinks._options import exponential_wait
from rxsinks._service.build import build_endpoints
from rxsinks._service.config import EndpointConfig, parse_config
from rxsinks._service.relay import Relay
from tests.conftest import MakeReceiver, Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

MakeRelay = Callable[..., Awaitable[Relay]]


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds; fail naming ``what`` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def relay_config(*endpoints: dict[str, Any], **ingest: Any) -> Any:
    return parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0", **ingest},
            "store": {"kind": "memory"},
            "notifications": {"endpoints": list(endpoints)},
        }
    )


@pytest.fixture
async def make_relay() -> AsyncIterator[MakeRelay]:
    relays: list[Relay] = []

    async def make(*endpoints: dict[str, Any], **ingest: Any) -> Relay:
        relay = Relay(relay_config(*endpoints, **ingest))
        await relay.start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.stop(0)


def push(repository: str = "library/alpine", **target: Any) -> Event:
    return Event.new("push", target={"repository": repository, **target})


def pull(repository: str = "library/alpine", **target: Any) -> Event:
    return Event.new("pull", target={"repository": repository, **target})


# --------------------------------------------------------------------------- backoff bounds


def test_exponential_wait_gives_go_events_bounds() -> None:
    wait = exponential_wait(1.0, 1.0, 20.0)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    bounds = []
    for attempt in range(1, 8):
        state.attempt_number = attempt
        bounds.append(wait(state))
    assert bounds == [2, 3, 5, 9, 17, 20, 20]


def test_exponential_wait_with_other_figures() -> None:
    wait = exponential_wait(0.5, 0.25, 3.0)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    bounds = []
    for attempt in range(1, 7):
        state.attempt_number = attempt
        bounds.append(wait(state))
    # base + factor * 2**(n-1), capped at max
    assert bounds == [0.75, 1.0, 1.5, 2.5, 3.0, 3.0]


@pytest.mark.parametrize(("base", "factor", "maximum"), [(-1, 1, 5), (1, -1, 5), (5, 1, 2)])
def test_exponential_wait_refuses_bad_figures(base: float, factor: float, maximum: float) -> None:
    with pytest.raises(ValueError, match=r"base|factor|max"):
        exponential_wait(base, factor, maximum)


# --------------------------------------------------------------------------- building endpoints


def test_disabled_endpoints_are_not_built() -> None:
    config = relay_config(
        {"name": "a", "url": "http://127.0.0.1:9/a"},
        {"name": "off", "url": "http://127.0.0.1:9/off", "disabled": True},
        {"name": "c", "url": "http://127.0.0.1:9/c"},
    )
    built = build_endpoints(config)
    assert [endpoint.name for _, endpoint in built] == ["a", "c"]
    assert [cfg.name for cfg, _ in built] == ["a", "c"]
    relay = Relay(config)
    assert [endpoint.name for endpoint in relay.endpoints] == ["a", "c"]
    assert relay.subject.members == relay.endpoints


def test_an_endpoint_that_cannot_be_built_is_a_config_problem() -> None:
    config = relay_config({"name": "ok", "url": "http://127.0.0.1:9/a"})
    # the reader refuses such a URL; a configuration built by hand is checked when built
    unread = EndpointConfig(name="bad", url="ftp://127.0.0.1/b")
    config = dataclasses.replace(config, endpoints=(*config.endpoints, unread))
    with pytest.raises(ConfigErrors) as caught:
        build_endpoints(config)
    (problem,) = caught.value.problems
    assert problem.path == "notifications.endpoints[1]"
    assert "'bad' cannot be built" in str(problem) and "http://" in str(problem)


def test_a_wrong_key_is_reported_at_its_path_before_anything_is_built() -> None:
    with pytest.raises(ConfigErrors) as caught:
        relay_config(
            {"name": "ok", "url": "http://127.0.0.1:9/a"},
            # the signature sets webhook-id itself: a configured one would clash
            {
                "name": "clash",
                "url": "http://127.0.0.1:9/b",
                "secret": SECRET,
                "headers": {"webhook-id": ["x"]},
            },
        )
    (problem,) = caught.value.problems
    assert problem.path == "notifications.endpoints[1].headers"
    assert "webhook-id" in str(problem) and "signature" in str(problem)


async def test_registry_fields_headers_content_type_secret_and_batch_are_mapped(
    make_relay: MakeRelay, receiver: Receiver
) -> None:
    relay = await make_relay(
        {
            "name": "hooks",
            "url": receiver.url(),
            "headers": {"X-Team": ["a", "b"]},
            "contenttype": "v2",
            "secret": SECRET,
            "batch": {"maxevents": 3, "maxdelay": "5s"},
            "ignoredmediatypes": ["application/octet-stream"],
            "ignore": {"actions": ["pull"]},
        }
    )
    events = [
        push(tag="v1"),
        pull(),
        push(mediaType="application/octet-stream"),
        push(tag="v2"),
        push(tag="v3"),
    ]
    await relay.accept(events)
    await eventually(lambda: len(receiver.events) == 3, "the batch of three")
    (request,) = receiver.requests
    assert request.headers.getall("X-Team") == ["a", "b"]
    assert request.headers["Content-Type"] == MEDIA_TYPE_V2
    assert request.headers["webhook-signature"].startswith("v1,")
    assert [event.target.tag for event in receiver.events] == ["v1", "v2", "v3"]


async def test_match_filters_are_mapped(make_relay: MakeRelay, receiver: Receiver) -> None:
    relay = await make_relay(
        {
            "name": "hooks",
            "url": receiver.url(),
            "match": {
                "actions": ["push"],
                "repositories": ["library/*"],
                "excluderepositories": ["library/secret"],
            },
        }
    )
    events = [
        push("library/alpine", tag="keep"),
        pull("library/alpine"),
        push("team/app"),
        push("library/secret"),
        push("library/debian", tag="keep too"),
    ]
    await relay.accept(events)
    await eventually(lambda: len(receiver.events) == 2, "two matching events")
    await relay.stop(5)
    assert [event.target.tag for event in receiver.events] == ["keep", "keep too"]


async def test_retry_max_attempts_dead_letters_the_block(
    make_relay: MakeRelay, receiver: Receiver
) -> None:
    relay = await make_relay(
        {"name": "hooks", "url": receiver.url(status=500), "retry": {"maxattempts": 3}}
    )
    (endpoint,) = relay.endpoints
    await relay.accept([push()])
    await eventually(lambda: endpoint.metrics().dead_letters == 1, "the dead letter")
    assert len(receiver.requests) == 3
    assert endpoint.metrics().failures == 3


async def test_retry_max_age_dead_letters_the_block(
    make_relay: MakeRelay, receiver: Receiver
) -> None:
    relay = await make_relay(
        {
            "name": "hooks",
            "url": receiver.url(status=500),
            "backoff": "20ms",
            "threshold": 1,
            "retry": {"maxage": "200ms"},
        }
    )
    (endpoint,) = relay.endpoints
    await relay.accept([push()])
    await eventually(lambda: endpoint.metrics().dead_letters == 1, "the dead letter")
    assert len(receiver.requests) >= 2  # retried until the age ran out, then given up


async def test_permanent_statuses_are_not_retried(
    make_relay: MakeRelay, receiver: Receiver
) -> None:
    relay = await make_relay(
        {"name": "hooks", "url": receiver.url(status=422), "permanentstatuses": [422]}
    )
    (endpoint,) = relay.endpoints
    await relay.accept([push()])
    await eventually(lambda: endpoint.metrics().dead_letters == 1, "the dead letter")
    assert len(receiver.requests) == 1


async def test_timeout_is_mapped(make_relay: MakeRelay, receiver: Receiver) -> None:
    relay = await make_relay(
        {
            "name": "hooks",
            "url": receiver.url(delay=2),
            "timeout": "50ms",
            "retry": {"maxattempts": 1},
        }
    )
    (endpoint,) = relay.endpoints
    await relay.accept([push()])
    await eventually(lambda: endpoint.metrics().dead_letters == 1, "the timed-out block")
    assert endpoint.metrics().errors == 1
    assert (
        "timed out" in endpoint.metrics().last_error or "timeout" in endpoint.metrics().last_error
    )


async def test_tls_ca_file_is_mapped(
    make_relay: MakeRelay, make_receiver: MakeReceiver, tmp_path: Any
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    secure = await make_receiver(ssl=server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    relay = await make_relay(
        {"name": "trusted", "url": secure.url(), "tls": {"cafile": str(ca_file)}},
        {"name": "untrusted", "url": secure.url(), "retry": {"maxattempts": 1}},
    )
    trusted, untrusted = relay.endpoints
    await relay.accept([push(tag="v1")])
    await eventually(lambda: trusted.metrics().successes == 1, "the trusted delivery")
    await eventually(lambda: untrusted.metrics().dead_letters == 1, "the untrusted failure")
    assert "certificate" in untrusted.metrics().last_error.lower()
    assert [event.target.tag for event in secure.events] == ["v1"]


# --------------------------------------------------------------------------- the relay


async def test_relay_delivers_in_order_to_every_endpoint_and_stops_flushed(
    make_relay: MakeRelay, make_receiver: MakeReceiver
) -> None:
    first, second = await make_receiver(), await make_receiver()
    relay = await make_relay(
        {"name": "first", "url": first.url()},
        {"name": "second", "url": second.url(), "batch": {"maxevents": 7, "maxdelay": "10ms"}},
    )
    events = [push(tag=str(index)) for index in range(40)]
    for start in range(0, 40, 8):
        await relay.accept(events[start : start + 8])
    report = await relay.stop(10)
    assert report.flushed and report.remaining == 0
    assert first.events == events
    assert second.events == events
    with pytest.raises(SinkClosedError):
        await relay.accept([push()])
    assert not relay.accepting


async def test_graceful_stop_with_a_receiver_down_reports_what_is_left(
    make_relay: MakeRelay,
    receiver: Receiver,
    closing_listener: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = await make_relay(
        {"name": "up", "url": receiver.url()},
        {"name": "down", "url": closing_listener, "threshold": 1, "backoff": "10s"},
    )
    up, down = relay.endpoints
    await relay.accept([push(tag=str(index)) for index in range(5)])
    await eventually(lambda: down.metrics().errors >= 1, "a failed attempt on 'down'")
    with caplog.at_level(logging.INFO, logger="rxsinks.relay"):
        report = await relay.stop(0.2)
    assert not report.flushed
    assert report.remaining == 5
    assert len(receiver.events) == 5  # the healthy endpoint was not held back
    left = [record for record in caplog.records if getattr(record, "state", None) == "left"]
    assert [(getattr(r, "endpoint", None), getattr(r, "remaining", None)) for r in left] == [
        ("down", 5)
    ]
    assert "5 event(s) not delivered" in left[0].getMessage()
    assert down.metrics().dead_letters == 5  # nothing vanished: given up on, with a reason
    assert up.metrics().successes == 5


async def test_stop_is_idempotent(make_relay: MakeRelay, receiver: Receiver) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url()})
    first = await relay.stop(1)
    second = await relay.stop(1)
    assert first is second and first.flushed


async def test_state_changes_are_logged_once_each(
    make_relay: MakeRelay, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answer_next(503, 503, 503, 503)
    relay = await make_relay(
        {"name": "hooks", "url": receiver.url(), "threshold": 2, "backoff": "20ms"}
    )
    with caplog.at_level(logging.DEBUG, logger="rxsinks.relay"):
        await relay.accept([push()])
        await eventually(lambda: len(receiver.events) == 1, "the delivery after recovery")
    states = [
        record.state
        for record in caplog.records
        if record.name == "rxsinks.relay"
        and record.levelno >= logging.INFO
        and hasattr(record, "state")
    ]
    assert states == ["breaker_opened", "recovered"]
    opened = next(r for r in caplog.records if getattr(r, "state", None) == "breaker_opened")
    assert "503" in opened.getMessage() and getattr(opened, "endpoint", None) == "hooks"


async def test_a_410_is_logged_as_disabled(
    make_relay: MakeRelay, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await make_relay({"name": "gone", "url": receiver.url(status=410)})
    (endpoint,) = relay.endpoints
    with caplog.at_level(logging.INFO, logger="rxsinks.relay"):
        await relay.accept([push()])
        await eventually(lambda: endpoint.disabled, "the endpoint to disable itself")
    disabled = [r for r in caplog.records if getattr(r, "state", None) == "disabled"]
    assert len(disabled) == 1 and "410" in disabled[0].getMessage()


async def test_address_and_url_of_a_started_relay(make_relay: MakeRelay) -> None:
    relay = await make_relay()
    host, port = relay.address
    assert host == "127.0.0.1" and port > 0
    assert relay.url == f"http://127.0.0.1:{port}/events"
    assert repr(relay).startswith(f"Relay(http://127.0.0.1:{port}/events")


def test_address_before_start_says_so() -> None:
    relay = Relay(relay_config())
    with pytest.raises(RuntimeError, match="not started"):
        _ = relay.address


async def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        relay = Relay(relay_config(addr=f"127.0.0.1:{port}"))
        with pytest.raises(
            OSError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"
        ):
            await relay.start()
        assert not relay.accepting


# --------------------------------------------------------------------------- delivery keys


async def test_concurrency_and_orderby_from_the_configuration(make_relay: MakeRelay) -> None:
    in_flight = 0
    most = 0
    received: list[tuple[str, str]] = []

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        (event,) = decode_envelope(await request.read())
        await asyncio.sleep(0.05)
        received.append((event.target.repository, event.target.tag))
        in_flight -= 1
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", slow)
    server = TestServer(app)
    await server.start_server()
    try:
        relay = await make_relay(
            {
                "name": "hooks",
                "url": str(server.make_url("/hook")),
                "concurrency": 4,
                "orderby": "repository",
            }
        )
        events = [push(f"team/{repo}", tag=str(n)) for n in range(5) for repo in "abcd"]
        await relay.accept(events)
        await eventually(lambda: len(received) == 20, "every event")
    finally:
        await server.close()
    assert most == 4  # four repositories: four POSTs at once, never more
    for repo in "abcd":
        tags = [tag for name, tag in received if name == f"team/{repo}"]
        assert tags == ["0", "1", "2", "3", "4"]  # each repository in order


async def test_a_delay_from_the_configuration_holds_new_events(
    make_relay: MakeRelay, receiver: Receiver
) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url(), "delay": "1s"})
    old = push(tag="old").to_dict()
    old["timestamp"] = "2001-01-01T00:00:00Z"
    await relay.accept([Event.from_dict(old)])
    await eventually(lambda: len(receiver.events) == 1, "the old event, at once")
    await relay.accept([push(tag="new")])
    await asyncio.sleep(0.1)
    assert len(receiver.events) == 1  # the new one waits for its second
    await eventually(lambda: len(receiver.events) == 2, "the new event, later")
    assert [event.target.tag for event in receiver.events] == ["old", "new"]


async def test_concurrency_on_a_sqlite_store_starts_or_is_a_clear_config_problem(
    tmp_path: Any, receiver: Receiver
) -> None:
    # the durable buffer learns per-key delivery separately; until it has, it refuses more than
    # one block in flight: then the relay must say so at the endpoint's key path, no traceback
    config = parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0"},
            "store": {"path": str(tmp_path / "events.db")},
            "notifications": {
                "endpoints": [
                    {"name": "off", "url": receiver.url(), "disabled": True},
                    {"name": "hooks", "url": receiver.url(), "concurrency": 4},
                ]
            },
        }
    )
    relay = Relay(config)
    try:
        await relay.start()
    except ConfigErrors as exc:
        (problem,) = exc.problems
        assert problem.path == "notifications.endpoints[1]"
        assert "endpoint 'hooks' cannot start" in problem.detail
        assert "concurrency" in problem.detail
        assert relay.store is not None
        await relay.store.close()
        return
    events = [push(f"team/{repo}", tag=str(n)) for n in range(3) for repo in "ab"]
    await relay.accept(events)
    await eventually(lambda: len(receiver.events) == 6, "every event")
    await relay.stop(5)
    for repo in "ab":
        tags = [e.target.tag for e in receiver.events if e.target.repository == f"team/{repo}"]
        assert tags == ["0", "1", "2"]
