"""Endpoint leases against a real ``redis-server``: spread, failover, loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
import redis.asyncio

from rxsinks._store.lease import LeaseManager

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]  # the redis_server, redis_url and own_redis fixtures

ENDPOINTS = ["a", "b", "c", "d"]
TTL = 0.6  # short, so failover takes about a second; the bound below is generous
DEADLINE = 10.0


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds, failing after :data:`DEADLINE` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.02)


class Deliverers:
    """Who delivers for which endpoint, as the callbacks tell; fails on two at once."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.log: list[tuple[str, str, str]] = []
        self.overlaps: list[str] = []

    def manager(self, url: str, instance: str, **options: object) -> LeaseManager:
        async def acquire(name: str) -> None:
            if name in self.owner:
                self.overlaps.append(f"{instance} took {name} from {self.owner[name]}")
            self.owner[name] = instance
            self.log.append(("acquire", instance, name))

        def release(name: str) -> None:
            if self.owner.get(name) == instance:
                del self.owner[name]
            self.log.append(("release", instance, name))

        return LeaseManager(
            url,
            instance,
            ENDPOINTS,
            ttl=TTL,
            on_acquire=acquire,
            on_release=release,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    opened = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield opened
    await opened.aclose()


async def test_two_instances_share_four_endpoints_two_each(redis_url: str) -> None:
    who = Deliverers()
    one, two = who.manager(redis_url, "one"), who.manager(redis_url, "two")
    one.start()
    # alone, the first instance takes everything
    await eventually(lambda: one.held == set(ENDPOINTS), "one holds all four")
    two.start()
    try:
        await eventually(
            lambda: len(one.held) == 2 and len(two.held) == 2, "two each after rebalancing"
        )
        assert one.held | two.held == set(ENDPOINTS)
        assert one.live_instances == 2 and two.live_instances == 2
        assert who.owner == {name: "one" for name in one.held} | {n: "two" for n in two.held}
        assert who.overlaps == []  # the given-up lease was released before it was taken
    finally:
        await one.stop()
        await two.stop()
    assert who.owner == {}


async def test_a_dead_instances_endpoints_move_to_the_survivor(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    who = Deliverers()
    one, two = who.manager(redis_url, "one"), who.manager(redis_url, "two")
    one.start()
    two.start()
    try:
        await eventually(lambda: len(one.held) == 2 and len(two.held) == 2, "two each")
        lost = set(one.held)
        # simulated SIGKILL: the rounds stop, nothing is given back in Redis
        await one.stop(release=False)
        await eventually(lambda: two.held == set(ENDPOINTS), "the survivor holds all four")
        assert {name for kind, inst, name in who.log if (kind, inst) == ("acquire", "two")} >= lost
        assert await client.get("rxsinks:lease:" + sorted(lost)[0]) == "two"
        assert who.overlaps == []
    finally:
        await two.stop()


async def test_graceful_stop_hands_over_and_cleans_up(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    who = Deliverers()
    one, two = who.manager(redis_url, "one"), who.manager(redis_url, "two")
    one.start()
    two.start()
    try:
        await eventually(lambda: len(one.held) == 2 and len(two.held) == 2, "two each")
        given, before = set(one.held), len(who.log)
        await one.stop()
        assert one.held == set()
        # stop lets the round in progress finish, and that round keeps the fair share of 2
        assert {name for kind, inst, name in who.log[before:] if inst == "one"} == given
        assert all(kind == "release" for kind, inst, _ in who.log[before:] if inst == "one")
        assert await client.exists("rxsinks:instance:one") == 0
        await eventually(lambda: two.held == set(ENDPOINTS), "two takes the handed-over ones")
        assert who.overlaps == []
    finally:
        await two.stop()
    assert await client.keys("rxsinks:*") == []


async def test_a_lease_taken_over_is_released_at_once(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    who = Deliverers()
    alone = who.manager(redis_url, "alone")
    alone.start()
    try:
        await eventually(lambda: alone.held == set(ENDPOINTS), "holds all four")
        # somebody else holds "b" now (as after a pause longer than the ttl)
        await client.set("rxsinks:lease:b", "intruder", px=60_000)
        await eventually(lambda: "b" not in alone.held, "the lost lease is dropped")
        assert ("release", "alone", "b") in who.log
        assert "b" not in who.owner
        assert await client.get("rxsinks:lease:b") == "intruder"  # never renewed nor deleted
        assert alone.held == {"a", "c", "d"}
    finally:
        await alone.stop()
    assert await client.get("rxsinks:lease:b") == "intruder"  # stop only gives back its own


async def test_redis_going_away_releases_every_lease(own_redis: RedisServer) -> None:
    who = Deliverers()
    manager = who.manager(own_redis.url, "solo")
    manager.start()
    try:
        await eventually(lambda: manager.held == set(ENDPOINTS), "holds all four")
        own_redis.kill()
        await eventually(lambda: manager.held == set(), "everything released")
        assert who.owner == {}
        own_redis.start()  # back (same port, data from the append-only file)
        await eventually(lambda: manager.held == set(ENDPOINTS), "taken again after recovery")
    finally:
        await manager.stop()


async def test_a_failing_on_acquire_gives_the_lease_back(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    attempts: list[str] = []

    def refuse(name: str) -> None:
        attempts.append(name)
        raise RuntimeError(f"cannot start {name}")

    manager = LeaseManager(redis_url, "picky", ["a"], ttl=TTL, on_acquire=refuse)
    manager.start()
    try:
        await eventually(lambda: len(attempts) >= 2, "on_acquire tried again")
        assert manager.held == set()
    finally:
        await manager.stop()
    assert await client.exists("rxsinks:lease:a") == 0


def test_bad_arguments_are_clear_errors() -> None:
    url = "redis://127.0.0.1:1/0"
    with pytest.raises(ValueError, match="instance id"):
        LeaseManager(url, "", ["a"])
    with pytest.raises(ValueError, match="unique"):
        LeaseManager(url, "x", ["a", "a"])
    with pytest.raises(ValueError, match="non-empty strings"):
        LeaseManager(url, "x", ["a", ""])
    with pytest.raises(ValueError, match="ttl"):
        LeaseManager(url, "x", ["a"], ttl=0)
