"""The ingest server (rxsinks._service.ingest) with a real relay on port 0 and real receivers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rxsinks._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event, encode_envelope, sample_events
from rxsinks._exceptions import DeliveryError
from rxsinks._service.config import parse_config
from rxsinks._service.ingest import METRICS_CONTENT_TYPE, post_events
from rxsinks._service.relay import Relay
from tests.conftest import Receiver

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 32768


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds; fail naming ``what`` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


MakeRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay() -> AsyncIterator[MakeRelay]:
    relays: list[Relay] = []

    async def make(*endpoints: dict[str, Any], **ingest: Any) -> Relay:
        config = parse_config(
            {
                "ingest": {"addr": "127.0.0.1:0", **ingest},
                "store": {"kind": "memory"},
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


@pytest.fixture
async def relay(make_relay: MakeRelay, receiver: Receiver) -> Relay:
    """A relay with a token and a small body limit, delivering to ``receiver``."""
    return await make_relay(
        {"name": "hooks", "url": receiver.url()}, token=TOKEN, max_body=MAX_BODY
    )


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    client: aiohttp.ClientSession,
    relay: Relay,
    body: bytes | Any,
    *,
    content_type: str | None = MEDIA_TYPE_V1,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    sent = dict(AUTH if headers is None else headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    # without skip_auto_headers, aiohttp would add application/octet-stream itself
    skip = () if content_type is not None else ("Content-Type",)
    async with client.post(relay.url, data=body, headers=sent, skip_auto_headers=skip) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


def registry_events() -> list[dict[str, Any]]:
    """The packaged capture, plus unknown fields at every depth and nanosecond timestamps."""
    events = [event.to_dict() for event in sample_events()]
    events[0]["x-extension"] = {"nested": [1, 2, {"deep": None}], "big": 2**70}
    events[1]["target"]["x-future-field"] = "kept"
    events[2]["timestamp"] = "2026-11-29T17:44:07.000000001Z"
    return events


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    "content_type",
    [MEDIA_TYPE_V1, MEDIA_TYPE_V2, "application/json", "application/json; charset=utf-8"],
)
async def test_envelope_is_accepted_and_forwarded_unchanged_in_order(
    relay: Relay, receiver: Receiver, client: aiohttp.ClientSession, content_type: str
) -> None:
    events = registry_events()
    body = json.dumps({"events": events}).encode()
    status, answer = await post(client, relay, body, content_type=content_type)
    assert (status, answer) == (200, {"accepted": len(events)})
    await eventually(lambda: len(receiver.events) == len(events), "every event")
    assert [event.to_dict() for event in receiver.events] == events
    # same keys in the same order, the nanosecond timestamp as sent
    assert [list(event.raw) for event in receiver.events] == [list(e) for e in events]
    assert receiver.events[2].timestamp == "2026-11-29T17:44:07.000000001Z"
    assert receiver.events[0].raw["x-extension"]["big"] == 2**70


async def test_an_empty_envelope_is_accepted(relay: Relay, client: aiohttp.ClientSession) -> None:
    assert await post(client, relay, b'{"events": []}') == (200, {"accepted": 0})


async def test_answer_comes_after_accept_returned(
    relay: Relay, client: aiohttp.ClientSession
) -> None:
    (endpoint,) = relay.endpoints
    status, _ = await post(client, relay, encode_envelope([Event.new("push")]))
    # the 200 means the event was handed to the endpoint (counted by its queue)
    assert status == 200 and endpoint.metrics().events == 1


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
async def test_missing_or_wrong_token_is_401(
    relay: Relay, receiver: Receiver, client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, answer = await post(client, relay, b'{"events": [{}]}', headers=headers)
    assert status == 401
    assert "Bearer" in answer["error"]
    assert relay.endpoints[0].metrics().events == 0


async def test_no_token_configured_means_no_check(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url()})
    assert await post(client, relay, b'{"events": [{}]}', headers={}) == (200, {"accepted": 1})


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "text/plain"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/xml", "application/xml"),
        ("application/json; charset=latin-1", "latin-1"),
        (None, "no Content-Type"),
    ],
)
async def test_other_content_types_are_415(
    relay: Relay, client: aiohttp.ClientSession, content_type: str | None, named: str
) -> None:
    status, answer = await post(client, relay, b'{"events": []}', content_type=content_type)
    assert status == 415
    assert named in answer["error"]


async def test_a_body_over_max_body_is_413(relay: Relay, client: aiohttp.ClientSession) -> None:
    body = json.dumps({"events": [{"pad": "x" * MAX_BODY}]}).encode()
    status, answer = await post(client, relay, body)
    assert status == 413
    assert str(MAX_BODY) in answer["error"] and "max_body" in answer["error"]


async def test_a_chunked_body_over_max_body_is_413(
    relay: Relay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": [{"pad": "'
        for _ in range(4):
            yield b"x" * (MAX_BODY // 2)
        yield b'"}]}'

    status, answer = await post(client, relay, chunks())
    assert status == 413
    assert "max_body" in answer["error"]
    assert relay.endpoints[0].metrics().events == 0


async def test_a_chunked_body_under_max_body_is_accepted(
    relay: Relay, client: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": [{"action": "push"},'
        yield b' {"action": "pull"}]}'

    assert await post(client, relay, chunks()) == (200, {"accepted": 2})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe", "UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'{"event": []}', 'no "events" member'),
        (b'{"events": {}}', '"events" must be an array'),
        (b'{"events": [{}, 3]}', "events[1] must be an object"),
        (b'{"events": [NaN]}', "not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
async def test_malformed_envelopes_are_400_naming_the_problem(
    make_relay: MakeRelay,
    receiver: Receiver,
    client: aiohttp.ClientSession,
    body: bytes,
    named: str,
) -> None:
    relay = await make_relay({"name": "hooks", "url": receiver.url()}, max_body=1_000_000)
    status, answer = await post(client, relay, body, headers={})
    assert status == 400
    assert named in answer["error"]
    assert relay.endpoints[0].metrics().events == 0


async def test_other_methods_and_paths_get_json_errors(
    relay: Relay, client: aiohttp.ClientSession
) -> None:
    async with client.get(relay.url) as response:
        assert response.status == 405
        assert (await response.json())["error"] == "Method Not Allowed"
        assert "POST" in response.headers["Allow"]
    async with client.get(relay.url.replace("/events", "/nowhere")) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "Not Found"


# --------------------------------------------------------------------------- stopping


async def test_while_stopping_posts_and_health_get_503(
    make_relay: MakeRelay, closing_listener: str, client: aiohttp.ClientSession
) -> None:
    relay = await make_relay(
        {"name": "down", "url": closing_listener, "threshold": 1, "backoff": "10s"}
    )
    base = relay.url.removesuffix("/events")
    async with client.get(f"{base}/healthz") as response:
        assert (response.status, await response.text()) == (200, "ok")
    await relay.accept([Event.new("push")])
    stopping = asyncio.ensure_future(relay.stop(1))
    await eventually(lambda: not relay.accepting, "the relay to start stopping")
    status, answer = await post(client, relay, b'{"events": [{}]}', headers={})
    assert status == 503 and "stopping" in answer["error"]
    async with client.get(f"{base}/healthz") as response:
        assert (response.status, await response.text()) == (503, "stopping")
    report = await stopping
    assert report.remaining == 1
    assert relay.endpoints[0].metrics().events == 1  # the 503'd POST added nothing


# --------------------------------------------------------------------------- metrics


async def test_metrics_are_prometheus_text(
    relay: Relay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    await post(client, relay, encode_envelope([Event.new("push"), Event.new("pull")]))
    await post(client, relay, b"{", headers={})
    await eventually(lambda: len(receiver.events) == 2, "both events")
    # with a token configured, /metrics needs it too (unless ingest.open_metrics)
    async with client.get(relay.url.replace("/events", "/metrics"), headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
        text = await response.text()
    lines = text.splitlines()
    assert 'registry_notifications_events_total{endpoint="hooks",type="Events"} 2.0' in lines
    assert 'registry_notifications_events_total{endpoint="hooks",type="Successes"} 2.0' in lines
    assert 'registry_notifications_status_total{code="200 OK",endpoint="hooks"} 2.0' in lines
    assert 'registry_notifications_pending_total{endpoint="hooks"} 0.0' in lines
    assert 'rxsinks_ingest_requests_total{code="200"} 1' in lines
    assert 'rxsinks_ingest_requests_total{code="401"} 1' in lines
    assert "rxsinks_ingest_events_total 2" in lines


async def test_debug_vars_is_the_registry_expvar_shape(
    make_relay: MakeRelay, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    url = receiver.url().replace("http://", "http://user:pass@")
    relay = await make_relay(
        {
            "name": "hooks",
            "url": url,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "headers": {"X-Api-Key": ["k"]},
            "secretheaders": ["X-Api-Key"],
        },
        {"name": "off", "url": url, "disabled": True},
    )
    await relay.accept([Event.new("push")])
    await eventually(lambda: len(receiver.events) == 1, "the event")
    async with client.get(relay.url.replace("/events", "/debug/vars")) as response:
        assert response.status == 200
        document = await response.json()
    (entry,) = document["registry"]["notifications"]["endpoints"]
    assert entry["name"] == "hooks"
    assert entry["url"] == receiver.url().replace("http://", "http://***@")  # credentials hidden
    config = entry["EndpointConfig"]
    assert config["secret"] == "<redacted>"
    assert config["headers"] == {"X-Api-Key": ["<redacted>"]}
    assert "pass" not in json.dumps(document)
    metrics = entry["Metrics"]
    assert {key: metrics[key] for key in ("Pending", "Events", "Successes", "Statuses")} == {
        "Pending": 0,
        "Events": 1,
        "Successes": 1,
        "Statuses": {"200 OK": 1},
    }
    assert metrics["Breaker"] == "closed" and metrics["DeadLetters"] == 0


# --------------------------------------------------------------------------- the client


async def test_post_events_sends_in_order_in_batches(relay: Relay, receiver: Receiver) -> None:
    events = sample_events()
    progress: list[int] = []
    sent = await post_events(relay.url, events, token=TOKEN, batch=5, on_progress=progress.append)
    assert sent == len(events) and progress == [5, 5, 5, 1]
    await eventually(lambda: len(receiver.events) == len(events), "every event")
    assert receiver.events == events


async def test_post_events_stops_at_a_refusal_and_says_how_far_it_got(relay: Relay) -> None:
    with pytest.raises(DeliveryError, match="401") as caught:
        await post_events(relay.url, sample_events(), token="wrong")
    assert "0 of 16 events were accepted" in " ".join(caught.value.__notes__)


# --------------------------------------------------------------------------- bad input


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_event_objects = st.dictionaries(st.text(max_size=8), _json_values, max_size=4)
_envelopes = st.lists(_event_objects, max_size=4).map(
    lambda events: json.dumps({"events": events}).encode()
)
_bodies = st.one_of(
    _envelopes,
    _envelopes,
    _envelopes,
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    _json_values.map(lambda value: json.dumps(value).encode()),
    st.lists(_json_values, max_size=3).map(lambda items: json.dumps({"events": items}).encode()),
    # over the limit: junk, and a valid envelope
    st.integers(1, 64).map(lambda n: b"x" * (MAX_BODY + n)),
    st.integers(1, 64).map(
        lambda n: json.dumps({"events": [{"pad": "x" * (MAX_BODY + n)}]}).encode()
    ),
)
_content_types = st.one_of(
    # accepted ones, more often than their share of a uniform draw
    st.sampled_from([MEDIA_TYPE_V1, MEDIA_TYPE_V2, "application/json"]),
    st.sampled_from(
        [
            MEDIA_TYPE_V1,
            MEDIA_TYPE_V2,
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json; charset=ascii",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            ";;;",
            "",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
_auth = st.one_of(
    # the right token most of the time, so that the checks after it are reached
    st.just(f"Bearer {TOKEN}"),
    st.just(f"Bearer {TOKEN}"),
    st.just(f"bearer  {TOKEN} "),
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)
_extra_headers = st.dictionaries(
    st.sampled_from(
        ["X-Anything", "Accept", "Content-Encoding", "Accept-Encoding", "X-Request-Id"]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    max_size=3,
)


class _Ledger:
    """What the fuzzed relay accepted so far, to compare with what its receiver got."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []


@pytest.fixture
def ledger() -> _Ledger:
    return _Ledger()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies, content_type=_content_types, auth=_auth, extra=_extra_headers)
async def test_arbitrary_requests_never_get_a_5xx_and_nothing_is_accepted_twice(
    relay: Relay,
    receiver: Receiver,
    client: aiohttp.ClientSession,
    ledger: _Ledger,
    body: bytes,
    content_type: str,
    auth: str | None,
    extra: dict[str, str],
) -> None:
    headers = dict(extra)
    headers["Content-Type"] = content_type
    if auth is not None:
        headers["Authorization"] = auth
    async with client.post(relay.url, data=body, headers=headers) as response:
        status = response.status
        text = await response.text()
    assert status < 500, (status, text)
    event(f"status {status}")
    answer = json.loads(text)
    if status == 200:
        events = json.loads(body)["events"]
        assert answer == {"accepted": len(events)}
        ledger.accepted.extend(events)
    else:
        assert set(answer) == {"error"} and answer["error"]
    # exactly what was accepted, once, in order: never a leftover of an earlier request
    await eventually(lambda: len(receiver.events) >= len(ledger.accepted), "the deliveries")
    assert [event.to_dict() for event in receiver.events] == ledger.accepted


# --------------------------------------------------------------------------- load


async def test_concurrent_clients_every_accepted_event_is_delivered(
    relay: Relay, receiver: Receiver
) -> None:
    clients, requests, per_request = 4, 60, 5

    async def run_client(number: int) -> list[str]:
        sent: list[str] = []
        async with aiohttp.ClientSession(headers=AUTH) as session:
            for index in range(requests):
                events = [
                    Event.new(
                        "push", target={"repository": f"client/{number}", "tag": f"{index}.{k}"}
                    )
                    for k in range(per_request)
                ]
                async with session.post(
                    relay.url,
                    data=encode_envelope(events),
                    headers={"Content-Type": MEDIA_TYPE_V1},
                ) as response:
                    assert response.status == 200
                    assert await response.json() == {"accepted": per_request}
                sent.extend(event.id for event in events)
        return sent

    sent = await asyncio.gather(*(run_client(number) for number in range(clients)))
    total = clients * requests * per_request
    await eventually(lambda: len(receiver.events) >= total, "every accepted event", timeout=30)
    got = [event.id for event in receiver.events]
    assert len(got) == total and len(set(got)) == total
    for number, ids in enumerate(sent):
        # each client's events arrive in the order that client sent them
        mine = [
            event.id for event in receiver.events if event.target.repository == f"client/{number}"
        ]
        assert mine == ids
