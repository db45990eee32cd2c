"""Endpoint leases on Redis: which instance delivers for which endpoint.

Per-endpoint order needs one deliverer per endpoint at a time; several ``rxsinks serve``
instances sharing one :class:`~rxsinks.RedisStore` agree on it with leases::

    {prefix}:instance:{id}   "1", expires after ttl: this instance is alive
    {prefix}:lease:{name}    the holder's id, expires after ttl: who delivers for the endpoint

A :class:`LeaseManager` runs one round every ``ttl / 3`` seconds: it refreshes its instance key,
counts the live instances (SCAN), renews the leases it holds (compare-and-PEXPIRE in one Lua
script, so a lease that expired and was taken by another instance is never extended), gives up
leases above its fair share ``ceil(endpoints / live instances)`` and takes free ones up to it
(``SET NX PX``). So endpoints spread across instances, and when an instance dies its keys
expire and the others take its endpoints over within about ``ttl * 4 / 3`` seconds.

Safety: ``on_release(name)`` is awaited *before* a lease is given up on purpose, so the next
holder starts only after this one stopped. A lease that could not be renewed (taken over, or
Redis unreachable or slow) is reported with ``on_release`` at once: renewals run every
``ttl / 3``, so the instance stops at least ``ttl / 3`` before another one can take the lease,
provided the callbacks return quickly (``on_release`` must stop delivering at once, not drain;
``on_acquire`` must start delivering, not wait for it): they run inside the rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["LeaseCallback", "LeaseManager"]

log = logging.getLogger("rxsinks.lease")

LeaseCallback = Callable[[str], Awaitable[None] | None]
"""Called with an endpoint's name; may be a coroutine function."""

# KEYS: the leases to renew. ARGV: holder id, ttl in ms. Returns 1/0 per key.
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    out[i] = redis.call('PEXPIRE', key, ARGV[2])
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: the lease to give up. ARGV: holder id. Deletes it only if we still hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseManager:
    """Hold a fair share of the endpoint leases for this instance. See the module docstring.

    Args:
        redis: a ``redis://`` URL (the manager opens and closes its own client) or a
            ``redis.asyncio.Redis`` client (left open).
        instance_id: this instance's unique id (for example host name and pid).
        endpoints: every endpoint name (the same list on every instance).
        ttl: seconds a lease or an instance key lives without renewal.
        on_acquire: called when this instance becomes the deliverer for an endpoint.
        on_release: called when it stops being the deliverer (given up, lost, or stopping);
            it must stop delivering for that endpoint at once.
        prefix: the first part of every key (the same as the store's).

    Example:
        >>> leases = LeaseManager(url, "host-1", ["a", "b"], on_acquire=start, on_release=stop)
        >>> leases.start()  # doctest: +SKIP
        >>> await leases.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        redis: str | Redis,
        instance_id: str,
        endpoints: Sequence[str],
        *,
        ttl: float = 3.0,
        on_acquire: LeaseCallback | None = None,
        on_release: LeaseCallback | None = None,
        prefix: str = "rxsinks",
    ) -> None:
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError(f"LeaseManager needs a non-empty instance id, got {instance_id!r}")
        names = list(endpoints)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"endpoint names must be non-empty strings, got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique, got {names!r}")
        if not ttl > 0.05:
            raise ValueError(f"lease ttl must be more than 0.05 seconds, got {ttl!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"LeaseManager needs a non-empty key prefix, got {prefix!r}")
        self.instance_id = instance_id
        self.endpoints = names
        self.ttl = ttl
        self.prefix = prefix
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._ttl_ms = max(1, round(ttl * 1000))
        self._interval = ttl / 3
        if isinstance(redis, str):
            self._client = Redis.from_url(
                redis,
                decode_responses=True,
                socket_timeout=self._interval,
                socket_connect_timeout=self._interval,
            )
            self._owns_client = True
        else:
            self._client = redis
            self._owns_client = False
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        # try endpoints starting at an offset of our own, so that instances starting together
        # do not all race for the same first endpoint
        offset = zlib.crc32(instance_id.encode()) % len(names) if names else 0
        self._order = names[offset:] + names[:offset]
        self._held: list[str] = []
        self._live = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"LeaseManager({self.instance_id!r}, held={self._held!r})"

    @property
    def held(self) -> frozenset[str]:
        """The endpoints this instance delivers for now."""
        return frozenset(self._held)

    @property
    def live_instances(self) -> int:
        """Live instances counted in the last round (0 before the first one)."""
        return self._live

    async def holders(self) -> tuple[list[str], dict[str, str | None]]:
        """What Redis says now: the live instances' ids (sorted), and per endpoint the id of the
        instance holding its lease (``None``: free). For display; read within one interval.

        Raises:
            RedisError, OSError, TimeoutError: Redis did not answer in time.
        """
        pattern = _glob_escape(f"{self.prefix}:instance:") + "*"
        start = len(self._key("instance", ""))
        async with asyncio.timeout(self._interval):
            instances = sorted(
                [_text(key)[start:] async for key in self._client.scan_iter(match=pattern)]
            )
            keys = [self._key("lease", name) for name in self.endpoints]
            values = await self._client.mget(keys) if keys else []
        holders = {
            name: None if value is None else _text(value)
            for name, value in zip(self.endpoints, values, strict=True)
        }
        return instances, holders

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background rounds (needs a running event loop); idempotent."""
        if self._stopped:
            raise RuntimeError(f"lease manager {self.instance_id!r} was stopped")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"rxsinks-leases:{self.instance_id}"
            )

    async def stop(self, *, release: bool = True) -> None:
        """Stop the rounds, call ``on_release`` for every held lease, and give the leases and
        the instance key back so the others take over at once.

        Args:
            release: ``False`` leaves the keys in Redis to expire (what a crash does; also the
                choice when Redis is unreachable at shutdown).
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                # the round in progress finishes (it is bounded): cancelling it half way could
                # leave a lease taken in Redis that we do not know we hold
                await task
            for name in list(self._held):
                await self._give_up(name, delete=release)
            if release:
                try:
                    async with asyncio.timeout(self._interval):
                        await self._client.delete(self._key("instance", self.instance_id))
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("%s: removing the instance key failed: %s", self.instance_id, exc)
        finally:
            if self._owns_client:
                await self._client.aclose()

    # -- rounds --------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                await self._round()
            except Exception as exc:
                # we cannot prove we still hold anything: stop delivering everywhere
                if isinstance(exc, RedisError | OSError | TimeoutError):
                    log.warning("%s: lease round failed, releasing all: %s", self.instance_id, exc)
                else:
                    log.exception("%s: lease round failed, releasing all", self.instance_id)
                for name in list(self._held):
                    await self._give_up(name, delete=False)
            delay = max(0.0, started + self._interval - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _round(self) -> None:
        client = self._client
        held = list(self._held)
        # the round's Redis work is bounded by one interval, whatever client we were given, so
        # the next renewal is never late: a late renewal is as bad as a failed one
        deadline = asyncio.get_running_loop().time() + self._interval
        async with asyncio.timeout_at(deadline):
            await client.set(self._key("instance", self.instance_id), "1", px=self._ttl_ms)
            self._live = max(1, await self._count_instances())
            keys = [self._key("lease", name) for name in held]
            renewed = (
                await self._renew(keys, [self.instance_id, self._ttl_ms], client) if held else []
            )
        share = math.ceil(len(self.endpoints) / self._live)
        if held:
            for name, ok in zip(held, renewed, strict=True):
                if not int(ok):
                    log.warning("%s: lease of %r lost", self.instance_id, name)
                    await self._give_up(name, delete=False)
        # give back the most recently taken first: the oldest ones keep their deliverer
        while len(self._held) > share:
            await self._give_up(self._held[-1], delete=True)
        for name in self._order:
            if len(self._held) >= share or self._stopping.is_set():
                break
            if name in self._held:
                continue
            if asyncio.get_running_loop().time() >= deadline:
                break  # the rest waits for the next round
            key = self._key("lease", name)
            async with asyncio.timeout_at(deadline):
                taken = await client.set(key, self.instance_id, nx=True, px=self._ttl_ms)
            if taken:
                self._held.append(name)
                if not await self._call(self._on_acquire, name, "on_acquire"):
                    # could not start delivering: let another instance have it
                    self._held.remove(name)
                    await self._release([key], [self.instance_id], client)

    async def _count_instances(self) -> int:
        pattern = _glob_escape(f"{self.prefix}:instance:") + "*"
        count = 0
        async for _ in self._client.scan_iter(match=pattern, count=1000):
            count += 1
        return count

    async def _give_up(self, name: str, *, delete: bool) -> None:
        """Stop delivering for ``name`` (awaiting ``on_release``), then delete the lease if we
        still hold it, so the next holder starts only after we stopped."""
        if name not in self._held:
            return
        self._held.remove(name)
        await self._call(self._on_release, name, "on_release")
        if delete:
            try:
                async with asyncio.timeout(self._interval):
                    await self._release(
                        [self._key("lease", name)], [self.instance_id], self._client
                    )
            except (RedisError, OSError, TimeoutError) as exc:
                # it expires by itself within ttl
                log.warning("%s: giving up the lease of %r failed: %s", self.instance_id, name, exc)

    async def _call(self, callback: LeaseCallback | None, name: str, what: str) -> bool:
        if callback is None:
            return True
        try:
            result = callback(name)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s: %s(%r) failed", self.instance_id, what, name)
            return False
        return True


def _text(value: object) -> str:
    """A Redis reply as text (a client given to the manager may not decode replies)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
