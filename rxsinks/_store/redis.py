"""The store on Redis Streams, shared by several relay instances.

Same contract and async API as :class:`~rxsinks._store.SQLiteStore` (ingest commits before it
answers 2xx; an endpoint's delivery is removed only after the receiver confirmed; after any crash
every accepted event reaches every endpoint that had not confirmed it, in seq order), but the
state lives in one Redis so that several ``rxsinks serve`` instances can ingest into it and
deliver from it. Which instance delivers for which endpoint is decided by
:class:`~rxsinks.LeaseManager`; this module only keeps the data.

An event is stored **once**, whatever the number of endpoints it is routed to; each endpoint
has a delivery cursor into that one log. Keys (``prefix`` defaults to ``rxsinks``; a Redis
Cluster is not supported, the scripts touch keys of several endpoints at once)::

    {prefix}:seq                global event counter
    {prefix}:events             stream: every event routed to at least one endpoint, entry id
                                "<seq>-0", fields e=body, t=when it was appended (unix
                                seconds), r=its route set's id
    {prefix}:routes             hash: route set (the sorted endpoint names, joined by a
                                newline) -> its id; events share route sets, so an event
                                routed to 300 endpoints stores one small integer for them
    {prefix}:routeseq           route set id counter
    {prefix}:route:{id}         set: the endpoint names of route set {id} (never changes)
    {prefix}:rcount             hash: route set id -> events appended with it
    {prefix}:endpoints          set of the endpoints whose cursors hold the log (see trimming)
    {prefix}:epr:{name}         set: the ids of the route sets that hold the endpoint
    {prefix}:cur:{name}         the delivery cursor: every seq up to it is confirmed, dead
                                lettered or not routed to the endpoint
    {prefix}:done:{name}        sorted set: seqs beyond the cursor confirmed or dead lettered
                                (blocks of different keys are confirmed in any order)
    {prefix}:settled:{name}     how many deliveries of the endpoint's route sets were confirmed
                                or dead lettered
    {prefix}:walk:{name}        "a b": the log entries in (a, b] hold nothing for the endpoint
                                (so a read does not scan them again)
    {prefix}:rp:{name}          sorted set: replayed deliveries (member and score = seq)
    {prefix}:rpb:{name}         hash: seq -> body of the replayed deliveries
    {prefix}:rpgen:{name}       counts the replays of the endpoint's dead letters
    {prefix}:dlseq              global dead-letter counter (INCR)
    {prefix}:dlq:{name}         stream: dead letters, entry id "<id>-0",
                                fields seq, body, error, attempts, time
    {prefix}:trimat             a key that lives 1 s: the log was trimmed at a confirm lately

Cost per event: :meth:`RedisStore.append` is one Lua script that reserves the batch's seqs
(INCRBY), XADDs each event once with the explicit id ``<seq>-0`` and adds the batch to the
counters of its route sets (HINCRBY per route set); a route set is interned the first time it
is seen (that once costs a command per endpoint in it). So an event costs one XADD and its
memory one stream entry, flat in the number of endpoints: with 300 endpoints, 1.4 Redis
commands and 250 bytes of Redis memory per pending event (registry events of 191 bytes,
appended 10 per call), as with 1 endpoint, where the previous layout (a stream per endpoint)
took 301 commands and 70,000 bytes (``benchmarks/redis_fanout.py``).
Scripts run one at a time in Redis, so even with several instances ingesting concurrently the
stream holds its entries in seq order and an entry id *is* the event's seq.

Reading: :meth:`RedisStore.read` runs a script that walks the stream from past the caller's
``after`` (and the endpoint's cursor), skipping entries whose route set does not hold the
endpoint and seqs in its done set. One script call looks at :data:`SCAN` entries at most and
says where it stopped, and the client calls again from there, so Redis is never held long by
an endpoint that gets few of the events. A stretch found empty moves the cursor when it starts
at the cursor, else it is noted in the endpoint's walk, which the next read (and
:meth:`RedisStore.tail`) jumps over: a sparse endpoint scans each entry once, not at every
poll.

Confirming: :meth:`RedisStore.confirm` adds the seqs to the done set, then moves the cursor
over what follows it that is done or not routed to the endpoint (the walk, then at most
:data:`ADVANCE` stream entries), dropping done seqs it passes; the done seqs are read once per
chunk of stream entries, so confirming blocks of 50 costs 0.26 commands per delivery.

Counts (:meth:`RedisStore.backlog`, :meth:`RedisStore.pending`, :meth:`RedisStore.backlogs`)
are the sum of the endpoint's route sets' counters minus its settled counter plus its replay
set: a few commands per endpoint, none per event. (A script failing half way through an
append, Redis out of memory, leaves the counters short of the entries written: a count that
would go below 0 shows 0.)

Replay: a dead letter goes back to its endpoint's replay set (a sorted set by seq plus a hash of
bodies), not into the stream; :meth:`RedisStore.read` merges the stream and the replay set by
seq, so a replayed event is delivered in its original place among whatever is still queued
(the same order SQLite gives). A durable queue that is already past those seqs sees them when
it next reads its backlog from the start (after a restart or a lease change), exactly as with
SQLite.

Trimming: stream entries at or below the smallest cursor of ``{prefix}:endpoints`` are done
for everybody and are XTRIM MINID'd (exact): by a confirm at most once a second and at most
:data:`TRIM_AT_CONFIRM` entries, and by :meth:`RedisStore.compact` (every 30 s in ``serve``),
which first moves every cursor over what it can and then trims :data:`TRIM_CHUNK` entries per
script call until it is done. An endpoint that is down holds the stream from its cursor on, as
it should; so does the backlog of an endpoint removed from the configuration, until
:meth:`RedisStore.drop_endpoint` deletes it (that takes the endpoint out of
``{prefix}:endpoints``, sets its cursor to the last seq, and forgets the route sets that held
it, so an event routed to it again makes new ones and brings it back).

Upgrading: the previous format kept a stream of deliveries per endpoint,
``{prefix}:ep:{name}``. :meth:`RedisStore.open` moves what such a stream still holds into the
endpoint's replay set (the seqs and bodies kept; when each event arrived is forgotten, so a
delivery delay does not hold it again) and deletes the stream, a thousand entries per script
call. Stop every instance of the previous version before starting this one.

Durability: a call returns after Redis answered. With ``appendonly yes`` and ``appendfsync
always`` on the server that answer means "on disk"; with the default ``appendfsync everysec`` a
crash of Redis itself (not of rxsinks) can lose the last second. :meth:`RedisStore.open` warns
when the server keeps no append-only file. A script failing half way (Redis out of memory) is
not rolled back by Redis: the caller gets :class:`~rxsinks._store.StoreError` and must not
acknowledge, and the events already written are delivered anyway (at-least-once).

Limits: :meth:`RedisStore.move_endpoint` is not supported (it raises
:class:`~rxsinks._store.StoreError` saying what to do instead): the endpoint's deliveries are
its membership in route sets that other endpoints share. Endpoint names may not contain a
newline (route sets are keyed by the names joined by newlines).
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
_MIN_VERSION = (6, 2)  # exclusive XRANGE bounds "(id", XTRIM MINID, ZMSCORE

SCAN = 4096
"""Stream entries one read script call looks at, at most (then the client calls again)."""
ADVANCE = 1024
"""Stream entries a confirm looks at, at most, to move the endpoint's cursor."""
TRIM_AT_CONFIRM = 1000
"""Stream entries a confirm trims, at most (and only once a second)."""
TRIM_CHUNK = 5000
"""Stream entries one script call of :meth:`RedisStore.compact` trims, at most."""
_MIGRATE_CHUNK = 1000  # entries of a previous-format stream moved per script call
_NAMES_CHUNK = 500  # endpoints counted per script call

# Lua shared by the scripts (each is sent as one text; Redis caches it by its SHA).
_LIB = """
local function fmt(n) return string.format('%.0f', n) end
local function sid(id) return string.sub(id, 1, string.find(id, '-', 1, true) - 1) end
-- whether route set rid holds the endpoint (cached for the script call, per endpoint)
local routed_cache = {}
local function routed(prefix, rid, name)
  local of = routed_cache[name]
  if of == nil then
    of = {}
    routed_cache[name] = of
  end
  local known = of[rid]
  if known == nil then
    known = redis.call('SISMEMBER', prefix .. ':route:' .. rid, name) == 1
    of[rid] = known
  end
  return known
end
local function get_walk(key)
  local w = redis.call('GET', key)
  if not w then return nil, nil end
  local sp = string.find(w, ' ', 1, true)
  return tonumber(string.sub(w, 1, sp - 1)), tonumber(string.sub(w, sp + 1))
end
-- note that stream entries in (a, b] hold nothing for the endpoint: extend the walk known when
-- it touches it, else replace it (reads go forward: the newest stretch is the useful one)
local function note_walk(key, wa, wb, a, b)
  if b <= a then return end
  if wa and wa <= a and a <= wb then
    if b > wb then redis.call('SET', key, fmt(wa) .. ' ' .. fmt(b)) end
  else
    redis.call('SET', key, fmt(a) .. ' ' .. fmt(b))
  end
end
-- the seqs of the done set among stream entries just read after seq `after` (one command per
-- chunk of entries, not one per entry)
local function done_among(donekey, after, entries)
  local done = {}
  if #entries > 0 then
    local last = sid(entries[#entries][1])
    for _, seq in ipairs(redis.call('ZRANGEBYSCORE', donekey, '(' .. fmt(after), last)) do
      done[seq] = true
    end
  end
  return done
end
-- move the cursor over what follows it that is done or not routed to the endpoint: the walk,
-- then at most `budget` stream entries; drop the done seqs it passed.
-- Returns the cursor and whether it stopped at an entry owed (or the stream's end).
local function advance(prefix, name, budget)
  local curkey = prefix .. ':cur:' .. name
  local donekey = prefix .. ':done:' .. name
  local walkkey = prefix .. ':walk:' .. name
  local events = prefix .. ':events'
  local first = tonumber(redis.call('GET', curkey) or '0')
  local cur = first
  local wa, wb = get_walk(walkkey)
  local scanned = 0
  local chunk = 64  -- usually an entry owed comes soon: fetch few bodies first
  local stopped = false
  while not stopped do
    if wa and wa <= cur and cur < wb then cur = wb end
    if scanned >= budget then break end
    local want = math.min(chunk, budget - scanned)
    local entries = redis.call('XRANGE', events, '(' .. fmt(cur) .. '-0', '+', 'COUNT', want)
    local done = done_among(donekey, cur, entries)
    for _, entry in ipairs(entries) do
      local seq = sid(entry[1])
      if routed(prefix, entry[2][6], name) and not done[seq] then
        stopped = true
        break
      end
      cur = tonumber(seq)
      scanned = scanned + 1
    end
    if #entries < want then stopped = true end
    chunk = math.min(chunk * 4, 1024)
  end
  if cur ~= first then
    redis.call('SET', curkey, fmt(cur))
    redis.call('ZREMRANGEBYSCORE', donekey, '-inf', fmt(cur))
  end
  if wb and cur >= wb then redis.call('DEL', walkkey) end
  return cur, stopped
end
-- XTRIM (exact) the stream entries at or below every endpoint's cursor, at most `most`
local function trim(prefix, most)
  local events = prefix .. ':events'
  local head = redis.call('XRANGE', events, '-', '+', 'COUNT', 1)
  if #head == 0 then return 0 end
  local low = tonumber(sid(head[1][1]))
  local upto = low + most - 1
  local names = redis.call('SMEMBERS', prefix .. ':endpoints')
  for i = 1, #names, 500 do
    local keys = {}
    for j = i, math.min(i + 499, #names) do keys[#keys + 1] = prefix .. ':cur:' .. names[j] end
    for _, cur in ipairs(redis.call('MGET', unpack(keys))) do
      local c = tonumber(cur or '0')
      if c < upto then upto = c end
    end
  end
  if upto < low then return 0 end
  return redis.call('XTRIM', events, 'MINID', fmt(upto + 1) .. '-0')
end
"""

# KEYS: seq, events, routes, routeseq, endpoints, rcount.
# ARGV: prefix, time, r, the r route sets (names joined by newlines), then per event: body, the
# index (1-based) of its route set, 0 when it is routed to nobody.
_APPEND = (
    _LIB
    + """
local prefix, now, r = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = {}
for i = 1, r do
  local joined = ARGV[3 + i]
  local id = redis.call('HGET', KEYS[3], joined)
  if not id then
    -- a new route set: its endpoints start after the last seq (unless they have a cursor)
    id = tostring(redis.call('INCR', KEYS[4]))
    local top = redis.call('GET', KEYS[1]) or '0'
    local names = {}
    for name in string.gmatch(joined, '[^\\n]+') do names[#names + 1] = name end
    redis.call('SADD', prefix .. ':route:' .. id, unpack(names))
    redis.call('SADD', KEYS[5], unpack(names))
    for _, name in ipairs(names) do
      redis.call('SADD', prefix .. ':epr:' .. name, id)
      redis.call('SET', prefix .. ':cur:' .. name, top, 'NX')
    end
    redis.call('HSET', KEYS[3], joined, id)
  end
  ids[i] = id
end
local n = (#ARGV - 3 - r) / 2
-- reserve the seqs first: a script failing half way must not leave ids to be taken again
local seq = redis.call('INCRBY', KEYS[1], n) - n
local counts = {}
local seqs = {}
for pos = 4 + r, #ARGV, 2 do
  seq = seq + 1
  local k = tonumber(ARGV[pos + 1])
  if k > 0 then
    redis.call('XADD', KEYS[2], fmt(seq) .. '-0', 'e', ARGV[pos], 't', now, 'r', ids[k])
    counts[k] = (counts[k] or 0) + 1
  end
  seqs[#seqs + 1] = seq
end
for k, count in pairs(counts) do redis.call('HINCRBY', KEYS[6], ids[k], count) end
return seqs
"""
)

# KEYS: events, cur, done, walk, rp, rpb.
# ARGV: prefix, name, start (scan after this seq), after (replays after this seq), limit,
# budget, 1 to include the replays.
# Returns {{seq, body, time, ...} found in the stream, {seq, body, ...} replayed, the last seq
# looked at, 1 when finished (limit found or end of stream), entries looked at}.
_READ = (
    _LIB
    + """
local prefix, name = ARGV[1], ARGV[2]
local start, limit, budget = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local wa, wb = get_walk(KEYS[4])
local s = math.max(start, cur)
if wa and wa <= s and s < wb then s = wb end
local hits = {}
local found, scanned, last, finished = 0, 0, s, false
local firsthit, lasthit = nil, nil
local chunk = math.min(budget, math.max(limit, 64))
while not finished do
  local want = math.min(chunk, budget - scanned)
  if want <= 0 then break end
  local entries = redis.call('XRANGE', KEYS[1], '(' .. fmt(last) .. '-0', '+', 'COUNT', want)
  local done = done_among(KEYS[3], last, entries)
  for _, entry in ipairs(entries) do
    local seq = sid(entry[1])
    local fields = entry[2]
    scanned = scanned + 1
    last = tonumber(seq)
    if routed(prefix, fields[6], name) and not done[seq] then
      hits[#hits + 1] = seq
      hits[#hits + 1] = fields[2]
      hits[#hits + 1] = fields[4]
      found = found + 1
      if not firsthit then firsthit = last end
      lasthit = last
      if found >= limit then break end
    end
  end
  if found >= limit or #entries < want then finished = true end
  chunk = math.min(chunk * 4, 1024)
end
if start <= cur then
  -- the scan began at the cursor: what it found empty moves the cursor
  local to = last
  if firsthit then to = firsthit - 1 end
  if to > cur then
    redis.call('SET', KEYS[2], fmt(to))
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(to))
    if wb and to >= wb then redis.call('DEL', KEYS[4]); wa, wb = nil, nil end
  end
  if lasthit then note_walk(KEYS[4], wa, wb, lasthit, last) end
else
  note_walk(KEYS[4], wa, wb, lasthit or s, last)
end
local replayed = {}
if ARGV[7] == '1' then
  local seqs = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. ARGV[4], '+inf', 'LIMIT', 0, limit)
  for _, seq in ipairs(seqs) do
    local body = redis.call('HGET', KEYS[6], seq)
    if body then
      replayed[#replayed + 1] = seq
      replayed[#replayed + 1] = body
    end
  end
end
return {hits, replayed, last, finished and 1 or 0, scanned}
"""
)

# KEYS: rp, rpb, done, settled, trimat. ARGV: prefix, name, the seqs.
_CONFIRM = (
    _LIB
    + """
local prefix, name = ARGV[1], ARGV[2]
local cur = tonumber(redis.call('GET', prefix .. ':cur:' .. name) or '0')
local settled = 0
local replayed = {}
if redis.call('ZCARD', KEYS[1]) > 0 then
  for i = 3, #ARGV, 1000 do
    local seqs = {unpack(ARGV, i, math.min(i + 999, #ARGV))}
    for j, score in ipairs(redis.call('ZMSCORE', KEYS[1], unpack(seqs))) do
      if score then replayed[seqs[j]] = true end
    end
  end
end
-- a few commands per call, not per seq: the replayed ones leave the replay set, the others
-- join the done set (ZADD NX counts those new to it: settled now)
local gone, pairs_ = {}, {}
for i = 3, #ARGV do
  local seq = ARGV[i]
  if replayed[seq] then
    gone[#gone + 1] = seq
  elseif tonumber(seq) > cur then
    pairs_[#pairs_ + 1] = seq
    pairs_[#pairs_ + 1] = seq
  end
  if #gone >= 1000 or i == #ARGV then
    if #gone > 0 then
      redis.call('ZREM', KEYS[1], unpack(gone))
      redis.call('HDEL', KEYS[2], unpack(gone))
      gone = {}
    end
  end
  if #pairs_ >= 2000 or i == #ARGV then
    if #pairs_ > 0 then
      settled = settled + redis.call('ZADD', KEYS[3], 'NX', unpack(pairs_))
      pairs_ = {}
    end
  end
end
if settled > 0 then redis.call('INCRBY', KEYS[4], settled) end
advance(prefix, name, """
    + str(ADVANCE)
    + """)
if redis.call('SET', KEYS[5], '1', 'PX', 1000, 'NX') then trim(prefix, """
    + str(TRIM_AT_CONFIRM)
    + """) end
return settled
"""
)

# KEYS: events, done, rp, rpb, settled, dlq, dlseq.
# ARGV: prefix, name, error, attempts, time, then the seqs.
_DEAD_LETTER = (
    _LIB
    + """
local prefix, name = ARGV[1], ARGV[2]
local cur = tonumber(redis.call('GET', prefix .. ':cur:' .. name) or '0')
local moved, settled = 0, 0
for i = 6, #ARGV do
  local seq = ARGV[i]
  local body = false
  if redis.call('ZSCORE', KEYS[3], seq) then
    body = redis.call('HGET', KEYS[4], seq)
    redis.call('ZREM', KEYS[3], seq)
    redis.call('HDEL', KEYS[4], seq)
  elseif tonumber(seq) > cur and not redis.call('ZSCORE', KEYS[2], seq) then
    local id = seq .. '-0'
    local live = redis.call('XRANGE', KEYS[1], id, id)
    if #live > 0 and routed(prefix, live[1][2][6], name) then
      body = live[1][2][2]
      redis.call('ZADD', KEYS[2], seq, seq)
      settled = settled + 1
    end
  end
  if body then
    local n = redis.call('INCR', KEYS[7])
    redis.call('XADD', KEYS[6], fmt(n) .. '-0', 'seq', seq, 'body', body,
               'error', ARGV[3], 'attempts', ARGV[4], 'time', ARGV[5])
    moved = moved + 1
  end
end
if settled > 0 then redis.call('INCRBY', KEYS[5], settled) end
advance(prefix, name, """
    + str(ADVANCE)
    + """)
return moved
"""
)

# KEYS: dlq, rp, rpb. ARGV: after (dead-letter id), count, since ('' = no bound), the
# dead-letter ids to replay, comma-separated ('' = all).
# Returns {last id scanned, entries scanned, {id, seq, id, seq...} replayed}.
# (A dead letter is settled in the stream: it goes back through the replay set.)
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
    redis.call('ZADD', KEYS[2], seq, seq)
    redis.call('HSET', KEYS[3], seq, f['body'])
    redis.call('XDEL', KEYS[1], id)
    out[#out + 1] = last
    out[#out + 1] = seq
  end
end
return {last, #entries, out}
"""

# ARGV: prefix, the names. Returns per name: deliveries to do, dead letters; then the last seq.
_COUNTS_LUA = """
local function pending_of(prefix, name)
  local total = 0
  local ids = redis.call('SMEMBERS', prefix .. ':epr:' .. name)
  if #ids > 0 then
    for _, count in ipairs(redis.call('HMGET', prefix .. ':rcount', unpack(ids))) do
      total = total + tonumber(count or '0')
    end
  end
  total = total - tonumber(redis.call('GET', prefix .. ':settled:' .. name) or '0')
  if total < 0 then total = 0 end
  return total + redis.call('ZCARD', prefix .. ':rp:' .. name)
end
"""
_COUNTS = (
    _COUNTS_LUA
    + """
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = pending_of(prefix, ARGV[i])
  out[#out + 1] = redis.call('XLEN', prefix .. ':dlq:' .. ARGV[i])
end
out[#out + 1] = tonumber(redis.call('GET', prefix .. ':seq') or '0')
return out
"""
)

# ARGV: prefix, budget, the names. Moves each endpoint's cursor (see advance); returns 1 per
# name when its cursor stopped at an entry owed or the end, 0 when the budget ran out.
_ADVANCE = (
    _LIB
    + """
local out = {}
for i = 3, #ARGV do
  local _, stopped = advance(ARGV[1], ARGV[i], tonumber(ARGV[2]))
  out[#out + 1] = stopped and 1 or 0
end
return out
"""
)

# ARGV: prefix, most. Returns the entries trimmed.
_TRIM = _LIB + "return trim(ARGV[1], tonumber(ARGV[2]))\n"

# ARGV: prefix, name. Returns the deliveries and dead letters deleted.
_DROP = (
    _COUNTS_LUA
    + """
local prefix, name = ARGV[1], ARGV[2]
local pending = pending_of(prefix, name)
local dead = redis.call('XLEN', prefix .. ':dlq:' .. name)
-- forget the route sets that hold it: an event routed to it again makes new ones (counted
-- afresh, and bringing it back to the endpoints set)
local routes = redis.call('HGETALL', prefix .. ':routes')
for i = 1, #routes, 2 do
  if redis.call('SISMEMBER', prefix .. ':route:' .. routes[i + 1], name) == 1 then
    redis.call('HDEL', prefix .. ':routes', routes[i])
  end
end
redis.call('SET', prefix .. ':cur:' .. name, redis.call('GET', prefix .. ':seq') or '0')
for _, kind in ipairs({'done', 'walk', 'rp', 'rpb', 'dlq', 'epr', 'settled'}) do
  redis.call('DEL', prefix .. ':' .. kind .. ':' .. name)
end
redis.call('SREM', prefix .. ':endpoints', name)
return {pending, dead}
"""
)

# KEYS: the previous format's stream of the endpoint, rp, rpb, endpoints. ARGV: name, count.
# Moves up to count entries into the replay set; returns how many.
_MIGRATE = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
local ids = {}
for _, entry in ipairs(entries) do
  local id = entry[1]
  local seq = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then
      redis.call('ZADD', KEYS[2], seq, seq)
      redis.call('HSET', KEYS[3], seq, fields[i + 1])
    end
  end
  ids[#ids + 1] = id
end
if #entries < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
elseif #ids > 0 then
  redis.call('XDEL', KEYS[1], unpack(ids))
end
redis.call('SADD', KEYS[4], ARGV[1])
return #entries
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
        self._routes: dict[str, frozenset[str]] = {}  # route set id -> names (see tail)

    def __repr__(self) -> str:
        return f"RedisStore({_redact(self.url)!r}, prefix={self.prefix!r})"

    # -- keys ----------------------------------------------------------------------------------

    def _key(self, kind: str, name: str | None = None) -> str:
        return f"{self.prefix}:{kind}" if name is None else f"{self.prefix}:{kind}:{name}"

    # -- life cycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check the server and move a previous format's data into this one (see the
        module docstring); raises :class:`~rxsinks._store.StoreError` naming the URL (password
        hidden) when Redis cannot be reached or is too old."""
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
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("append", _APPEND),
                ("read", _READ),
                ("confirm", _CONFIRM),
                ("dead_letter", _DEAD_LETTER),
                ("replay", _REPLAY),
                ("counts", _COUNTS),
                ("advance", _ADVANCE),
                ("trim", _TRIM),
                ("drop", _DROP),
                ("migrate", _MIGRATE),
            )
        }
        self._client = client
        try:
            await self._migrate(client)
        except BaseException:
            self._client = None
            await client.aclose()
            raise

    async def _migrate(self, client: Redis) -> None:
        """Move the previous format's per-endpoint streams into the replay sets."""
        pattern = _glob_escape(self.prefix) + ":ep:*"
        with self._errors("moving the previous format's queues"):
            old = [str(key) async for key in client.scan_iter(match=pattern, _type="stream")]
            for key in sorted(old):
                name = key[len(self.prefix) + len(":ep:") :]
                keys = [key, self._key("rp", name), self._key("rpb", name), self._key("endpoints")]
                moved = 0
                while True:
                    count = int(
                        await self._scripts["migrate"](keys, [name, _MIGRATE_CHUNK], client)
                    )
                    moved += count
                    if count < _MIGRATE_CHUNK:
                        break
                # a relay of this version already delivering for it reads its backlog again
                await client.incr(self._key("rpgen", name))
                log.info(
                    "%s: moved %d queued event(s) of endpoint %r from the previous format",
                    self._where,
                    moved,
                    name,
                )

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

        One atomic script: the events get consecutive seqs of the global counter and go into
        the stream once each, in that order, with their route set. Returns the seqs once Redis
        answered.

        Raises:
            StoreError: Redis refused or could not be reached; the caller must not acknowledge.
            ValueError: ``routes`` does not have one entry per event.
        """
        if len(routes) != len(events):
            raise ValueError(f"append: {len(events)} events but {len(routes)} routes")
        if not events:
            return []
        index: dict[str, int] = {}
        # the relay passes the same list for the events its filters route alike: sort and
        # join each list once, not once per event
        seen: dict[int, int] = {}
        args: list[str | int] = []
        for event, names in zip(events, routes, strict=True):
            route = seen.get(id(names))
            if route is None:
                joined = "\n".join(sorted({_name(name) for name in names}))
                route = seen[id(names)] = index.setdefault(joined, len(index) + 1) if joined else 0
            args += [encode_event(event), route]
        keys = [
            self._key(kind)
            for kind in ("seq", "events", "routes", "routeseq", "endpoints", "rcount")
        ]
        client = self._redis()
        with self._errors("append"):
            seqs = await self._scripts["append"](
                keys, [self.prefix, repr(time.time()), len(index), *index, *args], client
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
        a replayed delivery).

        The stream is scanned :data:`SCAN` entries per script call, as many calls as it takes
        to find ``limit`` events or reach its end (see the module docstring)."""
        after = _count("after", after)
        if limit < 1:
            raise ValueError(f"read: limit must be >= 1, got {limit!r}")
        name = _name(endpoint)
        keys = [
            self._key("events"),
            *(self._key(kind, name) for kind in ("cur", "done", "walk", "rp", "rpb")),
        ]
        client = self._redis()
        live: list[tuple[int, str, str]] = []
        replays: list[tuple[int, str, str]] = []
        start, first = after, True
        with self._errors(f"read of {endpoint!r}"):
            while True:
                hits, replayed, last, finished, _ = await self._scripts["read"](
                    keys,
                    [self.prefix, name, start, after, limit - len(live), SCAN, int(first)],
                    client,
                )
                live += [(int(hits[i]), hits[i + 1], hits[i + 2]) for i in range(0, len(hits), 3)]
                replays += [
                    (int(replayed[i]), replayed[i + 1], "") for i in range(0, len(replayed), 2)
                ]
                first = False  # (the replays after `after` came with the first call)
                if int(finished) or len(live) >= limit:
                    break
                start = int(last)
        rows = sorted(live + replays)
        return [
            (seq, Event._from_text(body), float(when) if when else None)
            for seq, body, when in rows[:limit]
        ]

    async def tail(self, endpoint: str, after: int, limit: int, wait: float = 1.0) -> list[Stored]:
        """New events of ``endpoint`` with seq > ``after``, waiting up to ``wait`` seconds for
        the first one (XREAD BLOCK on the shared stream, events of other endpoints skipped);
        ``[]`` when none came.

        This is how the instance delivering for an endpoint learns about events that another
        instance ingested. Replayed deliveries are not included (:meth:`read` has them).
        """
        after = _count("after", after)
        if limit < 1:
            raise ValueError(f"tail: limit must be >= 1, got {limit!r}")
        name = _name(endpoint)
        client = self._redis()
        deadline = time.monotonic() + wait
        with self._errors(f"tail of {endpoint!r}"):
            # start past what is known to hold nothing for the endpoint (its cursor, its walk)
            cursor, walk = await client.mget(self._key("cur", name), self._key("walk", name))
            position = max(after, int(cursor or 0))
            if walk:
                low, high = (int(part) for part in str(walk).split())
                if low <= position < high:
                    position = high
            while True:
                # a blocking read must end before the socket timeout, or it would count as a
                # failure
                left = min(deadline - time.monotonic(), self.timeout / 2)
                block = max(1, int(left * 1000))
                reply: Any = await client.xread(
                    {self._key("events"): f"{position}-0"}, count=max(limit, 100), block=block
                )
                entries = [entry for _, page in reply or () for entry in page]
                if not entries:
                    return []
                position = _seq(entries[-1][0])
                mine = [
                    (_seq(id_), fields["e"])
                    for id_, fields in entries
                    if name in await self._route(client, fields["r"])
                ]
                if mine:
                    scores = await client.zmscore(
                        self._key("done", name), [str(seq) for seq, _ in mine]
                    )
                    rows = [
                        (seq, Event._from_text(body))
                        for (seq, body), done in zip(mine, scores, strict=True)
                        if done is None
                    ]
                    if rows:
                        return rows[:limit]
                if time.monotonic() >= deadline:
                    return []

    async def _route(self, client: Redis, route: str) -> frozenset[str]:
        """The endpoint names of a route set (they never change: cached)."""
        names = self._routes.get(route)
        if names is None:
            members: Any = await client.smembers(self._key("route", route))
            names = self._routes[route] = frozenset(str(member) for member in members)
        return names

    async def _counts(self, names: Sequence[str]) -> tuple[list[tuple[int, int]], int]:
        """Per endpoint (deliveries to do, dead letters), and the last seq."""
        client = self._redis()
        counts: list[tuple[int, int]] = []
        top = 0
        for i in range(0, max(len(names), 1), _NAMES_CHUNK):
            chunk = names[i : i + _NAMES_CHUNK]
            flat = await self._scripts["counts"]([], [self.prefix, *chunk], client)
            counts += [(int(flat[j]), int(flat[j + 1])) for j in range(0, len(flat) - 1, 2)]
            top = int(flat[-1])
        return counts, top

    async def backlog(self, endpoint: str) -> tuple[int, int]:
        """How many deliveries ``endpoint`` has to do, and the highest seq in the log."""
        name = _name(endpoint)
        with self._errors(f"backlog of {endpoint!r}"):
            counts, top = await self._counts([name])
        return counts[0][0], top

    async def pending(self, endpoint: str | None = None) -> int:
        """How many deliveries are still to do (for one endpoint, or all)."""
        with self._errors("pending count"):
            counts, _ = await self._counts(await self._names(endpoint))
        return sum(pending for pending, _ in counts)

    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None:
        """The receiver confirmed these events: never deliver them to ``endpoint`` again.

        One atomic script: the seqs join the done set (or leave the replay set), the cursor
        moves over what is done, and at most once a second the stream is trimmed."""
        if not seqs:
            return
        name = _name(endpoint)
        numbers = [str(_count("seq", seq)) for seq in seqs]
        keys = [
            *(self._key(kind, name) for kind in ("rp", "rpb", "done", "settled")),
            self._key("trimat"),
        ]
        client = self._redis()
        with self._errors(f"confirm for {endpoint!r}"):
            await self._scripts["confirm"](keys, [self.prefix, name, *numbers], client)

    async def dead_letter(
        self, endpoint: str, seqs: Sequence[int], error: str, attempts: int
    ) -> None:
        """Move these deliveries to the endpoint's dead letters, with the reason (atomically).

        A seq no longer owed to ``endpoint`` (already confirmed) is skipped: it was delivered.
        """
        if not seqs:
            return
        name = _name(endpoint)
        keys = [
            self._key("events"),
            *(self._key(kind, name) for kind in ("done", "rp", "rpb", "settled", "dlq")),
            self._key("dlseq"),
        ]
        numbers = [str(_count("seq", seq)) for seq in seqs]
        client = self._redis()
        with self._errors(f"dead letter for {endpoint!r}"):
            await self._scripts["dead_letter"](
                keys,
                [self.prefix, name, str(error), int(attempts), repr(time.time()), *numbers],
                client,
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
                keys = [self._key("dlq", name), self._key("rp", name), self._key("rpb", name)]
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
        """Move every endpoint's cursor over what it has done, then trim the stream entries
        every endpoint is past, :data:`TRIM_CHUNK` per script call; returns how many.

        Args:
            endpoints: the endpoints being delivered for (the configured ones). Accepted for
                the :class:`~rxsinks._store.protocol.Store` protocol: every endpoint that
                has a cursor holds the stream (until it is dropped), configured or not.
        """
        del endpoints  # (see above)
        client = self._redis()
        removed = 0
        with self._errors("compaction"):
            names = await self._members()
            while names:
                # each call looks at SCAN entries per endpoint at most; those not done go again
                chunk, names = names[:_NAMES_CHUNK], names[_NAMES_CHUNK:]
                stopped = await self._scripts["advance"]([], [self.prefix, SCAN, *chunk], client)
                names += [name for name, done in zip(chunk, stopped, strict=True) if not done]
            while True:
                count = int(await self._scripts["trim"]([], [self.prefix, TRIM_CHUNK], client))
                removed += count
                if count < TRIM_CHUNK:
                    break
        return removed

    async def endpoints(self) -> list[str]:
        """Endpoint names that have deliveries or dead letters in the store."""
        return [backlog.endpoint for backlog in await self.backlogs()]

    async def backlogs(self) -> list[EndpointBacklog]:
        """Every endpoint with deliveries or dead letters in the store, by name."""
        with self._errors("listing endpoints"):
            names = await self._members()
            counts, _ = await self._counts(names)
        return [
            EndpointBacklog(name, pending, dead)
            for name, (pending, dead) in zip(names, counts, strict=True)
            if pending or dead
        ]

    async def drop_endpoint(self, endpoint: str) -> EndpointBacklog:
        """Delete everything the store keeps for ``endpoint`` (its cursor goes to the last seq,
        so it holds the stream no more); returns what was deleted."""
        name = _name(endpoint)
        client = self._redis()
        with self._errors(f"dropping endpoint {name!r}"):
            pending, dead = await self._scripts["drop"]([], [self.prefix, name], client)
        return EndpointBacklog(name, int(pending), int(dead))

    async def move_endpoint(self, old: str, new: str) -> EndpointBacklog:
        """Not possible on Redis: the deliveries of an endpoint are its membership in route
        sets that other endpoints share (see the module docstring).

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
    if "\n" in endpoint:
        # route sets are keyed by the names joined by newlines
        raise ValueError(f"an endpoint name cannot hold a newline on Redis, got {endpoint!r}")
    return endpoint


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


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
