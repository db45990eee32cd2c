"""The durable store behind the per-endpoint queues: embedded SQLite (WAL), no server.

Layout: one log of accepted events (``events``: seq -> the event's JSON as received), one row per
event and endpoint still to deliver (``deliveries``: endpoint, seq), and dead letters
(``dead_letters``). The ingest commits events *and* their delivery rows in one transaction
before it answers 2xx. An endpoint marks a block delivered only after the receiver confirmed it
(2xx/3xx), and before its next block goes: the mark is a record in the confirm journal (a
memory-mapped file beside the database, see ``rxsinks._store.journal``), which the store thread
applies to ``deliveries`` in batches, and which the next open applies if a killed process left
records. A delivery row and a journal record name one (endpoint, seq), so blocks delivered side
by side (an endpoint's ``concurrency``) are confirmed in any order. So after any crash or
restart, every accepted event is delivered to every endpoint that had not confirmed it, in seq
order (at-least-once: only the blocks in flight at the crash can repeat; receivers dedupe on the
event id / ``webhook-id``). ``events.accepted`` (when the ingest stored an event) is what a
delivery delay counts from for an event without a timestamp.

One relay per store: a relay opens it with ``exclusive=True``, which takes an exclusive lock on
``<path>.lock``; a second relay on the same file gets :class:`StoreLockedError` (two relays
would each deliver every event). Other processes (the CLI listing dead letters) open it without
the lock, beside the running relay. Every file holding event payloads (the database, its
``-wal`` and ``-shm`` files, the confirm journal, the lock) is made readable by its owner only
(0600). A database that holds tables of something else is refused, never adopted.

All database I/O runs on one dedicated thread with its own connection, never on the event loop
(the loop only writes journal records into mapped memory). The thread commits whatever work is
waiting in one transaction (group commit), so ingest throughput stays close to memory mode under
concurrency. Events whose deliveries are all done are compacted
away, keeping ``retention`` seconds of history.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import queue as thread_queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._event import Event, encode_event
from .._exceptions import StoreError, StoreLockedError
from .._throttle import LogThrottle
from .checkpoint import Checkpointer
from .journal import ConfirmJournal, JournalBusy

__all__ = [
    "DeadLetterRecord",
    "EndpointBacklog",
    "SQLiteStore",
]

log = logging.getLogger("rxsinks.store")

_R = TypeVar("_R")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    accepted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    endpoint TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (endpoint, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    seq INTEGER NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_endpoint ON dead_letters (endpoint, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal_endpoints (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
"""
_FORMAT = "rxsinks-store-1"
_TABLES = frozenset({"events", "deliveries", "dead_letters", "meta", "journal_endpoints"})
# every endpoint name in ``deliveries``, one index seek each (a skip scan of the primary key)
_DELIVERY_ENDPOINTS = """
WITH RECURSIVE names(name) AS (
    SELECT (SELECT MIN(endpoint) FROM deliveries)
    UNION ALL
    SELECT (SELECT MIN(endpoint) FROM deliveries WHERE endpoint > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL
"""
# a store failing to apply confirms (a full disk) fails on every batch: one line a minute
_ERROR_EVERY = 60.0
# what a health probe writes: about one event's worth, so that "the store can write" means it
_PROBE_BYTES = 1024
# the most seqs bound in one ``IN (...)`` list (SQLite allows 32,766 parameters since 3.32)
_IN_LIMIT = 5_000
# confirm journal records wait at most this long before the store thread applies them (the
# database's own counts, compaction and other processes catch up within it)
_APPLY_DELAY = 0.2
# commit batches between two checkpoints at the least (a commit adds a few pages to the log)
_CHECKPOINT_EVERY = 200


@dataclass(frozen=True, slots=True)
class EndpointBacklog:
    """What the store keeps for one endpoint.

    Attributes:
        endpoint: the endpoint's name.
        pending: deliveries still to do.
        dead_letters: dead letters kept.
    """

    endpoint: str
    pending: int
    dead_letters: int


class _StoreLock:
    """An exclusive ``flock`` on ``<database>.lock``, held while a relay runs on the store.

    The lock goes with the process: a killed relay leaves the file, never the lock. The file
    holds the pid of the holder, for the message another relay gets.
    """

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        self._created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"store {self.database}: cannot create its lock file {self.path}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(
                    f"store {self.database}: cannot lock {self.path}: {exc.strerror or exc}"
                ) from None
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise StoreLockedError(
                f"store {self.database} is in use by another rxsinks relay ({who}, holding "
                f"{self.path}); one relay per store, or both would deliver every event: stop "
                "that relay, or give this one its own store.path"
            ) from None
        _make_private(self.path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self, *, failed: bool = False) -> None:
        """Release the lock; after a failed open, remove the file if this open created it (a
        refused database keeps no file of rxsinks' beside it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if failed and self._created:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the lock


def _make_private(path: Path) -> None:
    """Make an existing file readable and writable by its owner only (it holds payloads)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:
            log.warning(
                "store file %s is readable by others (mode %04o) and cannot be changed: %s",
                path,
                mode,
                exc.strerror or exc,
            )


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A dead letter kept in the store.

    Attributes:
        id: the record's id.
        endpoint: the endpoint that gave the event up.
        seq: the event's position in the log.
        event: the event.
        error: the last error, as text.
        attempts: attempts made.
        time: when it was given up (unix seconds).
    """

    id: int
    endpoint: str
    seq: int
    event: Event
    error: str
    attempts: int
    time: float

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON data (the event as received)."""
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "seq": self.seq,
            "event": self.event.to_dict(),
            "error": self.error,
            "attempts": self.attempts,
            "time": self.time,
        }


class _Job:
    __slots__ = ("fn", "future", "loop", "single_statement")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        single_statement: bool = False,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        # one SQL statement is atomic by itself: alone in a batch, it needs no BEGIN/COMMIT
        self.single_statement = single_statement


class SQLiteStore:
    """An embedded, durable store for the relay's queues. See the module docstring.

    Args:
        path: the database file (created if missing, mode 0600).
        retention: seconds to keep delivered events before compaction deletes them.
        max_bytes: cap on the database size; past it, appends fail with :class:`StoreError`
            ("database or disk is full") and nothing is acknowledged, exactly as when the disk
            itself is full.
        exclusive: take the store's lock at :meth:`open` (a relay does): another process
            opening it with ``exclusive=True`` gets :class:`StoreLockedError` until
            :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: float = 0.0,
        max_bytes: int | None = None,
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        self.retention = retention
        self.max_bytes = max_bytes
        self._lock = _StoreLock(self.path) if exclusive else None
        self._errors = LogThrottle(log, logging.ERROR, _ERROR_EVERY)
        self._jobs: thread_queue.SimpleQueue[_Job | None] = thread_queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # the confirm journal (see _journal) and the endpoint ids its records use; the ids are
        # written by the store thread, the journal is appended to by the event loop's thread
        self._journal: ConfirmJournal | None = None
        self._checkpointer: Checkpointer | None = None
        self._batches = 0
        self._endpoint_ids: dict[str, int] = {}
        self._endpoint_names: dict[int, str] = {}
        self._registering: set[str] = set()
        self._apply_requested = False
        self._apply_timer: asyncio.TimerHandle | None = None
        # appends waiting for the end of the loop's turn, to go to the thread as one job
        self._appends: list[tuple[list[str], Sequence[Sequence[str]], asyncio.Future[list[int]]]]
        self._appends = []

    # -- life cycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the database; raises :class:`StoreError` with a clear message
        (:class:`StoreLockedError` when ``exclusive`` and another relay holds it)."""
        if self._lock is not None:
            self._lock.acquire()
        try:
            await self._open()
        except BaseException:
            if self._lock is not None:
                self._lock.release(failed=True)
            raise

    async def _open(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def report(error: BaseException | None) -> None:
            if ready.done():
                return
            if error is None:
                ready.set_result(None)
            else:
                ready.set_exception(error)

        self._thread = threading.Thread(
            target=self._run, args=(loop, report), name=f"rxsinks-store:{self.path}", daemon=True
        )
        self._thread.start()
        await ready

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"store {path}: not readable and writable by this user")
        parent = path.parent if str(path.parent) else Path(".")
        if not path.exists() and not os.access(parent, os.W_OK):
            raise StoreError(f"store {path}: cannot create it, directory {parent} not writable")
        _create_private(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            _refuse_foreign(db, path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=OFF")
            db.executescript(_SCHEMA)
            if self.max_bytes is not None:
                page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
                db.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page_size)}")
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (_FORMAT,))
            elif row[0] != _FORMAT:
                raise StoreError(f"store {path}: format {row[0]!r}, expected {_FORMAT!r}")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"store {path}: integrity check failed: {check}")
            for ident, name in db.execute("SELECT id, name FROM journal_endpoints"):
                self._endpoint_names[ident] = name
                self._endpoint_ids[name] = ident
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"store {path}: {exc} (is it an rxsinks store? not deleting it)"
            ) from exc
        # SQLite gives -wal and -shm the database's mode when it creates them; files left by
        # an older version (0644) are made private here
        for companion in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            _make_private(companion)
        self._journal = self._open_journal()
        # what a killed process confirmed and had not applied: before anything reads the queues
        self._apply_journal(db)
        self._checkpointer = self._start_checkpointer(db)
        return db

    def _start_checkpointer(self, db: sqlite3.Connection) -> Checkpointer | None:
        try:
            checkpointer = Checkpointer(self.path)
        except sqlite3.Error as exc:
            log.warning("store %s: checkpoints stay in the commits (%s)", self.path, exc)
            return None
        db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's work from now on
        return checkpointer

    def _open_journal(self) -> ConfirmJournal | None:
        journal_path = Path(f"{self.path}-confirms")
        try:
            return ConfirmJournal(journal_path)
        except JournalBusy:
            # another process (a running relay) owns it: this one works on SQLite alone
            log.info("store %s: confirm journal in use by another process", self.path)
        except OSError as exc:
            log.warning(
                "store %s: no confirm journal (%s); confirms commit one by one", self.path, exc
            )
        return None

    def _apply_journal(self, db: sqlite3.Connection) -> None:
        """Delete the deliveries the journal holds as confirmed, in one transaction."""
        self._apply_requested = False
        journal = self._journal
        if journal is None or journal.head == journal.tail:
            return
        head, records = journal.unapplied()
        by_endpoint: dict[int, list[int]] = {}
        for ident, seq in records:
            by_endpoint.setdefault(ident, []).append(seq)
        try:
            db.execute("BEGIN IMMEDIATE")
            for ident, seqs in by_endpoint.items():
                name = self._endpoint_names.get(ident)
                if name is not None:
                    _delete_deliveries(db, name, seqs)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            # the records stay in the journal: applied with the next batch
            self._errors.failed(
                "store %s: applying confirmed deliveries failed: %s", self.path, exc
            )
            return
        journal.applied(head)
        self._errors.succeeded("store %s: writes work again", self.path)

    def _run(
        self, loop: asyncio.AbstractEventLoop, report: Callable[[BaseException | None], None]
    ) -> None:
        try:
            db = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(report, exc)
            return
        loop.call_soon_threadsafe(report, None)
        try:
            while True:
                job = self._jobs.get()
                batch = [job]
                # group commit: everything already waiting goes into the same transaction
                while True:
                    try:
                        batch.append(self._jobs.get_nowait())
                    except thread_queue.Empty:
                        break
                stop = any(item is None for item in batch)
                # confirms noted before these jobs were queued are applied first, so every
                # job sees them (a read of the queues, a count, a compaction)
                self._apply_journal(db)
                self._execute(db, [i for i in batch if i is not None and i.fn is not _nothing])
                self._batches += 1
                if self._checkpointer is not None and self._batches % _CHECKPOINT_EVERY == 0:
                    self._checkpointer.poke()  # a busy store: do not wait for the interval
                if stop:
                    return
        finally:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            journal, self._journal = self._journal, None
            if journal is not None:
                journal.close()
            db.close()

    def _execute(self, db: sqlite3.Connection, jobs: list[_Job]) -> None:
        if not jobs:
            return
        results: list[tuple[_Job, Any, BaseException | None]] = []
        if len(jobs) == 1 and jobs[0].single_statement:
            job = jobs[0]
            try:
                results.append((job, job.fn(db), None))
            except Exception as exc:
                results.append((job, None, _store_error(self.path, exc)))
            self._report(results)
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            if len(jobs) == 1:
                # alone in its transaction: a failure rolls back just it, no savepoint needed
                job = jobs[0]
                try:
                    results.append((job, job.fn(db), None))
                except Exception as exc:
                    db.execute("ROLLBACK")
                    results.append((job, None, _store_error(self.path, exc)))
                    self._report(results)
                    return
            else:
                for job in jobs:
                    db.execute("SAVEPOINT job")
                    try:
                        results.append((job, job.fn(db), None))
                        db.execute("RELEASE job")
                    except Exception as exc:
                        db.execute("ROLLBACK TO job")
                        db.execute("RELEASE job")
                        results.append((job, None, _store_error(self.path, exc)))
            db.execute("COMMIT")
        except Exception as exc:
            # the commit itself failed (disk full...): nothing of this batch is durable
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            failure = _store_error(self.path, exc)
            results = [(job, None, failure) for job in jobs]
        self._report(results)

    def _report(self, results: list[tuple[_Job, Any, BaseException | None]]) -> None:
        # one wake-up of each loop per batch, not one per job: a group commit of many ingest
        # requests would otherwise write the loop's self-pipe once per request
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for job, result, error in results:
            if job.future is not None and job.loop is not None:
                answers.setdefault(job.loop, []).append((job.future, result, error))
            elif error is not None:
                self._errors.failed("store: %s", error)
        for loop, batch in answers.items():
            loop.call_soon_threadsafe(_resolve_all, batch)

    async def _call(
        self, fn: Callable[[sqlite3.Connection], _R], *, single_statement: bool = False
    ) -> _R:
        if self._closed or self._thread is None:
            raise StoreError(f"store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future, single_statement))
        return await future

    async def close(self) -> None:
        """Finish pending work (confirms in the journal too) and close the database."""
        if self._closed:
            return
        self._submit_appends()  # accepted before the close: committed before it
        self._closed = True
        if self._apply_timer is not None:
            self._apply_timer.cancel()
            self._apply_timer = None
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self._lock is not None:
            self._lock.release()

    # -- the log -------------------------------------------------------------------------------

    async def append(self, events: Sequence[Event], routes: Sequence[Sequence[str]]) -> list[int]:
        """Commit ``events`` and, for each, a delivery row per endpoint in ``routes[i]``.

        Returns the events' seqs once the transaction is durable. Appends made in the same turn
        of the event loop (concurrent ingest requests) go to the store thread as one job.

        Raises:
            StoreError: nothing was stored (the caller must not acknowledge the events).
        """
        bodies = [encode_event(event) for event in events]
        if self._closed or self._thread is None:
            raise StoreError(f"store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._appends.append((bodies, routes, future))
        if len(self._appends) == 1:
            loop.call_soon(self._submit_appends)
        return await future

    def _submit_appends(self) -> None:
        batch, self._appends = self._appends, []
        if not batch:
            return
        if self._closed:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(StoreError(f"store {self.path} is closed"))
            return
        now = time.time()

        def insert(db: sqlite3.Connection) -> list[list[int]]:
            cursor = db.cursor()
            results = []
            for bodies, routes, _ in batch:
                seqs = []
                for body in bodies:
                    cursor.execute("INSERT INTO events (body, accepted) VALUES (?, ?)", (body, now))
                    seqs.append(int(cursor.lastrowid or 0))
                rows = [
                    (name, seq) for seq, names in zip(seqs, routes, strict=True) for name in names
                ]
                cursor.executemany("INSERT INTO deliveries (endpoint, seq) VALUES (?, ?)", rows)
                results.append(seqs)
            return results

        def answer(done: asyncio.Future[list[list[int]]]) -> None:
            error = done.exception()
            for index, (_, _, future) in enumerate(batch):
                if future.done():  # its caller gave up waiting; the events are stored anyway
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(done.result()[index])

        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[list[int]]] = loop.create_future()
        done.add_done_callback(answer)
        self._jobs.put(_Job(insert, loop, done))

    async def read(self, endpoint: str, after: int, limit: int) -> list[tuple[int, Event]]:
        """Undelivered events of ``endpoint`` with seq > ``after``, in order, at most ``limit``."""
        return [(seq, event) for seq, event, _ in await self.read_arrivals(endpoint, after, limit)]

    async def read_arrivals(
        self, endpoint: str, after: int, limit: int
    ) -> list[tuple[int, Event, float | None]]:
        """Like :meth:`read`, each event with when the store accepted it (unix seconds)."""

        def select(db: sqlite3.Connection) -> list[tuple[int, Event, float | None]]:
            rows = db.execute(
                "SELECT e.seq, e.body, e.accepted FROM deliveries d JOIN events e "
                "ON e.seq = d.seq WHERE d.endpoint = ? AND d.seq > ? ORDER BY d.seq LIMIT ?",
                (endpoint, after, limit),
            ).fetchall()
            return [(seq, Event._from_text(body), accepted) for seq, body, accepted in rows]

        return await self._call(select)

    async def backlog(self, endpoint: str) -> tuple[int, int]:
        """How many deliveries ``endpoint`` has to do, and the highest seq in the log."""

        def count(db: sqlite3.Connection) -> tuple[int, int]:
            query = "SELECT COUNT(*) FROM deliveries WHERE endpoint = ?"
            pending = int(db.execute(query, (endpoint,)).fetchone()[0])
            top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            return pending, int(top)

        return await self._call(count)

    async def pending(self, endpoint: str | None = None) -> int:
        """How many deliveries are still to do (for one endpoint, or all)."""

        def count(db: sqlite3.Connection) -> int:
            if endpoint is None:
                return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])
            query = "SELECT COUNT(*) FROM deliveries WHERE endpoint = ?"
            return int(db.execute(query, (endpoint,)).fetchone()[0])

        return await self._call(count)

    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None:
        """The receiver confirmed these events: never deliver them to ``endpoint`` again."""
        seqs = list(seqs)

        def delete(db: sqlite3.Connection) -> None:
            _delete_deliveries(db, endpoint, seqs)

        # up to the IN-list bound that is one statement (so, alone in a batch, its own
        # transaction): each extra statement is another wait for the GIL in this thread
        await self._call(delete, single_statement=len(seqs) <= _IN_LIMIT)

    def confirm_now(self, endpoint: str, seqs: Sequence[int]) -> bool:
        """Like :meth:`confirm`, done before returning: the confirm goes into the journal.

        Call it on the event loop's thread. Returns False, and notes nothing, when the journal
        cannot take it (no journal, an endpoint it does not know yet, or no room until the
        store thread applies what it holds): then use :meth:`confirm`.
        """
        journal = self._journal
        if journal is None or self._closed:
            return False
        ident = self._endpoint_ids.get(endpoint)
        if ident is None:
            self._register(endpoint)
            return False
        if not journal.append(ident, seqs):
            self._request_apply()
            return False
        if journal.room < journal.capacity * 3 // 4:
            self._request_apply()
        elif self._apply_timer is None:
            loop = asyncio.get_running_loop()
            self._apply_timer = loop.call_later(_APPLY_DELAY, self._apply_soon)
        return True

    def _register(self, endpoint: str) -> None:
        """Give ``endpoint`` an id for journal records (on the store thread; once)."""
        if endpoint in self._registering:
            return
        self._registering.add(endpoint)

        def register(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO journal_endpoints (name) VALUES (?)", (endpoint,))
            query = "SELECT id FROM journal_endpoints WHERE name = ?"
            ident = int(db.execute(query, (endpoint,)).fetchone()[0])
            self._endpoint_names[ident] = endpoint
            self._endpoint_ids[endpoint] = ident  # last: confirm_now may use it from here on

        self._jobs.put(_Job(register, None, None))

    def _apply_soon(self) -> None:
        self._apply_timer = None
        self._request_apply()

    def _request_apply(self) -> None:
        if not self._apply_requested and not self._closed:
            self._apply_requested = True
            self._jobs.put(_Job(_nothing, None, None))  # the thread applies before every batch

    async def dead_letter(
        self, endpoint: str, seqs: Sequence[int], error: str, attempts: int
    ) -> None:
        """Move these deliveries to the dead letters, with the reason."""
        now = time.time()

        def move(db: sqlite3.Connection) -> None:
            db.executemany(
                "DELETE FROM deliveries WHERE endpoint = ? AND seq = ?",
                [(endpoint, seq) for seq in seqs],
            )
            db.executemany(
                "INSERT INTO dead_letters (endpoint, seq, error, attempts, time) "
                "VALUES (?, ?, ?, ?, ?)",
                [(endpoint, seq, error, attempts, now) for seq in seqs],
            )

        await self._call(move)

    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None, limit: int = 10_000
    ) -> list[DeadLetterRecord]:
        """Dead letters, oldest first (optionally for one endpoint, given up since a time)."""

        def select(db: sqlite3.Connection) -> list[DeadLetterRecord]:
            query = (
                "SELECT d.id, d.endpoint, d.seq, e.body, d.error, d.attempts, d.time "
                "FROM dead_letters d JOIN events e ON e.seq = d.seq WHERE 1=1"
            )
            args: list[Any] = []
            if endpoint is not None:
                query += " AND d.endpoint = ?"
                args.append(endpoint)
            if since is not None:
                query += " AND d.time >= ?"
                args.append(since)
            query += " ORDER BY d.id LIMIT ?"
            args.append(limit)
            return [
                DeadLetterRecord(i, name, seq, Event._from_text(body), err, n, t)
                for i, name, seq, body, err, n, t in db.execute(query, args).fetchall()
            ]

        return await self._call(select)

    async def replay(
        self,
        endpoint: str | None = None,
        since: float | None = None,
        *,
        ids: Collection[int] | None = None,
    ) -> list[tuple[str, int]]:
        """Put dead letters back on their endpoints' queues; returns (endpoint, seq) replayed.

        ``ids`` (the records' :attr:`DeadLetterRecord.id`) replays only those of them that also
        match ``endpoint`` and ``since``; unknown ids are skipped.
        """
        wanted = None if ids is None else json.dumps(sorted({int(i) for i in ids}))

        def move(db: sqlite3.Connection) -> list[tuple[str, int]]:
            query = "SELECT id, endpoint, seq FROM dead_letters WHERE 1=1"
            args: list[Any] = []
            if endpoint is not None:
                query += " AND endpoint = ?"
                args.append(endpoint)
            if since is not None:
                query += " AND time >= ?"
                args.append(since)
            if wanted is not None:
                # one JSON parameter, however many ids (no limit on bound parameters)
                query += " AND id IN (SELECT value FROM json_each(?))"
                args.append(wanted)
            rows = db.execute(query + " ORDER BY id", args).fetchall()
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (endpoint, seq) VALUES (?, ?)",
                [(name, seq) for _, name, seq in rows],
            )
            db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i, _, _ in rows])
            return [(name, seq) for _, name, seq in rows]

        return await self._call(move)

    async def compact(self, endpoints: Collection[str] | None = None) -> int:
        """Delete events nobody needs any more (delivered everywhere, not dead letters, older
        than ``retention``); returns how many.

        Args:
            endpoints: the endpoints being delivered for (the configured ones). The deliveries
                of any other endpoint (one removed from the configuration, whose backlog waits
                to be dropped or moved) then keep only their own events, instead of every event
                after their oldest: compaction goes on for the others. ``None``: every endpoint
                counts as delivered for.
        """
        horizon = time.time() - self.retention

        def delete(db: sqlite3.Connection) -> int:
            if endpoints is None:
                cursor = db.execute(
                    "DELETE FROM events WHERE accepted < ? "
                    "AND seq < COALESCE((SELECT MIN(seq) FROM deliveries), 1 << 62) "
                    "AND seq NOT IN (SELECT seq FROM dead_letters)",
                    (horizon,),
                )
                return cursor.rowcount
            live = set(endpoints)
            others = [name for (name,) in db.execute(_DELIVERY_ENDPOINTS) if name not in live]
            # the oldest event a live endpoint still needs: one primary key seek each
            lows = [
                db.execute(
                    "SELECT MIN(seq) FROM deliveries WHERE endpoint = ?", (name,)
                ).fetchone()[0]
                for name in live
            ]
            low = min((seq for seq in lows if seq is not None), default=1 << 62)
            query = (
                "DELETE FROM events WHERE accepted < ? AND seq < ? "
                "AND seq NOT IN (SELECT seq FROM dead_letters)"
            )
            args: list[Any] = [horizon, low]
            if others:
                marks = ",".join("?" * len(others))
                query += (
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d "
                    f"WHERE d.endpoint IN ({marks}) AND d.seq = events.seq)"
                )
                args += others
            return db.execute(query, args).rowcount

        return await self._call(delete)

    async def endpoints(self) -> list[str]:
        """Endpoint names that have deliveries or dead letters in the store."""
        return [backlog.endpoint for backlog in await self.backlogs()]

    async def backlogs(self) -> list[EndpointBacklog]:
        """Every endpoint with deliveries or dead letters in the store, by name."""

        def select(db: sqlite3.Connection) -> list[EndpointBacklog]:
            pending = dict(
                db.execute("SELECT endpoint, COUNT(*) FROM deliveries GROUP BY endpoint")
            )
            dead = dict(db.execute("SELECT endpoint, COUNT(*) FROM dead_letters GROUP BY endpoint"))
            return [
                EndpointBacklog(name, int(pending.get(name, 0)), int(dead.get(name, 0)))
                for name in sorted(set(pending) | set(dead))
            ]

        return await self._call(select)

    async def drop_endpoint(self, endpoint: str) -> EndpointBacklog:
        """Delete everything the store keeps for ``endpoint`` (its backlog and dead letters);
        returns what was deleted. Compaction then removes the events nobody else needs."""

        def drop(db: sqlite3.Connection) -> EndpointBacklog:
            pending = db.execute("DELETE FROM deliveries WHERE endpoint = ?", (endpoint,))
            dead = db.execute("DELETE FROM dead_letters WHERE endpoint = ?", (endpoint,))
            return EndpointBacklog(endpoint, pending.rowcount, dead.rowcount)

        return await self._call(drop)

    async def move_endpoint(self, old: str, new: str) -> EndpointBacklog:
        """Give ``old``'s backlog and dead letters to ``new`` (a renamed endpoint); returns
        what was moved. Deliveries ``new`` already has are kept once.

        Raises:
            ValueError: ``old`` and ``new`` are the same name.
        """
        if old == new:
            raise ValueError(f"moving endpoint {old!r} onto itself")

        def move(db: sqlite3.Connection) -> EndpointBacklog:
            pending = db.execute(
                "INSERT OR IGNORE INTO deliveries (endpoint, seq) "
                "SELECT ?, seq FROM deliveries WHERE endpoint = ?",
                (new, old),
            ).rowcount
            db.execute("DELETE FROM deliveries WHERE endpoint = ?", (old,))
            dead = db.execute(
                "UPDATE dead_letters SET endpoint = ? WHERE endpoint = ?", (new, old)
            ).rowcount
            return EndpointBacklog(old, pending, dead)

        return await self._call(move)

    async def probe(self) -> None:
        """Write (and commit) a small record, to learn whether the store can write again.

        Raises:
            StoreError: it cannot (a full disk...).
        """
        filler = "x" * _PROBE_BYTES

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?)",
                (f"{time.time()} {filler}",),
            )

        await self._call(write)


def _nothing(db: sqlite3.Connection) -> None:
    pass


def _create_private(path: Path) -> None:
    """Create the database file empty with mode 0600 when it does not exist yet.

    SQLite would create it with the process's umask (0644: every local user could read the
    events); an empty file is a valid empty database to it.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"store {path}: cannot create it: {exc.strerror or exc}") from None


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a database with tables that are not an rxsinks store's.

    Checked before anything is written (the WAL switch included): another application's
    database must not silently get rxsinks tables, nor its journal mode changed.
    """
    tables = {
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%'"
        )
    }
    foreign = sorted(tables - _TABLES)
    if not foreign:
        return
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is not None and row[0] == _FORMAT:
            return  # an rxsinks store somebody added a table to: still ours
    shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
    raise StoreError(
        f"store {path}: an SQLite database of something else (tables: {shown}), not an rxsinks "
        "store; it is left untouched: give store.path a file of its own"
    )


def _delete_deliveries(db: sqlite3.Connection, endpoint: str, seqs: Sequence[int]) -> None:
    """Delete ``endpoint``'s delivery rows for ``seqs``, a bounded ``IN`` list at a time."""
    for start in range(0, len(seqs), _IN_LIMIT):
        chunk = seqs[start : start + _IN_LIMIT]
        marks = ",".join("?" * len(chunk))
        db.execute(
            f"DELETE FROM deliveries WHERE endpoint = ? AND seq IN ({marks})", (endpoint, *chunk)
        )


def _store_error(path: Path, exc: BaseException) -> BaseException:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"store {path}: {exc}")
    return exc


def _resolve_all(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in answers:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
