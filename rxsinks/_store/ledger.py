"""Who still has to deliver what: the SQLite store's cursors over its one log of events.

The store keeps one row per event, whatever the number of endpoints, and per endpoint a few
numbers; what an endpoint still has to deliver follows from them (format 2 of the store):

- ``events(seq, body, accepted, route)``: the log; ``route`` is the id of the event's *route
  set*, the endpoints the ingest routed it to (their filters accepted it). Many events share a
  route set, so an event costs one small integer for its routes.
- ``route_sets(id, members)``: a set of endpoint ids, as their sorted decimal list (``"1,4,7"``);
  id 0 is the empty set.
- ``endpoints(id, name, cursor)``: every endpoint ever routed to (its id is also the one the
  confirm journal's records name), and its *delivery cursor*: every event routed to it with a
  seq up to the cursor is done (delivered, or given up as a dead letter).
- ``beyond(endpoint, seq)``: events done *beyond* the cursor: blocks of several keys delivered
  side by side are confirmed in any order, and a later block may finish before an earlier one.
- ``owed(endpoint, seq)``: deliveries outside the routes above the cursor: a dead letter
  replayed (its seq is below the cursor by then), or the backlog of another endpoint moved here.

So endpoint E's pending deliveries are the events routed to E above its cursor and not in
``beyond``, and the events ``owed`` to E. The invariants every change keeps:

1. ``beyond`` holds, for E, only events routed to E above E's cursor.
2. ``owed`` holds, for E, no event routed to E above E's cursor (the two ways of owing an event
   never overlap), and only events whose row exists.
3. A cursor only moves forward, and it is *maximal*: the first event routed to E above E's
   cursor is not done. A confirm moves the cursor only when it settles that event, and then
   over every event done after it (a walk over the ``events_route`` index from the cursor).
4. An event row is deleted (compaction) only when its seq is at or below the cursor of every
   endpoint of its route set, no dead letter names it, and nothing is ``owed`` of it.

In the common case (one block at a time, in seq order) a confirmed block moves the cursor over
exactly its events: a handful of statements per endpoint and batch of confirms, whatever the
number of endpoints that share the events, and no row written or deleted per event and
endpoint.

Every method runs on the store's thread, inside its transaction. Ids created in a transaction
are cached only once it commits (:meth:`Ledger.committed`); a rolled-back job leaves no stale
id behind (:meth:`Ledger.rolled_back`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["COMPACT_CHUNK", "FORMAT", "FORMAT_1", "SCHEMA", "TABLES", "Ledger", "migrate_format_1"]

FORMAT = "rxsinks-store-2"
"""The format this module reads and writes (the ``meta`` table's ``format`` key)."""
FORMAT_1 = "rxsinks-store-1"
"""The format before it: one ``deliveries(endpoint, seq)`` row per event and endpoint still to
deliver, and endpoint ids in ``journal_endpoints``. Migrated at open (:func:`migrate_format_1`)."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL,
        accepted REAL NOT NULL,
        route INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS events_route ON events (route)",
    "CREATE TABLE IF NOT EXISTS route_sets (id INTEGER PRIMARY KEY, members TEXT NOT NULL UNIQUE)",
    "INSERT OR IGNORE INTO route_sets (id, members) VALUES (0, '')",
    """CREATE TABLE IF NOT EXISTS endpoints (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cursor INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS beyond (
        endpoint INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (endpoint, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS owed (
        endpoint INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (endpoint, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        seq INTEGER NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        time REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dead_letters_endpoint ON dead_letters (endpoint, seq)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
"""The tables of format 2, one statement each (so that they run inside a transaction)."""

TABLES = frozenset(
    {"events", "route_sets", "endpoints", "beyond", "owed", "dead_letters", "meta"}
    # format 1's, until migrated
    | {"deliveries", "journal_endpoints"}
)
"""Every table an rxsinks store has, in either format (anything else is somebody else's)."""

# how many route ids a query names one by one; a longer list goes as one JSON parameter
_LISTED = 32
# how many seqs one statement binds at most (SQLite allows 32,766 parameters since 3.32)
_BIND = 5_000
# an endpoint's cursor, and whether it owes anything beside its routes or did any delivery beyond
# its cursor: one statement (the cheap case of a confirm needs nothing else)
_STATE = (
    "SELECT cursor, EXISTS (SELECT 1 FROM owed WHERE endpoint = :id), "
    "EXISTS (SELECT 1 FROM beyond WHERE endpoint = :id) FROM endpoints WHERE id = :id"
)
# events deleted per compaction statement: one statement holds the store's thread this long
# (about 10 ms), then ingest commits go before the next
COMPACT_CHUNK = 5_000


def _members_text(ids: Iterable[int]) -> str:
    return ",".join(str(ident) for ident in sorted(set(ids)))


def _members_of(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",")) if text else frozenset()


def _routed_sql(count: int, *, ordered: bool, upto: bool = False, undone: bool = False) -> str:
    """A query for the seqs of events in ``count`` route sets above ``:after``.

    Parameters: ``:r0``.. (the route set ids; ``:routes`` as a JSON list past :data:`_LISTED`),
    ``:after``, ``:upto`` (``upto``: and at most it), ``:endpoint`` (``undone``: leaving out
    what ``beyond`` holds for it), ``:limit`` (``ordered``: the first ones, in seq order).
    """
    where = "seq > :after" + (" AND seq <= :upto" if upto else "")
    if undone:
        where += (
            " AND NOT EXISTS (SELECT 1 FROM beyond b WHERE b.endpoint = :endpoint"
            " AND b.seq = events.seq)"
        )
    if count > _LISTED:
        routes = "route IN (SELECT value FROM json_each(:routes))"
        order = " ORDER BY seq LIMIT :limit" if ordered else ""
        return f"SELECT seq FROM events WHERE {routes} AND {where}{order}"
    if not ordered or count == 1:
        listed = ", ".join(f":r{index}" for index in range(count))
        routes = f"route = {listed}" if count == 1 else f"route IN ({listed})"
        order = " ORDER BY seq LIMIT :limit" if ordered else ""
        return f"SELECT seq FROM events WHERE {routes} AND {where}{order}"
    # one index range per route set, merged in seq order by SQLite (a compound SELECT with
    # ORDER BY runs its arms as co-routines): the LIMIT stops the merge, so a read touches
    # about ``limit`` index entries however long the backlog behind them is
    arms = [f"SELECT seq FROM events WHERE route = :r{index} AND {where}" for index in range(count)]
    return " UNION ALL ".join(arms) + " ORDER BY 1 LIMIT :limit"


class Ledger:
    """The store's routes, cursors and the deliveries beyond and beside them; see the module
    docstring. Methods take the store thread's connection, inside a transaction.

    Attributes:
        ids: endpoint name -> id (read by the event loop's thread: journal records name ids;
            an id appears here only once committed).
        names: endpoint id -> name.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self._members: dict[int, frozenset[int]] = {0: frozenset()}
        self._by_members: dict[str, int] = {"": 0}
        self._sets_of: dict[int, tuple[int, ...]] = {}  # endpoint id -> route sets naming it
        self._routes: dict[tuple[str, ...], int] = {}  # routes as the ingest gives them -> id
        # what the transaction under way created: cached at its commit (see committed())
        self._staged: list[Callable[[], None]] = []
        self._version: int | None = None  # PRAGMA data_version when last refreshed

    # -- the caches and the transaction --------------------------------------------------------

    def refresh(self, db: sqlite3.Connection) -> None:
        """Read the endpoints and route sets other processes added since the last call (all of
        them, the first time). Call it outside a transaction: the cost is one pragma when
        nobody else wrote to the database, two counts when nobody added any (neither is ever
        deleted, so a count tells)."""
        version = int(db.execute("PRAGMA data_version").fetchone()[0])
        if version == self._version:
            return
        self._version = version
        if int(db.execute("SELECT COUNT(*) FROM endpoints").fetchone()[0]) != len(self.names):
            for ident, name in db.execute("SELECT id, name FROM endpoints").fetchall():
                if int(ident) not in self.names:
                    self._known_endpoint(int(ident), str(name))
        if int(db.execute("SELECT COUNT(*) FROM route_sets").fetchone()[0]) != len(self._members):
            for ident, members in db.execute("SELECT id, members FROM route_sets").fetchall():
                if int(ident) not in self._members:
                    self._known_route_set(int(ident), str(members))

    def mark(self) -> int:
        """Where the staged cache entries stand (before a job of the transaction)."""
        return len(self._staged)

    def rolled_back(self, mark: int = 0) -> None:
        """What was staged since ``mark`` was rolled back: forget it."""
        del self._staged[mark:]

    def committed(self) -> None:
        """The transaction committed: cache what it created."""
        staged, self._staged = self._staged, []
        for apply in staged:
            apply()

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the transaction under way commits (never if it rolls back)."""
        self._staged.append(action)

    def _known_endpoint(self, ident: int, name: str) -> None:
        self.names[ident] = name
        self.ids[name] = ident  # last: confirm_now may use the id from here on

    def _known_route_set(self, ident: int, members: str) -> None:
        ids = _members_of(members)
        self._members[ident] = ids
        self._by_members[members] = ident
        for endpoint in ids:
            sets = self._sets_of.get(endpoint, ())
            if ident not in sets:
                self._sets_of[endpoint] = (*sets, ident)

    # -- endpoints and routes ------------------------------------------------------------------

    def endpoint(self, db: sqlite3.Connection, name: str) -> int | None:
        """The id of endpoint ``name``, or ``None`` if nothing was ever routed to it."""
        ident = self.ids.get(name)
        if ident is not None:
            return ident
        row = db.execute("SELECT id FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return self._stage_endpoint(int(row[0]), name)

    def endpoint_id(self, db: sqlite3.Connection, name: str) -> int:
        """The id of endpoint ``name``, given one if it has none."""
        ident = self.endpoint(db, name)
        if ident is not None:
            return ident
        # a new endpoint: no event was routed to it yet, so cursor 0 has nothing below it
        cursor = db.execute("INSERT INTO endpoints (name) VALUES (?)", (name,))
        return self._stage_endpoint(int(cursor.lastrowid or 0), name)

    def _stage_endpoint(self, ident: int, name: str) -> int:
        self._staged.append(lambda: self._known_endpoint(ident, name))
        return ident

    def route(self, db: sqlite3.Connection, names: Sequence[str]) -> int:
        """The id of the route set of endpoints ``names`` (created if new)."""
        key = tuple(names)
        ident = self._routes.get(key)
        if ident is not None:
            return ident
        members = _members_text(self.endpoint_id(db, name) for name in names)
        ident = self._by_members.get(members)
        if ident is not None:
            self._routes[key] = ident  # (committed ids only are cached)
            return ident
        row = db.execute("SELECT id FROM route_sets WHERE members = ?", (members,)).fetchone()
        if row is None:
            insert = "INSERT INTO route_sets (members) VALUES (?)"
            created = int(db.execute(insert, (members,)).lastrowid or 0)
        else:
            created = int(row[0])
        self._staged.append(lambda: self._known_route_set(created, members))
        return created

    def routed_to(self, ident: int, route: int) -> bool:
        """Whether route set ``route`` names endpoint ``ident``."""
        return ident in self._members.get(route, ())

    def cursor(self, db: sqlite3.Connection, ident: int) -> int:
        row = db.execute("SELECT cursor FROM endpoints WHERE id = ?", (ident,)).fetchone()
        return int(row[0]) if row is not None else 0

    def _params(self, ident: int, **values: Any) -> dict[str, Any]:
        sets = self._sets_of.get(ident, ())
        params: dict[str, Any] = {"endpoint": ident, **values}
        if len(sets) > _LISTED:
            params["routes"] = json.dumps(sets)
        else:
            params.update({f"r{index}": route for index, route in enumerate(sets)})
        return params

    def _routed(
        self, db: sqlite3.Connection, ident: int, after: int, limit: int, *, undone: bool
    ) -> list[int]:
        """The first ``limit`` seqs of events routed to ``ident`` above ``after``, in order
        (``undone``: not counting those ``beyond`` holds)."""
        count = len(self._sets_of.get(ident, ()))
        if not count or limit <= 0:
            return []
        query = _routed_sql(count, ordered=True, undone=undone)
        params = self._params(ident, after=after, limit=limit)
        return [seq for (seq,) in db.execute(query, params)]

    # -- what an endpoint has to deliver -------------------------------------------------------

    def pending(self, db: sqlite3.Connection, ident: int, after: int, limit: int) -> list[int]:
        """The first ``limit`` seqs ``ident`` has to deliver above ``after``, in order."""
        cursor = self.cursor(db, ident)
        routed = self._routed(db, ident, max(after, cursor), limit, undone=True)
        owed = [
            seq
            for (seq,) in db.execute(
                "SELECT seq FROM owed WHERE endpoint = ? AND seq > ? ORDER BY seq LIMIT ?",
                (ident, after, limit),
            )
        ]
        if not owed:
            return routed
        return sorted(routed + owed)[:limit]  # (disjoint: invariant 2)

    def count(self, db: sqlite3.Connection, ident: int) -> int:
        """How many deliveries ``ident`` has to do."""
        cursor = self.cursor(db, ident)
        routed = 0
        for route in self._sets_of.get(ident, ()):
            query = "SELECT COUNT(*) FROM events WHERE route = ? AND seq > ?"
            routed += int(db.execute(query, (route, cursor)).fetchone()[0])
        done = db.execute("SELECT COUNT(*) FROM beyond WHERE endpoint = ?", (ident,)).fetchone()
        owed = db.execute("SELECT COUNT(*) FROM owed WHERE endpoint = ?", (ident,)).fetchone()
        return routed - int(done[0]) + int(owed[0])

    # -- settling deliveries -------------------------------------------------------------------

    def settle(self, db: sqlite3.Connection, ident: int, seqs: Iterable[int]) -> None:
        """Deliveries of ``seqs`` to ``ident`` are done (confirmed, or given up): never deliver
        them again. Seqs it does not owe are ignored (a confirm applied twice)."""
        wanted = set(seqs)
        if not wanted:
            return
        row = db.execute(_STATE, {"id": ident}).fetchone()
        if row is None:
            return  # (an endpoint nothing was ever routed to)
        cursor, has_owed, has_beyond = int(row[0]), bool(row[1]), bool(row[2])
        if has_owed:
            owed = self._owed_among(db, ident, wanted)
            if owed:
                db.executemany(
                    "DELETE FROM owed WHERE endpoint = ? AND seq = ?", [(ident, s) for s in owed]
                )
                wanted -= owed
        high = {seq for seq in wanted if seq > cursor}
        if not high:
            return
        top = max(high)
        if min(high) == cursor + 1 and len(high) == top - cursor:
            # every seq right after the cursor up to top is done (a block of consecutive
            # events, the common case): the cursor moves there whatever the routes, then on
            # over what was done beyond it before, if anything was
            position = top if not has_beyond else self._walk(db, ident, top, set())
            rest: list[int] = []
        else:
            # the first routed event above the cursor is the only one whose settling moves it
            # (invariant 3): walk from there over everything done
            position = self._walk(db, ident, cursor, high)
            rest = [seq for seq in high if seq > position]
        if position > cursor:
            db.execute("UPDATE endpoints SET cursor = ? WHERE id = ?", (position, ident))
            if has_beyond:
                query = "DELETE FROM beyond WHERE endpoint = ? AND seq <= ?"
                db.execute(query, (ident, position))
        if rest:
            # done out of order: noted beyond the cursor, for the events routed to ident only
            # (invariant 1)
            db.executemany(
                "INSERT OR IGNORE INTO beyond (endpoint, seq) VALUES (?, ?)",
                [(ident, seq) for seq in self._routed_among(db, ident, rest)],
            )

    def _walk(self, db: sqlite3.Connection, ident: int, position: int, high: set[int]) -> int:
        """Where the cursor goes from ``position``: over every event routed to ``ident`` that
        is done (in ``high``, or beyond the cursor already), up to the first one that is not
        (exclusive), or up to the last one routed; read a chunk of the index at a time."""
        chunk = len(high) + 1  # in order, one block: its events and the next one
        start = position
        while True:
            routed = self._routed(db, ident, position, chunk, undone=False)
            if not routed:
                return position  # nothing routed after: the last one walked
            done = high | self._beyond(db, ident, position, routed[-1])
            stop = next((seq for seq in routed if seq not in done), None)
            if stop is not None:
                # (not moved at all when the first routed event is not done)
                return stop - 1 if stop != routed[0] or position > start else position
            position = routed[-1]
            if len(routed) < chunk:
                return position
            chunk *= 2

    def _beyond(self, db: sqlite3.Connection, ident: int, after: int, upto: int) -> set[int]:
        return {
            seq
            for (seq,) in db.execute(
                "SELECT seq FROM beyond WHERE endpoint = ? AND seq > ? AND seq <= ?",
                (ident, after, upto),
            )
        }

    def _owed_among(self, db: sqlite3.Connection, ident: int, seqs: set[int]) -> set[int]:
        found: set[int] = set()
        ordered = sorted(seqs)
        for start in range(0, len(ordered), _BIND):
            part = ordered[start : start + _BIND]
            marks = ",".join("?" * len(part))
            query = f"SELECT seq FROM owed WHERE endpoint = ? AND seq IN ({marks})"
            found.update(seq for (seq,) in db.execute(query, (ident, *part)))
        return found

    def _routed_among(self, db: sqlite3.Connection, ident: int, seqs: list[int]) -> list[int]:
        """Those of ``seqs`` whose events are routed to ``ident``."""
        found: list[int] = []
        ordered = sorted(seqs)
        for start in range(0, len(ordered), _BIND):
            part = ordered[start : start + _BIND]
            marks = ",".join("?" * len(part))
            query = f"SELECT seq, route FROM events WHERE seq IN ({marks})"
            found += [seq for seq, route in db.execute(query, part) if self.routed_to(ident, route)]
        return found

    def reopen(self, db: sqlite3.Connection, ident: int, seq: int) -> bool:
        """``ident`` owes the delivery of ``seq`` again (a dead letter replayed, a backlog
        moved); False if it owed it already (or the event is gone)."""
        row = db.execute("SELECT route FROM events WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return False
        if self.routed_to(ident, int(row[0])) and seq > self.cursor(db, ident):
            # above the cursor the routes owe it, unless it was done beyond the cursor
            query = "DELETE FROM beyond WHERE endpoint = ? AND seq = ?"
            return db.execute(query, (ident, seq)).rowcount > 0
        query = "INSERT OR IGNORE INTO owed (endpoint, seq) VALUES (?, ?)"
        return db.execute(query, (ident, seq)).rowcount > 0

    def forget(self, db: sqlite3.Connection, ident: int) -> int:
        """``ident`` owes nothing any more (its backlog dropped or moved away); returns how many
        deliveries it owed. Its cursor goes to the end of the log."""
        owed = self.count(db, ident)
        top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        cursor = max(int(top), self.cursor(db, ident))
        db.execute("UPDATE endpoints SET cursor = ? WHERE id = ?", (cursor, ident))
        db.execute("DELETE FROM beyond WHERE endpoint = ?", (ident,))
        db.execute("DELETE FROM owed WHERE endpoint = ?", (ident,))
        return owed

    def owed_seqs(self, db: sqlite3.Connection, ident: int) -> Iterable[int]:
        """Every seq ``ident`` has to deliver, in order (a batch at a time)."""
        after = 0
        while True:
            seqs = self.pending(db, ident, after, 10_000)
            yield from seqs
            if len(seqs) < 10_000:
                return
            after = seqs[-1]

    # -- compaction ----------------------------------------------------------------------------

    def compact(self, db: sqlite3.Connection, horizon: float, limit: int) -> int:
        """Delete up to ``limit`` events nobody needs any more (invariant 4) that were accepted
        before ``horizon``; returns how many."""
        cursors = dict(db.execute("SELECT id, cursor FROM endpoints"))
        top = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
        removed = 0
        # read from the database, not the cache: the store's whole history counts
        for route, members in db.execute("SELECT id, members FROM route_sets").fetchall():
            ids = _members_of(str(members))
            low = min((int(cursors.get(ident, 0)) for ident in ids), default=top)
            if low <= 0:
                continue
            removed += db.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE route = ? "
                "AND seq <= ? AND accepted < ? AND seq NOT IN (SELECT seq FROM dead_letters) "
                "AND seq NOT IN (SELECT seq FROM owed) LIMIT ?)",
                (route, low, horizon, limit - removed),
            ).rowcount
            if removed >= limit:
                break
        return removed


def migrate_format_1(db: sqlite3.Connection) -> int:
    """Turn a store of format 1 into format 2, in the caller's transaction; returns the number
    of deliveries that were pending.

    Every endpoint keeps its id (the confirm journal's records name them) and gets cursor 0;
    each event's route set becomes the endpoints that still had to deliver it. So what each
    endpoint has to deliver is exactly what it had (in the same order), dead letters stay as
    they were, and an event nobody has to deliver any more gets the empty route set, which
    compaction removes.
    """
    db.execute("ALTER TABLE events ADD COLUMN route INTEGER NOT NULL DEFAULT 0")
    for statement in SCHEMA:
        db.execute(statement)
    db.execute("INSERT INTO endpoints (id, name) SELECT id, name FROM journal_endpoints")
    db.execute("INSERT OR IGNORE INTO endpoints (name) SELECT DISTINCT endpoint FROM deliveries")
    ids = {str(name): int(ident) for name, ident in db.execute("SELECT name, id FROM endpoints")}
    route_sets: dict[str, int] = {"": 0}
    updates: list[tuple[int, int]] = []
    pending = 0

    def routed(seq: int, members: list[int]) -> None:
        text = _members_text(members)
        route = route_sets.get(text)
        if route is None:
            insert = "INSERT INTO route_sets (members) VALUES (?)"
            route = route_sets[text] = int(db.execute(insert, (text,)).lastrowid or 0)
        updates.append((route, seq))

    current: int | None = None
    members: list[int] = []
    for seq, name in db.execute("SELECT seq, endpoint FROM deliveries ORDER BY seq, endpoint"):
        pending += 1
        if seq != current:
            if current is not None:
                routed(current, members)
            current, members = int(seq), []
        members.append(ids[str(name)])
    if current is not None:
        routed(current, members)
    for start in range(0, len(updates), _BIND):
        db.executemany("UPDATE events SET route = ? WHERE seq = ?", updates[start : start + _BIND])
    db.execute("DROP TABLE deliveries")
    db.execute("DROP TABLE journal_endpoints")
    db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (FORMAT,))
    return pending
