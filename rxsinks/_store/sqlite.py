"""The durable store behind the per-endpoint queues: embedded SQLite (WAL), no server.

Layout (see :mod:`rxsinks._store.ledger` for the tables and their invariants): one log of
accepted events, one row each (``events``: seq -> the event's JSON as received, when it was
accepted, and its *route set*: the endpoints it was routed to), and per endpoint a *delivery
cursor* (every event routed to it up to there is done) with the few deliveries done beyond it
(confirmed out of order) or owed beside it (dead letters replayed), and dead letters
(``dead_letters``). So an event costs the same whatever the number of endpoints: the ingest
commits one row per event before it answers 2xx, and a confirm moves a cursor. An endpoint
marks a block delivered only after the receiver confirmed it (2xx/3xx), and before its next
block goes: the mark is a record in the confirm journal (a memory-mapped file beside the
database, see ``rxsinks._store.journal``), which the store thread applies to the cursors in
batches, and which the next open applies if a killed process left records. A journal record
names one (endpoint, seq), so blocks delivered side by side (an endpoint's ``concurrency``) are
confirmed in any order. So after any crash or restart, every accepted event is delivered to
every endpoint that had not confirmed it, in seq order (at-least-once: only the blocks in
flight at the crash can repeat; receivers dedupe on the event id / ``webhook-id``).
``events.accepted`` (when the ingest stored an event) is what a delivery delay counts from for
an event without a timestamp.

One relay per store: a relay opens it with ``exclusive=True``, which takes an exclusive lock on
``<path>.lock``; a second relay on the same file gets :class:`StoreLockedError` (two relays
would each deliver every event). Other processes (the CLI listing dead letters) open it without
the lock, beside the running relay. Every file holding event payloads (the database, its
``-wal`` and ``-shm`` files, the confirm journal, the lock) is made readable by its owner only
(0600). A database that holds tables of something else is refused, never adopted. A store of
the previous format (a row per event and endpoint) is migrated when it is opened, once, under
the store's lock.

All database I/O runs on one dedicated thread with its own connection, never on the event loop
(the loop only writes journal records into mapped memory). The thread commits whatever work is
waiting in one transaction (group commit), so ingest throughput stays close to memory mode under
concurrency. Reads share the events they decode (the most recent ones, see
:data:`EVENT_CACHE`): endpoints that fell behind read the same stretch of the log, and each
event is decoded once for all of them rather than once per endpoint.

**Disk.** Events whose deliveries are all done are compacted away (keeping ``retention``
seconds of history), a few thousand per statement so ingest commits go in between; the pages
they free go back to the file system a few megabytes at a time (``auto_vacuum=INCREMENTAL``),
and the write-ahead log is truncated once everything in it is in the database (see
``rxsinks._store.checkpoint``). So after a backlog drains the files shrink back to about the
size of what is still kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import queue as thread_queue
import sqlite3
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._event import Event, encode_event
from .._exceptions import StoreError, StoreLockedError
from .._throttle import LogThrottle
from .checkpoint import Checkpointer
from .journal import ConfirmJournal, JournalBusy
from .ledger import COMPACT_CHUNK, FORMAT, FORMAT_1, SCHEMA, TABLES, Ledger, migrate_format_1

__all__ = [
    "EVENT_CACHE",
    "DeadLetterRecord",
    "EndpointBacklog",
    "SQLiteStore",
]

log = logging.getLogger("rxsinks.store")

_R = TypeVar("_R")

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
# pages given back to the file system per step of the incremental vacuum: 4 MiB of 4 KiB pages
# take about 6 ms, so ingest commits are never held up for long
_VACUUM_STEP = 1024
# free pages kept for the next events instead of being given back (1 MiB of 4 KiB pages)
_VACUUM_KEEP = 256
EVENT_CACHE = 4096
"""Decoded events kept for reads (the most recently appended or read): one copy per event for
every endpoint reading it, and no JSON decoded again while an endpoint catches up."""


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
    __slots__ = ("alone", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        alone: bool = False,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        # runs outside any transaction, after the batch's commit (a statement that manages
        # its own, such as an incremental vacuum step)
        self.alone = alone


class _Events:
    """Decoded events by seq, the most recently used ones (store thread only)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[Event, float]] = OrderedDict()
        self.decoded = 0  # events decoded from their stored JSON so far

    def put(self, seq: int, event: Event, accepted: float) -> None:
        entries = self._entries
        entries[seq] = (event, accepted)
        if len(entries) > self.capacity:
            entries.popitem(last=False)

    def get(
        self, db: sqlite3.Connection, seqs: Sequence[int]
    ) -> list[tuple[int, Event, float | None]]:
        """The events of ``seqs`` (in that order), from memory or decoded from the database;
        a seq whose row is gone is left out."""
        entries = self._entries
        missing = [seq for seq in seqs if seq not in entries]
        for start in range(0, len(missing), _IN_LIMIT):
            chunk = missing[start : start + _IN_LIMIT]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT seq, body, accepted FROM events WHERE seq IN ({marks})"
            for seq, body, accepted in db.execute(query, chunk):
                self.put(seq, Event._from_text(body), accepted)
                self.decoded += 1
        rows: list[tuple[int, Event, float | None]] = []
        for seq in seqs:
            entry = entries.get(seq)
            if entry is not None:
                entries.move_to_end(seq)
                rows.append((seq, entry[0], entry[1]))
        return rows


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
        event_cache: decoded events kept for reads (see :data:`EVENT_CACHE`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: float = 0.0,
        max_bytes: int | None = None,
        exclusive: bool = False,
        event_cache: int = EVENT_CACHE,
    ) -> None:
        self.path = Path(path)
        self.retention = retention
        self.max_bytes = max_bytes
        self._lock = _StoreLock(self.path) if exclusive else None
        self._errors = LogThrottle(log, logging.ERROR, _ERROR_EVERY)
        self._jobs: thread_queue.SimpleQueue[_Job | None] = thread_queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # the confirm journal (see _journal) and the endpoint ids its records use (the
        # ledger's); the ids are written by the store thread, the journal is appended to by the
        # event loop's thread
        self._journal: ConfirmJournal | None = None
        self._checkpointer: Checkpointer | None = None
        self._ledger = Ledger()
        self._events = _Events(max(1, event_cache))
        self._batches = 0
        self._registering: set[str] = set()
        self._apply_requested = False
        self._apply_timer: asyncio.TimerHandle | None = None
        # appends waiting for the end of the loop's turn, to go to the thread as one job
        self._appends: list[
            tuple[list[Event], list[str], Sequence[Sequence[str]], asyncio.Future[list[int]]]
        ] = []

    @property
    def decoded(self) -> int:
        """How many events reads decoded from their stored JSON so far (the others came from
        memory: appended by this process, or read already for another endpoint)."""
        return self._events.decoded

    # -- life cycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the database; raises :class:`StoreError` with a clear message
        (:class:`StoreLockedError` when ``exclusive`` and another relay holds it).

        A store of the previous format is migrated first (see
        :func:`~rxsinks._store.ledger.migrate_format_1`), which needs the store's lock: a
        relay of the previous version still running on it is a :class:`StoreError`.
        """
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
            db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, cached_statements=256
            )
            tables = _refuse_foreign(db, path)
            if not tables:
                # a new store: freed pages can be given back (set before the first table)
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=OFF")
            self._upgrade(db, migrate=_format(db, tables) == FORMAT_1)
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))
            db.execute("COMMIT")
            if row is not None and row[0] != FORMAT:
                raise StoreError(f"store {path}: format {row[0]!r}, expected {FORMAT!r}")
            if self.max_bytes is not None:
                page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
                db.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page_size)}")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"store {path}: integrity check failed: {check}")
            self._ledger.refresh(db)
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

    def _upgrade(self, db: sqlite3.Connection, *, migrate: bool) -> None:
        """Migrate a store of format 1 (``migrate``) to this format, and rewrite a file that
        cannot give freed pages back so that it can (what a migration does last: a migration
        killed before it leaves such a file); both under the store's lock.

        Raises:
            StoreError: the store needs migrating and another process (a relay of the previous
                version) holds its lock.
        """
        rewrite = int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2
        if not migrate and not rewrite:
            return
        lock = _StoreLock(self.path) if self._lock is None else None
        if lock is not None:
            try:
                lock.acquire()
            except StoreLockedError as exc:
                if not migrate:
                    return  # the relay holding it does it when it starts
                raise StoreError(
                    f"store {self.path} has the previous format ({FORMAT_1!r}) and must be "
                    f"migrated, which needs it to itself: {exc}"
                ) from None
        started = time.monotonic()
        pending = 0
        try:
            if migrate:
                db.execute("BEGIN IMMEDIATE")
                try:
                    pending = migrate_format_1(db)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
            # auto_vacuum is switched on for a file with tables by rewriting it (VACUUM)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("VACUUM")
        finally:
            if lock is not None:
                lock.release()
        if migrate:
            log.warning(
                "store %s: migrated from format %r to %r (%d pending deliveries kept) in %.1f s",
                self.path,
                FORMAT_1,
                FORMAT,
                pending,
                time.monotonic() - started,
            )
        else:
            log.info(
                "store %s: rewritten to give freed pages back (%.1f s)",
                self.path,
                time.monotonic() - started,
            )

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
        """Settle the deliveries the journal holds as confirmed, in one transaction."""
        self._apply_requested = False
        journal = self._journal
        if journal is None or journal.head == journal.tail:
            return
        head, by_endpoint = journal.unapplied_by_endpoint()
        ledger = self._ledger
        try:
            db.execute("BEGIN IMMEDIATE")
            for ident, seqs in by_endpoint.items():
                if ident in ledger.names:  # (an id is known once committed)
                    ledger.settle(db, ident, seqs)
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
                jobs = [i for i in batch if i is not None and i.fn is not _nothing]
                # endpoints and route sets another process added (the CLI beside the relay)
                self._ledger.refresh(db)
                # confirms noted before these jobs were queued are applied first, so every
                # job sees them (a read of the queues, a count, a compaction)
                self._apply_journal(db)
                self._execute(db, [job for job in jobs if not job.alone])
                for job in jobs:
                    if job.alone:
                        self._execute_alone(db, job)
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
        ledger = self._ledger
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            if len(jobs) == 1:
                # alone in its transaction: a failure rolls back just it, no savepoint needed
                job = jobs[0]
                try:
                    results.append((job, job.fn(db), None))
                except Exception as exc:
                    db.execute("ROLLBACK")
                    ledger.rolled_back()
                    results.append((job, None, _store_error(self.path, exc)))
                    self._report(results)
                    return
            else:
                for job in jobs:
                    db.execute("SAVEPOINT job")
                    mark = ledger.mark()
                    try:
                        results.append((job, job.fn(db), None))
                        db.execute("RELEASE job")
                    except Exception as exc:
                        db.execute("ROLLBACK TO job")
                        db.execute("RELEASE job")
                        ledger.rolled_back(mark)
                        results.append((job, None, _store_error(self.path, exc)))
            db.execute("COMMIT")
        except Exception as exc:
            # the commit itself failed (disk full...): nothing of this batch is durable
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            ledger.rolled_back()
            failure = _store_error(self.path, exc)
            results = [(job, None, failure) for job in jobs]
        else:
            ledger.committed()
        self._report(results)

    def _execute_alone(self, db: sqlite3.Connection, job: _Job) -> None:
        try:
            result: tuple[_Job, Any, BaseException | None] = (job, job.fn(db), None)
        except Exception as exc:
            result = (job, None, _store_error(self.path, exc))
        self._report([result])

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

    async def _call(self, fn: Callable[[sqlite3.Connection], _R], *, alone: bool = False) -> _R:
        if self._closed or self._thread is None:
            raise StoreError(f"store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future, alone))
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
        """Commit ``events``, each with the endpoints of ``routes[i]`` to deliver it to.

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
        self._appends.append((list(events), bodies, routes, future))
        if len(self._appends) == 1:
            loop.call_soon(self._submit_appends)
        return await future

    def _submit_appends(self) -> None:
        batch, self._appends = self._appends, []
        if not batch:
            return
        if self._closed:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(StoreError(f"store {self.path} is closed"))
            return
        now = time.time()
        ledger = self._ledger
        cache = self._events

        def insert(db: sqlite3.Connection) -> list[list[int]]:
            cursor = db.cursor()
            results = []
            stored: list[tuple[int, Event]] = []
            for events, bodies, routes, _ in batch:
                seqs = []
                for event, body, names in zip(events, bodies, routes, strict=True):
                    cursor.execute(
                        "INSERT INTO events (body, accepted, route) VALUES (?, ?, ?)",
                        (body, now, ledger.route(db, names)),
                    )
                    seq = int(cursor.lastrowid or 0)
                    seqs.append(seq)
                    stored.append((seq, event))
                results.append(seqs)
            # cached once committed: a seq rolled back is given to the next event
            ledger.on_commit(lambda: _cache_all(cache, stored, now))
            return results

        def answer(done: asyncio.Future[list[list[int]]]) -> None:
            error = done.exception()
            for index, (*_, future) in enumerate(batch):
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
        ledger = self._ledger
        events = self._events

        def select(db: sqlite3.Connection) -> list[tuple[int, Event, float | None]]:
            ident = ledger.endpoint(db, endpoint)
            if ident is None:
                return []
            return events.get(db, ledger.pending(db, ident, after, limit))

        return await self._call(select)

    async def backlog(self, endpoint: str) -> tuple[int, int]:
        """How many deliveries ``endpoint`` has to do, and the highest seq in the log."""
        ledger = self._ledger

        def count(db: sqlite3.Connection) -> tuple[int, int]:
            ident = ledger.endpoint(db, endpoint)
            pending = 0 if ident is None else ledger.count(db, ident)
            top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            return pending, int(top)

        return await self._call(count)

    async def pending(self, endpoint: str | None = None) -> int:
        """How many deliveries are still to do (for one endpoint, or all)."""
        ledger = self._ledger

        def count(db: sqlite3.Connection) -> int:
            if endpoint is not None:
                ident = ledger.endpoint(db, endpoint)
                return 0 if ident is None else ledger.count(db, ident)
            idents = [int(ident) for (ident,) in db.execute("SELECT id FROM endpoints")]
            return sum(ledger.count(db, ident) for ident in idents)

        return await self._call(count)

    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None:
        """The receiver confirmed these events: never deliver them to ``endpoint`` again."""
        seqs = list(seqs)
        ledger = self._ledger

        def settle(db: sqlite3.Connection) -> None:
            ident = ledger.endpoint(db, endpoint)
            if ident is not None:
                ledger.settle(db, ident, seqs)

        await self._call(settle)

    def confirm_now(self, endpoint: str, seqs: Sequence[int]) -> bool:
        """Like :meth:`confirm`, done before returning: the confirm goes into the journal.

        Call it on the event loop's thread. Returns False, and notes nothing, when the journal
        cannot take it (no journal, an endpoint it does not know yet, or no room until the
        store thread applies what it holds): then use :meth:`confirm`.
        """
        journal = self._journal
        if journal is None or self._closed:
            return False
        ident = self._ledger.ids.get(endpoint)
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
        ledger = self._ledger

        def register(db: sqlite3.Connection) -> None:
            ledger.endpoint_id(db, endpoint)  # known to confirm_now once committed

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
        ledger = self._ledger

        def move(db: sqlite3.Connection) -> None:
            ident = ledger.endpoint(db, endpoint)
            if ident is not None:
                ledger.settle(db, ident, seqs)
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
        wanted = None if ids is None else sorted({int(i) for i in ids})
        ledger = self._ledger

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
                args.append(_json_list(wanted))
            rows = db.execute(query + " ORDER BY id", args).fetchall()
            for _, name, seq in rows:
                ledger.reopen(db, ledger.endpoint_id(db, name), seq)
            db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i, _, _ in rows])
            return [(name, seq) for _, name, seq in rows]

        return await self._call(move)

    async def compact(self, endpoints: Collection[str] | None = None) -> int:
        """Delete events nobody needs any more (every endpoint they were routed to delivered
        them, they are no dead letter and nothing owes them, older than ``retention``), then
        give the pages they took back to the file system; returns how many events.

        It goes a chunk at a time (see :data:`~rxsinks._store.ledger.COMPACT_CHUNK`), each its
        own job on the store thread, so ingest commits go in between.

        Args:
            endpoints: the endpoints being delivered for (the configured ones). Accepted for
                the :class:`~rxsinks._store.protocol.Store` protocol: here each endpoint's
                cursor holds back only the events routed to it, so an endpoint removed from
                the configuration (whose backlog waits to be dropped or moved) keeps only its
                own events, configured or not.
        """
        del endpoints  # (see above)
        horizon = time.time() - self.retention
        ledger = self._ledger
        removed = 0
        while True:

            def chunk(db: sqlite3.Connection) -> int:
                return ledger.compact(db, horizon, COMPACT_CHUNK)

            done = await self._call(chunk)
            removed += done
            if done < COMPACT_CHUNK:
                break
        await self.reclaim()
        return removed

    async def reclaim(self) -> int:
        """Give free pages of the database back to the file system, a few megabytes per step
        (each its own job, outside any transaction), keeping a little room for new events;
        returns how many pages. The file shrinks once the log is checkpointed."""
        given = 0

        def step(db: sqlite3.Connection) -> int:
            if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
                return 0  # (not incremental: nothing to give back this way)
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            pages = min(free - _VACUUM_KEEP, _VACUUM_STEP)
            if pages <= 0:
                return 0
            # (a script steps the pragma to its end; execute() would free a single page)
            db.executescript(f"PRAGMA incremental_vacuum({pages});")
            return pages

        while True:
            pages = await self._call(step, alone=True)
            given += pages
            if pages < _VACUUM_STEP:
                break
        if given and self._checkpointer is not None:
            self._checkpointer.poke()
        return given

    async def endpoints(self) -> list[str]:
        """Endpoint names that have deliveries or dead letters in the store."""
        return [backlog.endpoint for backlog in await self.backlogs()]

    async def backlogs(self) -> list[EndpointBacklog]:
        """Every endpoint with deliveries or dead letters in the store, by name."""
        ledger = self._ledger

        def select(db: sqlite3.Connection) -> list[EndpointBacklog]:
            pending = {
                str(name): ledger.count(db, int(ident))
                for ident, name in db.execute("SELECT id, name FROM endpoints").fetchall()
            }
            dead = dict(db.execute("SELECT endpoint, COUNT(*) FROM dead_letters GROUP BY endpoint"))
            return [
                EndpointBacklog(name, int(pending.get(name, 0)), int(dead.get(name, 0)))
                for name in sorted(set(pending) | set(dead))
                if pending.get(name) or dead.get(name)
            ]

        return await self._call(select)

    async def drop_endpoint(self, endpoint: str) -> EndpointBacklog:
        """Delete everything the store keeps for ``endpoint`` (its backlog and dead letters);
        returns what was deleted. Compaction then removes the events nobody else needs."""
        ledger = self._ledger

        def drop(db: sqlite3.Connection) -> EndpointBacklog:
            ident = ledger.endpoint(db, endpoint)
            pending = 0 if ident is None else ledger.forget(db, ident)
            dead = db.execute("DELETE FROM dead_letters WHERE endpoint = ?", (endpoint,))
            return EndpointBacklog(endpoint, pending, dead.rowcount)

        return await self._call(drop)

    async def move_endpoint(self, old: str, new: str) -> EndpointBacklog:
        """Give ``old``'s backlog and dead letters to ``new`` (a renamed endpoint); returns
        what was moved. Deliveries ``new`` already has are kept once.

        Raises:
            ValueError: ``old`` and ``new`` are the same name.
        """
        if old == new:
            raise ValueError(f"moving endpoint {old!r} onto itself")
        ledger = self._ledger

        def move(db: sqlite3.Connection) -> EndpointBacklog:
            source = ledger.endpoint(db, old)
            pending = 0
            if source is not None:
                target = ledger.endpoint_id(db, new)
                seqs = list(ledger.owed_seqs(db, source))
                pending = sum(1 for seq in seqs if ledger.reopen(db, target, seq))
                ledger.forget(db, source)
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


def _cache_all(cache: _Events, stored: list[tuple[int, Event]], accepted: float) -> None:
    for seq, event in stored:
        cache.put(seq, event, accepted)


def _json_list(values: Iterable[int]) -> str:
    return "[" + ",".join(str(int(value)) for value in values) + "]"


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


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> set[str]:
    """Refuse a database with tables that are not an rxsinks store's; returns its tables.

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
    foreign = sorted(tables - TABLES)
    if not foreign:
        return tables
    if _format(db, tables) in (FORMAT, FORMAT_1):
        return tables  # an rxsinks store somebody added a table to: still ours
    shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
    raise StoreError(
        f"store {path}: an SQLite database of something else (tables: {shown}), not an rxsinks "
        "store; it is left untouched: give store.path a file of its own"
    )


def _format(db: sqlite3.Connection, tables: set[str]) -> str | None:
    """The format a database says it has (``None``: a new one)."""
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is not None:
            return str(row[0])
    # format 1 wrote its tables and its format row in two steps: a kill between them left one
    return FORMAT_1 if "deliveries" in tables else None


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
