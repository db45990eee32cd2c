"""The operator page of relays sharing a real ``redis-server``: instances, leases, replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio

import rxsinks
from rxsinks._service.config import parse_config
from rxsinks._service.relay import Relay
from rxsinks._service.ui import OPERATOR_UI
from rxsinks._store.redis import RedisStore
from tests.serve import until
from tests.ui_scenario import PLANTED, TOKEN, AiohttpServer, bearer, start_target

pytest_plugins = ["tests.redis_server"]  # the redis_server and redis_url fixtures

NAMES = ("alpha", "beta", "gamma", "delta")


async def api(relay: Relay, path: str) -> Any:
    base = relay.url.rsplit("/events", 1)[0]
    async with (
        aiohttp.ClientSession(headers=bearer()) as session,
        session.get(base + path) as answer,
    ):
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def test_each_instance_shows_who_holds_which_endpoint(
    aiohttp_server: AiohttpServer, tmp_path: Path, redis_url: str
) -> None:
    target = await start_target(aiohttp_server)
    # a Redis user of its own, whose name and password in the store URL must never show
    admin = redis.asyncio.Redis.from_url(redis_url)
    await admin.execute_command(
        "ACL", "SETUSER", "ui-PLANTED", "on", ">pw-PLANTED-9e1", "~*", "&*", "+@all"
    )
    store_url = redis_url.replace("redis://", "redis://ui-PLANTED:pw-PLANTED-9e1@", 1)
    config = parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0", "token": TOKEN},
            "store": {"url": store_url},
            "notifications": {
                "endpoints": [{"name": name, "url": f"{target.url}?to={name}"} for name in NAMES]
            },
        },
        source="ui-test",
    )
    one, two = Relay(config), Relay(config)
    await one.start()
    await two.start()
    try:
        # the leases spread: two endpoints each
        await until(
            lambda: len(one.delivering) == 2 and len(two.delivering) == 2, "the leases spread"
        )
        for relay in (one, two):
            await relay.app[OPERATOR_UI].sample()  # (the sampler reads the leases every 2 s)
        ingest = await api(one, "/api/ingest")
        shared = ingest["redis"]
        assert shared["error"] is None and shared["free"] == []
        holds = {item["id"]: sorted(item["endpoints"]) for item in shared["instances"]}
        assert holds == {
            one.instance_id: sorted(one.delivering),
            two.instance_id: sorted(two.delivering),
        }
        assert [item["self"] for item in shared["instances"]] == [
            item["id"] == one.instance_id for item in shared["instances"]
        ]
        assert ingest["store"]["kind"] == "redis"
        assert ingest["store"]["where"].startswith("redis://***@127.0.0.1:")
        assert (ingest["endpoints"], ingest["delivering"]) == (4, 2)

        rows = {row["name"]: row for row in await api(one, "/api/endpoints")}
        for name in NAMES:
            if name in one.delivering:
                assert rows[name]["state"] == "delivering", name
                assert rows[name]["held_by"] == one.instance_id
            else:
                assert rows[name]["state"] == "not_held", name
                assert rows[name]["held_by"] == two.instance_id
                assert (
                    rows[name]["state_text"]
                    == f"not held by this instance (held by {two.instance_id})"
                )

        # events accepted by one instance reach every endpoint, whoever holds it
        events = [rxsinks.Event.new("push", id=f"e{i}") for i in range(3)]
        await one.accept(events)
        await until(lambda: len(target.received) == 12, "every endpoint's deliveries")
        # each holder's page heard the attempts of the endpoint objects its leases created
        for relay in (one, two):
            for name in relay.delivering:
                detail = await api(relay, f"/api/endpoints/{name}")
                assert detail["successes"] == 3, (relay.instance_id, name)
                assert [a["result"] for a in detail["attempts"]] == ["200 OK"] * 3
        assert PLANTED not in json.dumps(ingest) + json.dumps(rows)
    finally:
        await one.stop(0)
        await two.stop(0)
        await admin.execute_command("ACL", "DELUSER", "ui-PLANTED")
        await admin.aclose()


async def test_replay_selected_in_the_redis_store_takes_only_those_ids(redis_url: str) -> None:
    store = RedisStore(redis_url)
    await store.open()
    try:
        events = [rxsinks.Event.new("push", id=f"e{i}") for i in range(5)]
        seqs = await store.append(events, [["a", "b"]] * 5)
        await store.dead_letter("a", seqs, "422", 1)
        await store.dead_letter("b", seqs[:2], "500", 3)
        letters = await store.dead_letters()
        a_ids = [d.id for d in letters if d.endpoint == "a"]
        b_ids = [d.id for d in letters if d.endpoint == "b"]
        replayed = await store.replay("a", ids=[a_ids[1], a_ids[3], b_ids[0], 999_999])
        assert replayed == [("a", seqs[1]), ("a", seqs[3])]
        assert [seq for seq, _ in await store.read("a", 0, 10)] == [seqs[1], seqs[3]]
        assert await store.replay(ids=[]) == []
        left = await store.dead_letters()
        assert sorted(d.id for d in left) == sorted([a_ids[0], a_ids[2], a_ids[4], *b_ids])
        assert await store.replay(ids=[b_ids[1]]) == [("b", seqs[1])]
    finally:
        await store.close()
