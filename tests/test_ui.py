"""The operator page's JSON API and its defences, against a real relay and real receivers.

No browser here (see ``test_ui_browser.py``): each test drives an in-process
:class:`~rxsinks.Relay` over HTTP on 127.0.0.1 the way a script would, with the bearer
token, or the way a browser would, with the login form's cookie and the page's CSRF token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import rxsinks
from rxsinks._outcome import Outcome, OutcomeKind
from rxsinks._service.config import parse_config
from rxsinks._service.relay import Relay
from rxsinks._service.ui import OPERATOR_UI
from rxsinks._service.ui._auth import COOKIE, Auth
from rxsinks._service.ui._history import HISTORY, RESOLUTION, History, latency_bin, percentile
from rxsinks._store.sqlite import SQLiteStore
from tests.serve import until
from tests.ui_scenario import (
    HOSTILE_REPOSITORY,
    PLANTED,
    TOKEN,
    AiohttpServer,
    Scenario,
    bearer,
    csrf_of,
    start_target,
)


@pytest.fixture
async def scenario(aiohttp_server: AiohttpServer, tmp_path: Path) -> AsyncIterator[Scenario]:
    started = await Scenario.start(aiohttp_server, tmp_path)
    yield started
    await started.stop()


async def get(
    scenario: Scenario, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any, str]:
    """GET a path of the relay: (status, JSON or None, text)."""
    async with (
        aiohttp.ClientSession(cookie_jar=kwargs.pop("jar", None)) as session,
        session.get(scenario.base + path, headers=headers, allow_redirects=False) as answer,
    ):
        text = await answer.text()
        data = json.loads(text) if answer.content_type == "application/json" else None
        return answer.status, data, text


async def post_json(
    scenario: Scenario, path: str, payload: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            scenario.base + path,
            data=body,
            headers={"Content-Type": "application/json", **headers},
        ) as answer,
    ):
        return answer.status, await answer.json(content_type=None)


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


async def test_the_api_shows_healthy_down_and_dead_lettering_endpoints_and_replays(
    scenario: Scenario,
) -> None:
    events = scenario.events(6)
    ids = [event.id for event in events]
    assert await scenario.post(events) == 200
    assert await scenario.post(events[:1], token="wrong") == 401  # counted as rejected
    await until(lambda: scenario.healthy.received == ids, "healthy delivering everything")
    shown: list[str] = []  # every answer, to look for secrets at the end

    async def endpoints() -> dict[str, dict[str, Any]]:
        status, rows, text = await get(scenario, "/api/endpoints", bearer())
        assert status == 200
        shown.append(text)
        return by_name(rows)

    await until(lambda: scenario.relay.endpoints[2].metrics().dead_letters == 6, "dead letters")
    await until(lambda: scenario.relay.endpoints[1].breaker.state != "closed", "breaker opening")
    rows = await endpoints()
    assert list(rows) == ["healthy", "down", "dead"]  # configuration order
    healthy, down, dead = rows["healthy"], rows["down"], rows["dead"]
    assert healthy["state"] == "delivering" and healthy["state_text"] == "delivering"
    assert (healthy["events"], healthy["successes"], healthy["pending"]) == (6, 6, 0)
    assert healthy["statuses"] == {"200 OK": 6}
    assert healthy["last_success"] is not None and healthy["last_failure"] is None
    assert healthy["url"].endswith("/hook?api_key=***&region=***")
    assert down["state"] in ("breaker_open", "breaker_half_open")
    assert down["since"] is not None and "since" in down["state_text"]
    assert down["state_text"].startswith("breaker open")
    assert down["pending"] == 6 and down["statuses"]["503 Service Unavailable"] >= 2
    assert "503 Service Unavailable" in down["last_failure_reason"]
    assert down["url"].startswith("http://***@127.0.0.1:")
    assert dead["dead_letters"] == 6 and dead["failures"] == 6
    assert "422 Unprocessable Entity" in dead["last_failure_reason"]
    assert dead["last_failure_reason"].startswith("given up after 1 attempt(s)")

    # the samples: one every RESOLUTION seconds, delivered events counted in them
    await until(lambda: scenario.relay.app[OPERATOR_UI].history.samples >= 2, "two samples")
    rows = await endpoints()
    series = rows["healthy"]["series"]
    assert series["step"] == RESOLUTION and len(series["pending"]) >= 2
    assert sum(series["delivered"]) == 6 and rows["healthy"]["rate"] > 0
    assert (
        rows["healthy"]["p50"] is not None and 0 < rows["healthy"]["p50"] <= rows["healthy"]["p99"]
    )
    assert sum(rows["down"]["series"]["failed"]) >= 2 and rows["down"]["series"]["pending"][-1] == 6
    assert "series" not in (await get(scenario, "/api/endpoints?series=0", bearer()))[1][0]

    # one endpoint: the last attempts, newest first, and its redacted configuration
    status, detail, text = await get(scenario, "/api/endpoints/dead", bearer())
    shown.append(text)
    assert status == 200 and detail["name"] == "dead"
    assert [a["result"] for a in detail["attempts"]] == ["422 Unprocessable Entity"] * 6
    assert all(a["events"] == 1 and a["duration"] > 0 and not a["ok"] for a in detail["attempts"])
    assert detail["attempts"][0]["time"] >= detail["attempts"][-1]["time"]
    assert detail["config"]["permanent_statuses"] == [422]
    assert detail["dead_letters_available"] is True
    status, healthy_detail, text = await get(scenario, "/api/endpoints/healthy", bearer())
    shown.append(text)
    assert healthy_detail["config"]["secret"] == "<redacted>"
    assert healthy_detail["config"]["headers"] == {
        "Authorization": ["<redacted>"],
        "X-Api-Key": ["<redacted>"],
        "X-Team": ["platform"],
    }
    assert [a["result"] for a in healthy_detail["attempts"]] == ["200 OK"] * 6
    status, missing, _ = await get(scenario, "/api/endpoints/nope", bearer())
    assert status == 404 and missing == {"error": "no endpoint named 'nope'"}

    # the dead letters, as the store keeps them
    status, listing, text = await get(scenario, "/api/endpoints/dead/dead-letters", bearer())
    shown.append(text)
    assert status == 200 and listing["replayable"] is True and listing["truncated"] is False
    letters = listing["dead_letters"]
    assert [d["event_id"] for d in letters] == ids
    assert (
        letters[0]["repository"] == HOSTILE_REPOSITORY and letters[1]["repository"] == "team/app1"
    )
    assert {d["action"] for d in letters} == {"push"} and letters[0]["tag"] == "v1"
    assert all("422" in d["reason"] and d["attempts"] == 1 and d["time"] for d in letters)
    limited = (await get(scenario, "/api/endpoints/dead/dead-letters?limit=2", bearer()))[1]
    assert len(limited["dead_letters"]) == 2 and limited["truncated"] is True

    # replay selected: only those two reach the (now healthy) receiver
    scenario.dead.recover()
    chosen = [letters[1]["id"], letters[3]["id"]]
    status, answer = await post_json(
        scenario, "/api/endpoints/dead/replay", {"ids": chosen}, bearer()
    )
    assert (status, answer) == (200, {"replayed": 2})
    await until(lambda: len(scenario.dead.received) == 2, "the two replayed events")
    assert scenario.dead.received == [ids[1], ids[3]]
    left = (await get(scenario, "/api/endpoints/dead/dead-letters", bearer()))[1]
    assert [d["event_id"] for d in left["dead_letters"]] == [ids[0], ids[2], ids[4], ids[5]]

    # the down endpoint recovers: its breaker closes and its backlog drains
    scenario.down.recover()
    await until(lambda: scenario.down.received == ids, "the down endpoint's backlog")
    await until(lambda: scenario.relay.endpoints[1].breaker.state == "closed", "breaker closed")
    down = (await endpoints())["down"]
    assert (down["state"], down["since"], down["pending"]) == ("delivering", None, 0)

    # replay all
    status, answer = await post_json(
        scenario, "/api/endpoints/dead/replay", {"all": True}, bearer()
    )
    assert (status, answer) == (200, {"replayed": 4})
    await until(lambda: sorted(scenario.dead.received) == sorted(ids), "every replayed event")
    assert (await get(scenario, "/api/endpoints/dead/dead-letters", bearer()))[1][
        "dead_letters"
    ] == []

    # the ingest panel
    status, ingest, text = await get(scenario, "/api/ingest", bearer())
    shown.append(text)
    assert status == 200
    assert ingest["version"] == rxsinks.__version__
    assert ingest["instance"] == scenario.relay.instance_id
    assert ingest["accepted_events"] == 6 and ingest["requests"] == {"200": 1, "401": 1}
    assert ingest["rejected"] == {"401": 1}
    assert ingest["store"]["kind"] == "sqlite" and ingest["store"]["size_bytes"] > 0
    assert ingest["endpoints"] == ingest["delivering"] == 3
    assert ingest["uptime"] >= 0 and ingest["access"] == "token" and ingest["redis"] is None

    everything = "\n".join(shown)
    assert "<redacted>" in everything and "***" in everything  # the secrets were there, hidden
    assert PLANTED not in everything


async def test_the_api_needs_the_token(scenario: Scenario) -> None:
    for path in (
        "/api/endpoints",
        "/api/endpoints/dead",
        "/api/endpoints/dead/dead-letters",
        "/api/ingest",
    ):
        for headers in (None, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}):
            status, data, _ = await get(scenario, path, headers)
            assert status == 401, (path, headers)
            assert data["error"].startswith("missing or wrong token")
    status, data = await post_json(scenario, "/api/endpoints/dead/replay", {"all": True}, {})
    assert status == 401
    # the pages answer with the login form, never with data
    status, _, page = await get(scenario, "/ui")
    assert status == 401 and 'action="/ui/login"' in page and "dead" not in page
    status, _, page = await get(scenario, "/ui/endpoints/dead")
    assert status == 401 and 'name="next" value="/ui/endpoints/dead"' in page
    # / leads to the page
    async with (
        aiohttp.ClientSession() as session,
        session.get(scenario.base + "/", allow_redirects=False) as answer,
    ):
        assert (answer.status, answer.headers["Location"]) == (302, "/ui")


async def login(scenario: Scenario, token: str, next_page: str = "/ui") -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            scenario.base + "/ui/login",
            data={"token": token, "next": next_page},
            allow_redirects=False,
            headers={"Origin": scenario.base},
        ) as answer,
    ):
        await answer.read()
        return answer


async def test_login_sets_a_strict_httponly_cookie_and_replay_needs_the_csrf_header(
    scenario: Scenario,
) -> None:
    assert await scenario.post(scenario.events(2)) == 200
    await until(lambda: scenario.relay.endpoints[2].metrics().dead_letters == 2, "dead letters")
    wrong = await login(scenario, "wrong")
    assert wrong.status == 401 and COOKIE not in wrong.cookies
    right = await login(scenario, TOKEN, "/ui/endpoints/dead")
    assert (right.status, right.headers["Location"]) == (303, "/ui/endpoints/dead")
    header = right.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    cookie = right.cookies[COOKIE].value
    assert TOKEN not in cookie and PLANTED not in cookie
    # never an open redirect
    for elsewhere in ("https://evil.example/", "//evil.example/ui", "/ui/../../x\\y"):
        assert (await login(scenario, TOKEN, elsewhere)).headers["Location"] == "/ui"

    jar = {"Cookie": f"{COOKIE}={cookie}"}
    status, page = (await get(scenario, "/ui/endpoints/dead", jar))[::2]
    assert status == 200 and 'data-view="endpoint"' in page and PLANTED not in page
    csrf = csrf_of(page)
    assert csrf and csrf not in cookie
    status, rows, _ = await get(scenario, "/api/endpoints", jar)
    assert status == 200 and len(rows) == 3
    # a tampered or foreign cookie is no session
    forged = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    assert (await get(scenario, "/api/endpoints", {"Cookie": f"{COOKIE}={forged}"}))[0] == 401

    replay = "/api/endpoints/dead/replay"
    scenario.dead.recover()
    refusals = [
        ({}, 403),  # no CSRF header
        ({"X-CSRF-Token": "wrong"}, 403),
        ({"X-CSRF-Token": csrf, "Origin": "http://evil.example"}, 403),
        ({"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}, 403),
    ]
    for extra, expected in refusals:
        status, answer = await post_json(scenario, replay, {"all": True}, {**jar, **extra})
        assert status == expected, extra
        assert answer["error"]
    # a form's content type is refused even with the right header
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            scenario.base + replay,
            data={"all": "true"},
            headers={**jar, "X-CSRF-Token": csrf},
        ) as answer,
    ):
        assert answer.status == 415
    assert scenario.dead.received == []  # nothing was replayed by any of these
    status, answer = await post_json(
        scenario, replay, {"all": True}, {**jar, "X-CSRF-Token": csrf, "Origin": scenario.base}
    )
    assert (status, answer) == (200, {"replayed": 2})
    await until(lambda: len(scenario.dead.received) == 2, "the replayed events")

    # logout clears the cookie
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            scenario.base + "/ui/logout",
            json={},
            headers={**jar, "X-CSRF-Token": csrf},
        ) as answer,
    ):
        assert answer.status == 200
        assert (
            f'{COOKIE}=""' in answer.headers["Set-Cookie"]
            or "Max-Age=0" in answer.headers["Set-Cookie"]
        )


async def test_sessions_expire_and_die_with_a_new_token(aiohttp_server: AiohttpServer) -> None:
    now = [1_000_000.0]
    auth = Auth("token-one", lambda _: False, clock=lambda: now[0])
    other = Auth("token-two", lambda _: False, clock=lambda: now[0])

    async def sessions(request: web.Request) -> web.Response:
        return web.json_response([auth.session(request), other.session(request)])

    app = web.Application()
    app.router.add_get("/", sessions)
    server = await aiohttp_server(app)

    async def check(value: str) -> list[str | None]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/"), headers={"Cookie": f"{COOKIE}={value}"}) as answer,
        ):
            result: list[str | None] = await answer.json()
            return result

    value = auth.new_session()
    assert await check(value) == [value, None]  # another token's key: no session
    now[0] += 12 * 3600 + 1
    assert await check(value) == [None, None]  # expired
    assert auth.csrf(value) != other.csrf(value)
    for junk in ("a.b.c", "9" * 300, "x.y", "1.z.", f"{int(now[0]) + 99}.n.{value[-43:]}"):
        assert await check(junk) == [None, None], junk


async def test_without_a_token_the_page_is_open_on_loopback_only(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    scenario = await Scenario.start(aiohttp_server, tmp_path, token=None)
    try:
        assert await scenario.post(scenario.events(2), token=None) == 200
        status, _, page = await get(scenario, "/ui")
        assert status == 200 and "No ingest.token is configured" in page
        assert 'data-access="open"' in page
        status, rows, _ = await get(scenario, "/api/endpoints")
        assert status == 200 and [row["name"] for row in rows] == ["healthy", "down", "dead"]
        status, ingest, _ = await get(scenario, "/api/ingest")
        assert ingest["access"].startswith("open on loopback")
        status, detail, _ = await get(scenario, "/api/endpoints/dead")
        assert detail["dead_letters_available"] is False
        assert "needs ingest.token" in detail["dead_letters_note"]
        # dead letters and replay are the admin routes' business: a token, always
        status, data, _ = await get(scenario, "/api/endpoints/dead/dead-letters")
        assert status == 403 and "ingest.token" in data["error"]
        status, data = await post_json(scenario, "/api/endpoints/dead/replay", {"all": True}, {})
        assert status == 403 and "ingest.token" in data["error"]
        # a page of another site that rebinds its name to 127.0.0.1 gets nothing
        for host in ("evil.example", "evil.example:80", "10.0.0.1"):
            status, data, _ = await get(scenario, "/api/endpoints", {"Host": host})
            assert status == 403, host
            status, _, page = await get(scenario, "/ui", {"Host": host})
            assert status == 403 and "healthy" not in page
        for host in ("localhost", "127.0.0.1:9", "[::1]:5056", "LOCALHOST."):
            assert (await get(scenario, "/api/endpoints", {"Host": host}))[0] == 200, host
        assert PLANTED not in json.dumps(rows)
    finally:
        await scenario.stop()


async def test_with_the_memory_store_dead_letters_are_listed_but_not_replayable(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    scenario = await Scenario.start(aiohttp_server, tmp_path, store={"kind": "memory"})
    try:
        assert await scenario.post(scenario.events(3)) == 200
        await until(lambda: scenario.relay.endpoints[2].metrics().dead_letters == 3, "letters")
        status, listing, _ = await get(scenario, "/api/endpoints/dead/dead-letters", bearer())
        assert status == 200 and listing["replayable"] is False
        assert [d["event_id"] for d in listing["dead_letters"]] == ["ev-000", "ev-001", "ev-002"]
        assert all(d["id"] is None and "422" in d["reason"] for d in listing["dead_letters"])
        assert "memory store" in listing["note"]
        status, data = await post_json(
            scenario, "/api/endpoints/dead/replay", {"all": True}, bearer()
        )
        assert status == 409 and "in memory" in data["error"]
        ingest = (await get(scenario, "/api/ingest", bearer()))[1]
        assert ingest["store"]["kind"] == "memory" and ingest["store"]["max_events"] > 0
        assert ingest["store"]["held_events"] >= 0
    finally:
        await scenario.stop()


async def test_bad_input_gets_a_clear_4xx(scenario: Scenario) -> None:
    replay = "/api/endpoints/dead/replay"
    cases: list[tuple[Any, int, str]] = [
        (b"not json", 400, "not JSON"),
        ({}, 400, 'expected {"all": true}'),
        ({"all": False}, 400, 'expected {"all": true}'),
        ({"all": True, "ids": [1]}, 400, 'expected {"all": true}'),
        ({"ids": []}, 400, "non-empty list"),
        ({"ids": "1"}, 400, "non-empty list"),
        ({"ids": [1, "2"]}, 400, "positive whole numbers"),
        ({"ids": [True]}, 400, "positive whole numbers"),
        ({"ids": [-1]}, 400, "positive whole numbers"),
        ({"ids": list(range(1, 10_002))}, 400, "at most 10000"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "not JSON"),
        (b"x" * 300_000, 413, "over the limit"),
    ]
    for payload, status, message in cases:
        got, answer = await post_json(scenario, replay, payload, bearer())
        assert (got, message in answer["error"]) == (status, True), payload
    got, answer = await post_json(scenario, "/api/endpoints/nope/replay", {"all": True}, bearer())
    assert got == 404
    for query in ("limit=0", "limit=abc", "limit=10001", "limit=1.5"):
        status, data, _ = await get(scenario, f"/api/endpoints/dead/dead-letters?{query}", bearer())
        assert status == 400 and "limit must be" in data["error"], query
    # names with any character: quoted in the path, found, or a clean 404
    status, data, _ = await get(scenario, "/api/endpoints/a%2Fb%20%3Cx%3E", bearer())
    assert status == 404 and data["error"] == "no endpoint named 'a/b <x>'"
    status, _, page = await get(scenario, "/ui/endpoints/%3Cscript%3E", bearer())
    assert status == 404 and "<script>" not in page and "&lt;script&gt;" in page
    status, data, _ = await get(scenario, "/ui/static/../__init__.py", bearer())
    assert status == 404
    status, _, script = await get(scenario, "/ui/static/ui.js")  # assets need no token
    assert status == 200 and "innerHTML" not in script  # every value goes in as text


async def test_pages_carry_a_strict_content_security_policy(scenario: Scenario) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(scenario.base + "/ui", headers=bearer()) as answer,
    ):
        page = await answer.text()
        policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in page and "style=" not in page  # no inline script or style
    assert answer.headers["Cache-Control"] == "no-store"


async def test_endpoint_names_that_need_quoting_work(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    target = await start_target(aiohttp_server)
    name = "team a/b <é>"
    config = parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0", "token": TOKEN},
            "store": {"kind": "memory"},
            "notifications": {"endpoints": [{"name": name, "url": target.url}]},
        },
        source="ui-test",
    )
    relay = Relay(config)
    await relay.start()
    try:
        base = relay.url.rsplit("/events", 1)[0]
        from rxsinks._service.ui import endpoint_path

        async with aiohttp.ClientSession(headers=bearer()) as session:
            async with session.get(base + "/api" + endpoint_path(name)[3:]) as answer:
                assert answer.status == 200 and (await answer.json())["name"] == name
            async with session.get(base + endpoint_path(name)) as answer:
                page = await answer.text()
                assert answer.status == 200
                assert 'data-endpoint="team a/b &lt;é&gt;"' in page
    finally:
        await relay.stop(0)


async def test_replay_selected_in_the_sqlite_store_takes_only_those_ids(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        events = [rxsinks.Event.new("push", id=f"e{i}") for i in range(5)]
        seqs = await store.append(events, [["a", "b"]] * 5)
        await store.dead_letter("a", seqs, "422", 1)
        await store.dead_letter("b", seqs[:2], "500", 3)
        letters = await store.dead_letters()
        a_ids = [d.id for d in letters if d.endpoint == "a"]
        b_ids = [d.id for d in letters if d.endpoint == "b"]
        # ids of another endpoint, unknown ids: skipped
        replayed = await store.replay("a", ids=[a_ids[1], a_ids[3], b_ids[0], 999_999])
        assert replayed == [("a", seqs[1]), ("a", seqs[3])]
        assert [seq for seq, _ in await store.read("a", 0, 10)] == [seqs[1], seqs[3]]
        assert await store.replay(ids=[]) == []
        left = await store.dead_letters()
        assert [d.id for d in left] == [a_ids[0], a_ids[2], a_ids[4], *b_ids]
        assert await store.replay(ids=[b_ids[1]]) == [("b", seqs[1])]
    finally:
        await store.close()


def test_latency_percentiles_are_within_ten_percent() -> None:
    for seconds in (0.0003, 0.0042, 0.05, 0.31, 2.7, 45.0):
        bins = [0] * 100
        bins[latency_bin(seconds)] = 1
        estimate = percentile(bins, 0.5)
        assert estimate is not None and abs(estimate - seconds) / seconds < 0.1, seconds
    assert percentile([0] * 10, 0.5) is None
    assert latency_bin(0.0) == 0 and latency_bin(float("nan")) == 0
    assert latency_bin(1e9) == latency_bin(1e12)  # the last bin takes everything longer


def test_the_window_keeps_running_sums_right_as_samples_fall_out() -> None:
    history = History(["a"], scrub=str, clock=lambda: 100.0)
    slots = round(HISTORY / RESOLUTION)
    endpoint = history.endpoints["a"]
    for index in range(slots + 40):
        fast = index < 40  # the first 40 samples: fast deliveries, then slow ones
        endpoint.outcome(
            Outcome(OutcomeKind.DELIVERED, events=(1, 2), latency=0.002 if fast else 0.5), 1.0
        )
        history.sample({"a": index}, accepted=index * 3)
    # only the last `slots` samples count: every fast one has fallen out
    assert endpoint.rate() == pytest.approx(2 / RESOLUTION)
    p50 = endpoint.latency(0.5)
    assert p50 is not None and 0.45 < p50 < 0.55
    series = endpoint.series()
    assert len(series["pending"]) == slots and series["pending"][-1] == slots + 39
    assert history.accepted_rate() == pytest.approx(3 / RESOLUTION)


async def test_three_hundred_endpoints_answer_quickly(
    aiohttp_server: AiohttpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page's two API calls with 300 endpoints and full sparklines: timed and printed
    (``benchmarks/ui_api.py`` is the benchmark; no assertion on time here)."""
    target = await start_target(aiohttp_server)
    config = parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0", "token": TOKEN},
            "store": {"kind": "memory"},
            "notifications": {
                "endpoints": [
                    {"name": f"ep{i:03d}", "url": f"{target.url}?n={i}"} for i in range(300)
                ]
            },
        },
        source="ui-test",
    )
    relay = Relay(config)
    await relay.start()
    try:
        ui = relay.app[OPERATOR_UI]
        events = [rxsinks.Event.new("push", id=f"e{i}") for i in range(5)]
        await relay.accept(events)
        await until(lambda: len(target.received) == 1500, "every endpoint's deliveries")
        for _ in range(round(HISTORY / RESOLUTION)):
            await ui.sample()  # a full window of samples, as 5 minutes of running would leave
        base = relay.url.rsplit("/events", 1)[0]
        timings = []
        async with aiohttp.ClientSession(headers=bearer()) as session:
            for _ in range(5):
                started = time.perf_counter()
                async with session.get(base + "/api/endpoints") as answer:
                    rows = await answer.json()
                async with session.get(base + "/api/ingest") as answer:
                    await answer.json()
                timings.append(time.perf_counter() - started)
        assert len(rows) == 300 and all(r["successes"] == 5 for r in rows)
        assert all(len(r["series"]["pending"]) == round(HISTORY / RESOLUTION) for r in rows)
        with capsys.disabled():
            print(f"\n300 endpoints: page API answered in {min(timings) * 1000:.1f} ms at best")
    finally:
        await relay.stop(0)


async def test_the_sampler_runs_with_the_relay_and_stops_with_it(
    scenario: Scenario,
) -> None:
    ui = scenario.relay.app[OPERATOR_UI]
    before = ui.history.samples
    await asyncio.sleep(RESOLUTION * 1.6)
    assert ui.history.samples > before
    await scenario.relay.stop(0)
    stopped = ui.history.samples
    await asyncio.sleep(RESOLUTION * 1.2)
    assert ui.history.samples == stopped


async def test_demo_prints_the_page_and_lingers_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rxsinks",
        "demo",
        "--events",
        "60",
        "--quiet",
        "--linger",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        found = re.match(
            r"operator page: (http://127\.0\.0\.1:\d+/ui) \(log in with the token (\S+)\)", first
        )
        assert found is not None, first
        page, token = found.groups()
        second = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert second.startswith("the relay keeps running for 60 s: open " + page)
        async with aiohttp.ClientSession(headers=bearer(token)) as session:
            async with session.get(page) as answer:
                assert answer.status == 200 and 'data-view="overview"' in await answer.text()
            async with session.get(page.replace("/ui", "/api/endpoints")) as answer:
                rows = await answer.json()
        assert [row["name"] for row in rows] == ["healthy", "flaky", "no-pulls"]
        assert rows[0]["successes"] == 60  # the events had arrived before it lingered
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert time.monotonic() - started < 15  # ended early, not after 60 s
        assert process.returncode == 0, err.decode()
        assert out.decode().rstrip().endswith("OK")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_secret_echoed_back_by_a_receiver_is_masked(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    secret = "Bearer PLANTED-echoed-credential-77"
    from tests.endpoint_fixtures import refused_url

    refused = refused_url()  # nothing listens there

    async def echo(request: web.Request) -> web.Response:
        # a receiver that puts what it was sent into where it redirects: the error then quotes
        # that URL, whose path redaction keeps
        credential = request.headers["Authorization"].split()[1]
        return web.Response(status=307, headers={"Location": f"{refused}/{credential}"})

    app = web.Application()
    app.router.add_post("/hook", echo)
    server = await aiohttp_server(app)
    config = parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0", "token": TOKEN},
            "store": {"path": str(tmp_path / "echo.db")},
            "notifications": {
                "endpoints": [
                    {
                        "name": "echo",
                        "url": str(server.make_url("/hook")),
                        "headers": {"Authorization": [secret]},
                        "retry": {"maxattempts": 2},
                    }
                ]
            },
        },
        source="ui-test",
    )
    relay = Relay(config)
    await relay.start()
    try:
        await relay.accept([rxsinks.Event.new("push", id="e1")])
        await until(lambda: relay.endpoints[0].metrics().dead_letters == 1, "the dead letter")
        base = relay.url.rsplit("/events", 1)[0]
        async with aiohttp.ClientSession(headers=bearer()) as session:
            texts = []
            for path in (
                "/api/endpoints",
                "/api/endpoints/echo",
                "/api/endpoints/echo/dead-letters",
            ):
                async with session.get(base + path) as answer:
                    assert answer.status == 200
                    texts.append(await answer.text())
        everything = "\n".join(texts)
        assert "/hook/<redacted> failed" in everything  # the error is kept, the secret masked
        assert PLANTED not in everything
    finally:
        await relay.stop(0)
