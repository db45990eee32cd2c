"""The store on Redis Streams, shared by several relay instances.

Same contract and async API as :class:`~rxsinks._store.SQLiteStore` (ingest commits before it
answers 2xx; an endpoint's delivery is removed only after the receiver confirmed; after any crash
every accepted event reaches every endpoint that had not confirmed it, in seq order), but the
state lives in one Redis so that several ``rxsinks serve`` instances can ingest into it and
deliver from it. Which instance delivers for which endpoint is decided by
:class:`~rxsinks.LeaseManager`; this module only keeps the data.

Keys (``prefix`` defaults to ``rxsinks``; a Redis Cluster is not supported, the scripts touch
keys of several endpoints at once)::

    {prefix}:seq                global event counter (INCR)
    {prefix}:endpoints          set of every endpoint name ever routed to
    {prefix}:ep:{name}          stream: the endpoint's deliveries, entry id "<seq>-0", fields
                                e=body, t=when it was appended (unix seconds)
    {prefix}:rp:{name}          sorted set: replayed deliveries (member and score = seq)
    {prefix}:rpb:{name}         hash: seq -> body of the replayed deliveries
    {prefix}:dlseq              global dead-letter counter (INCR)
    {prefix}:dlq:{name}         stream: dead letters, entry id "<id>-0",
                                fields seq, body, error, attempts, time

Ordering: :meth:`RedisStore.append` is one Lua script that, per event, INCRs the global seq and
XADDs the body to each routed endpoint's stream with the explicit id ``<seq>-0``. Scripts run
one at a time in Redis, so even with several instances ingesting concurrently every stream holds
its entries in seq order, and a stream's entry id *is* the event's seq.

Replay: a stream only takes ids above its last one, so a dead letter cannot go back into its
endpoint's stream at its original seq. Replayed deliveries go to the endpoint's replay set
instead (a sorted set by seq plus a hash of bodies); :meth:`RedisStore.read` merges the stream
and the replay set by seq, so a replayed event is delivered in its original place among
whatever is still queued (the same order SQLite gives). A durable queue that is already past
those seqs sees them when it next reads its backlog from the start (after a restart or a lease
change), exactly as with SQLite.

Durability: a call returns after Redis answered. With ``appendonly yes`` and ``appendfsync
always`` on the server that answer means "on disk"; with the default ``appendfsync everysec`` a
crash of Redis itself (not of rxsinks) can lose the last second. :meth:`RedisStore.open` warns
when the server keeps no append-only file. A script failing half way (Redis out of memory) is
not rolled back by Redis: the caller gets :class:`~rxsinks._store.StoreError` and must not
acknowledge, and the events already written are delivered anyway (at-least-once).

Compaction: confirmed deliveries are XDEL'd at once and Redis frees a stream's memory as its
nodes empty, so there is no event log to compact and no ``retention``: :meth:`RedisStore.compact`
does nothing and returns 0.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .._event import Event, encode_event
from .._exceptions import StoreError
from .._redact import redact_text, redact_url
from .sqlite import DeadLetterRecord, EndpointBacklog

__all__ = ["RedisStore"]

log = logging.getLogger("rxsinks.store")

Stored = tuple[int, Event]

_PAGE = 1000  # entries per round trip when walking a whole dead-letter stream
_MIN_VERSION = (6, 2)  # exclusive XRANGE bounds "(id"

# KEYS: seq, endpoints set, then one stream per distinct endpoint.
# ARGV: m, the time, the m endpoint names, then per event: body, k, k indexes (1-based) into the
# streams.
_APPEND = """
local m = tonumber(ARGV[1])
local now = ARGV[2]
if m > 0 then redis.call('SADD', KEYS[2], unpack(ARGV, 3, m + 2)) end
local pos = m + 3
local seqs = {}
while pos <= #ARGV do
  local body = ARGV[pos]
  local k = tonumber(ARGV[pos + 1])
  local seq = redis.call('INCR', KEYS[1])
  local id = string.format('%.0f', seq) .. '-0'
  for j = 1, k do
    redis.call('XADD', KEYS[2 + tonumber(ARGV[pos + 1 + j])], id, 'e', body, 't', now)
  end
  seqs[#seqs + 1] = seq
  pos = pos + 2 + k
end
return seqs
"""

# KEYS: ep, rp, rpb. ARGV: after, limit. Returns a flat list: seq, body, time, seq, body,
# time... (live ones first, then replayed ones; the caller merges by seq). The time is '' when
# unknown: a replayed delivery, or an entry written before streams kept it.
_READ = """
local out = {}
local live = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
for _, entry in ipairs(live) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
  out[#out + 1] = entry[2][4] or ''
end
local replayed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
for _, seq in ipairs(replayed) do
  local body = redis.call('HGET', KEYS[3], seq)
  if body then
    out[#out + 1] = seq
    out[#out + 1] = body
    out[#out + 1] = ''
  end
end
return out
"""

# KEYS: ep, rp, rpb, dlq, dlseq. ARGV: error, attempts, time, then the seqs.
_DEAD_LETTER = """
local moved = 0
for i = 4, #ARGV do
  local seq = ARGV[i]
  local id = seq .. '-0'
  local body = false
  local live = redis.call('XRANGE', KEYS[1], id, id)
  if #live > 0 then
    body = live[1][2][2]
    redis.call('XDEL', KEYS[1], id)
  else
    body = redis.call('HGET', KEYS[3], seq)
    if body then
      redis.call('ZREM', KEYS[2], seq)
      redis.call('HDEL', KEYS[3], seq)
    end
  end
  if body then
    local n = redis.call('INCR', KEYS[5])
    redis.call('XADD', KEYS[4], string.format('%.0f', n) .. '-0', 'seq', seq, 'body', body,
               'error', ARGV[1], 'attempts', ARGV[2], 'time', ARGV[3])
    moved = moved + 1
  end
end
return moved
"""

# KEYS: dlq, ep, rp, rpb. ARGV: after (dead-letter id), count, since ('' = no bound), the
# dead-letter ids to replay, comma-separated ('' = all).
# Returns {last id scanned, entries scanned, {id, seq, id, seq...} replayed}.
_REPLAY = """
local since = tonumber(ARGV[3])
local wanted = nil
if ARGV[4] ~= '' then
  wanted = {}
  for id in string.gmatch(ARGV[4], '[^,]+') do wanted[id] = true end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
local out = {}
local last = ARGV[1]
for _, entry in ipairs(entries) do
  local id = entry[1]
  last = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
  local f = {}
  local fields = entry[2]
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  if (since == nil or tonumber(f['time']) >= since) and (wanted == nil or wanted[last]) then
    local seq = f['seq']
    local sid = seq .. '-0'
    if #redis.call('XRANGE', KEYS[2], sid, sid) == 0 then
      redis.call('ZADD', KEYS[3], seq, seq)
      redis.call('HSET', KEYS[4], seq, f['body'])
    end
    redis.call('XDEL', KEYS[1], id)
    out[#out + 1] = last
    out[#out + 1] = seq
  end
end
return {last, #entries, out}
"""


class RedisStore:
    """A durable store for the relay's queues on Redis Streams. See the module docstring.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS,
            ``unix://`` for a socket).
        prefix: the first part of every key, so several relays can share one Redis.
        timeout: seconds a single Redis command may take (connect included) before it fails
            with :class:`~rxsinks._store.StoreError`.

    Example:
        >>> store = RedisStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> await store.open()  # doctest: +SKIP
    """

    def __init__(self, url: str, *, prefix: str = "rxsinks", timeout: float = 10.0) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"RedisStore needs a redis:// URL, got {url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"RedisStore needs a non-empty key prefix, got {prefix!r}")
        if timeout <= 0:
            raise ValueError(f"RedisStore timeout must be > 0 seconds, got {timeout!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._where = f"store {_redact(url)}"
        self._client: Redis | None = None
        self._closed = False
        self._scripts: dict[str, AsyncScript] = {}

    def __repr__(self) -> str:
        return f"RedisStore({_redact(self.url)!r}, prefix={self.prefix!r})"

    # -- keys ----------------------------------------------------------------------------------

    def _key(self, kind: str, name: str | None = None) -> str:
        return f"{self.prefix}:{kind}" if name is None else f"{self.prefix}:{kind}:{name}"

    def _endpoint_keys(self, name: str) -> tuple[str, str, str]:
        return self._key("ep", name), self._key("rp", name), self._key("rpb", name)

    # -- life cycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check the server; raises :class:`~rxsinks._store.StoreError` naming the
        URL (password hidden) when Redis cannot be reached or is too old."""
        if self._closed:
            raise StoreError(f"{self._where} is closed")
        if self._client is not None:
            return
        try:
            client = Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            )
        except ValueError as exc:
            raise StoreError(f"{self._where}: not a Redis URL: {redact_text(str(exc))}") from exc
        try:
            await client.ping()
            info = await client.info("server")
            version = _version(str(info.get("redis_version", "0")))
            if version < _MIN_VERSION:
                raise StoreError(
                    f"{self._where}: Redis {info.get('redis_version')} is too old, "
                    f"need {'.'.join(map(str, _MIN_VERSION))} or later"
                )
            persistence = await client.info("persistence")
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StoreError(f"{self._where}: cannot reach Redis: {redact_text(str(exc))}") from exc
        except BaseException:
            await client.aclose()
            raise
        if str(persistence.get("aof_enabled", "1")) != "1":
            log.warning(
                "%s: the server keeps no append-only file: a restart of Redis loses every "
                "queued event (set appendonly yes)",
                self._where,
            )
        self._client = client
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("append", _APPEND),
                ("read", _READ),
                ("dead_letter", _DEAD_LETTER),
                ("replay", _REPLAY),
            )
        }

    async def close(self) -> None:
        """Close the connections (everything written is already in Redis)."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _redis(self) -> Redis:
        if self._client is None:
            state = "closed" if self._closed else "not open (call open() first)"
            raise StoreError(f"{self._where} is {state}")
        return self._client

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreError(f"{self._where}: {doing} failed: {redact_text(str(exc))}") from exc

    # -- the log -------------------------------------------------------------------------------

    async def append(self, events: Sequence[Event], routes: Sequence[Sequence[str]]) -> list[int]:
        """Commit ``events`` and, for each, a delivery to every endpoint in ``routes[i]``.

        One atomic script: the events get consecutive seqs of the global counter, and each
        endpoint's stream receives them in that order. Returns the seqs once Redis answered.

        Raises:
            StoreError: Redis refused or could not be reached; the caller must not acknowledge.
            ValueError: ``routes`` does not have one entry per event.
        """
        if len(routes) != len(events):
            raise ValueError(f"append: {len(events)} events but {len(routes)} routes")
        if not events:
            return []
        index: dict[str, int] = {}
        args: list[str | int] = []
        for event, names in zip(events, routes, strict=True):
            targets = [
                index.setdefault(_name(name), len(index) + 1) for name in dict.fromkeys(names)
            ]
            args += [encode_event(event), len(targets), *targets]
        streams = [self._key("ep", name) for name in index]
        keys = [self._key("seq"), self._key("endpoints"), *streams]
        client = self._redis()
        with self._errors("append"):
            seqs = await self._scripts["append"](
                keys, [len(index), repr(time.time()), *index, *args], client
            )
        return [int(seq) for seq in seqs]

    async def read(self, endpoint: str, after: int, limit: int) -> list[Stored]:
        """Undelivered events of ``endpoint`` with seq > ``after``, in seq order, at most
        ``limit`` (live and replayed deliveries merged)."""
        return [(seq, event) for seq, event, _ in await self.read_arrivals(endpoint, after, limit)]

    async def read_arrivals(
        self, endpoint: str, after: int, limit: int
    ) -> list[tuple[int, Event, float | None]]:
        """Like :meth:`read`, each event with when it was appended (unix seconds; ``None`` for
        a replayed delivery)."""
        after = _count("after", after)
        if limit < 1:
            raise ValueError(f"read: limit must be >= 1, got {limit!r}")
        client = self._redis()
        with self._errors(f"read of {endpoint!r}"):
            flat = await self._scripts["read"](
                list(self._endpoint_keys(_name(endpoint))), [after, limit], client
            )
        rows = sorted((_seq(flat[i]), flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3))[
            :limit
        ]
        return [
            (seq, Event._from_text(body), float(when) if when else None) for seq, body, when in rows
        ]

    async def tail(self, endpoint: str, after: int, limit: int, wait: float = 1.0) -> list[Stored]:
        """New events of ``endpoint``'s stream with seq > ``after``, waiting up to ``wait``
        seconds for the first one (XREAD BLOCK); ``[]`` when none came.

        This is how the instance delivering for an endpoint learns about events that another
        instance ingested. Replayed deliveries are not included (:meth:`read` has them).
        """
        after = _count("after", after)
        if limit < 1:
            raise ValueError(f"tail: limit must be >= 1, got {limit!r}")
        # a blocking read must end before the socket timeout, or it would count as a failure
        block = max(1, int(min(wait, self.timeout / 2) * 1000))
        client = self._redis()
        stream = self._key("ep", _name(endpoint))
        with self._errors(f"tail of {endpoint!r}"):
            reply: Any = await client.xread({stream: f"{after}-0"}, count=limit, block=block)
        rows: list[Stored] = []
        for _, entries in reply or ():
            rows += [(_seq(id_), Event._from_text(fields["e"])) for id_, fields in entries]
        return rows

    async def backlog(self, endpoint: str) -> tuple[int, int]:
        """How many deliveries ``endpoint`` has to do, and the highest seq in the log."""
        stream, replay, _ = self._endpoint_keys(_name(endpoint))
        client = self._redis()
        with self._errors(f"backlog of {endpoint!r}"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.xlen(stream)
                pipe.zcard(replay)
                pipe.get(self._key("seq"))
                live, replayed, top = await pipe.execute()
        return int(live) + int(replayed), int(top or 0)

    async def pending(self, endpoint: str | None = None) -> int:
        """How many deliveries are still to do (for one endpoint, or all)."""
        client = self._redis()
        with self._errors("pending count"):
            if endpoint is None:
                names = await self._members()
            else:
                names = [_name(endpoint)]
            async with client.pipeline(transaction=True) as pipe:
                for name in names:
                    stream, replay, _ = self._endpoint_keys(name)
                    pipe.xlen(stream)
                    pipe.zcard(replay)
                counts = await pipe.execute()
        return sum(int(count) for count in counts)

    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None:
        """The receiver confirmed these events: never deliver them to ``endpoint`` again."""
        if not seqs:
            return
        stream, replay, bodies = self._endpoint_keys(_name(endpoint))
        numbers = [str(_count("seq", seq)) for seq in seqs]
        client = self._redis()
        with self._errors(f"confirm for {endpoint!r}"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.xdel(stream, *(f"{seq}-0" for seq in numbers))
                pipe.zrem(replay, *numbers)
                pipe.hdel(bodies, *numbers)
                await pipe.execute()

    async def dead_letter(
        self, endpoint: str, seqs: Sequence[int], error: str, attempts: int
    ) -> None:
        """Move these deliveries to the endpoint's dead letters, with the reason (atomically).

        A seq no longer queued for ``endpoint`` (already confirmed) is skipped: there is no
        event log to take its body from, and it was delivered.
        """
        if not seqs:
            return
        name = _name(endpoint)
        keys = [*self._endpoint_keys(name), self._key("dlq", name), self._key("dlseq")]
        numbers = [str(_count("seq", seq)) for seq in seqs]
        client = self._redis()
        with self._errors(f"dead letter for {endpoint!r}"):
            await self._scripts["dead_letter"](
                keys, [str(error), int(attempts), repr(time.time()), *numbers], client
            )

    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None, limit: int = 10_000
    ) -> list[DeadLetterRecord]:
        """Dead letters, oldest first (optionally for one endpoint, given up since a time)."""
        if limit < 1:
            raise ValueError(f"dead_letters: limit must be >= 1, got {limit!r}")
        client = self._redis()
        records: list[DeadLetterRecord] = []
        with self._errors("listing dead letters"):
            for name in await self._names(endpoint):
                records += await self._letters_of(client, name, since, limit)
        records.sort(key=lambda record: record.id)
        return records[:limit]

    async def _letters_of(
        self, client: Redis, name: str, since: float | None, limit: int
    ) -> list[DeadLetterRecord]:
        found: list[DeadLetterRecord] = []
        start = "-"
        while len(found) < limit:
            page: Any = await client.xrange(self._key("dlq", name), start, "+", count=_PAGE)
            for id_, fields in page:
                given_up = float(fields["time"])
                if since is not None and given_up < since:
                    continue
                found.append(
                    DeadLetterRecord(
                        id=_seq(id_),
                        endpoint=name,
                        seq=int(fields["seq"]),
                        event=Event._from_text(fields["body"]),
                        error=fields["error"],
                        attempts=int(fields["attempts"]),
                        time=given_up,
                    )
                )
            if len(page) < _PAGE:
                break
            start = f"({page[-1][0]}"
        return found[:limit]

    async def replay(
        self,
        endpoint: str | None = None,
        since: float | None = None,
        *,
        ids: Collection[int] | None = None,
    ) -> list[tuple[str, int]]:
        """Put dead letters back on their endpoints' queues at their original seqs; returns
        (endpoint, seq) replayed, oldest dead letter first. ``ids`` (the records' ids) replays
        only those of them; unknown ids are skipped."""
        client = self._redis()
        done: list[tuple[int, str, int]] = []
        bound = "" if since is None else repr(float(since))
        wanted = "" if ids is None else ",".join(str(int(i)) for i in sorted(set(ids)))
        if ids is not None and not wanted:
            return []
        with self._errors("replay"):
            for name in await self._names(endpoint):
                keys = [self._key("dlq", name), *self._endpoint_keys(name)]
                after = "0"
                while True:
                    # paged, so one script never holds Redis for a whole dead-letter stream
                    last, scanned, flat = await self._scripts["replay"](
                        keys, [after, _PAGE, bound, wanted], client
                    )
                    done += [(int(flat[i]), name, int(flat[i + 1])) for i in range(0, len(flat), 2)]
                    if int(scanned) < _PAGE:
                        break
                    after = str(last)
        done.sort()
        touched = {name for _, name, _ in done}
        if touched:
            # the relay delivering for an endpoint may be another process: it watches this
            # counter and re-reads its backlog when it moves (replayed seqs are behind it)
            with self._errors("replay"):
                for name in touched:
                    await client.incr(self._key("rpgen", name))
        return [(name, seq) for _, name, seq in done]

    async def replay_generation(self, endpoint: str) -> int:
        """A counter that moves whenever dead letters of ``endpoint`` are replayed."""
        client = self._redis()
        with self._errors(f"replay generation of {endpoint!r}"):
            value = await client.get(self._key("rpgen", _name(endpoint)))
        return int(value or 0)

    async def compact(self, endpoints: Collection[str] | None = None) -> int:
        """Nothing to compact on Redis (see the module docstring); returns 0."""
        self._redis()
        return 0

    async def endpoints(self) -> list[str]:
        """Endpoint names that have deliveries or dead letters in the store."""
        return [backlog.endpoint for backlog in await self.backlogs()]

    async def backlogs(self) -> list[EndpointBacklog]:
        """Every endpoint with deliveries or dead letters in the store, by name."""
        client = self._redis()
        with self._errors("listing endpoints"):
            names = await self._members()
            async with client.pipeline(transaction=True) as pipe:
                for name in names:
                    stream, replay, _ = self._endpoint_keys(name)
                    pipe.xlen(stream)
                    pipe.zcard(replay)
                    pipe.xlen(self._key("dlq", name))
                counts = await pipe.execute()
        found = []
        for i, name in enumerate(names):
            live, replayed, dead = (int(count) for count in counts[3 * i : 3 * i + 3])
            if live or replayed or dead:
                found.append(EndpointBacklog(name, live + replayed, dead))
        return found

    async def drop_endpoint(self, endpoint: str) -> EndpointBacklog:
        """Delete everything the store keeps for ``endpoint``; returns what was deleted."""
        name = _name(endpoint)
        before = {backlog.endpoint: backlog for backlog in await self.backlogs()}
        client = self._redis()
        stream, replay, bodies = self._endpoint_keys(name)
        with self._errors(f"dropping endpoint {name!r}"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(stream, replay, bodies, self._key("dlq", name))
                pipe.srem(self._key("endpoints"), name)
                await pipe.execute()
        return before.get(name, EndpointBacklog(name, 0, 0))

    async def move_endpoint(self, old: str, new: str) -> EndpointBacklog:
        """Not possible on Redis: a stream's entries keep their ids (see the module docstring).

        Raises:
            StoreError: always, saying what to do instead.
        """
        raise StoreError(
            f"{self._where}: moving an endpoint's backlog is not supported on Redis; replay "
            f"its dead letters under the old name, or drop it (`rxsinks store drop-endpoint "
            f"{old}`)"
        )

    async def probe(self) -> None:
        """Write a small key, to learn whether Redis takes writes again.

        Raises:
            StoreError: it does not (out of memory, unreachable).
        """
        client = self._redis()
        with self._errors("a test write"):
            await client.set(self._key("probe"), f"{time.time()} " + "x" * 1024)

    async def _names(self, endpoint: str | None) -> list[str]:
        if endpoint is not None:
            return [_name(endpoint)]
        return await self._members()

    async def _members(self) -> list[str]:
        members: Any = await self._redis().smembers(self._key("endpoints"))
        return sorted(str(member) for member in members)


def _name(endpoint: Any) -> str:
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError(f"an endpoint name must be a non-empty string, got {endpoint!r}")
    return endpoint


def _count(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def _seq(stream_id: str | int) -> int:
    """The seq (or dead-letter id) in a stream entry id ``<n>-0`` (or a bare number)."""
    return int(str(stream_id).partition("-")[0])


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _redact(url: str) -> str:
    """``url`` as error messages show it (they end up in logs): see rxsinks._redact."""
    return redact_url(url)
