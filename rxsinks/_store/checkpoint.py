"""WAL checkpoints on a thread of their own, off the store's commit path.

SQLite in WAL mode copies the log back into the database (a *checkpoint*) whenever a commit
leaves the log over 1,000 pages, inside that commit, fsyncs included: on the store's thread, that
stalls every ingest request queued behind it (measured: the p99 ingest-to-receipt latency at 500
events/s went from 2.7 ms to 6 ms). SQLite's advice for such applications is to turn the
automatic checkpoints off and run them from another connection: a ``PASSIVE`` checkpoint never
blocks the writer, which keeps committing to the log meanwhile.

A passive checkpoint copies the log back but leaves the file as large as it grew: a burst (a
backlog of a million events) leaves a log of hundreds of megabytes behind. So once a checkpoint
found every frame of the log copied back and the file is over :data:`TRUNCATE_ABOVE`, the
checkpointer asks for a ``TRUNCATE`` checkpoint, which empties the file. That one needs the
writer's lock and no reader on the log; it never waits for them (no busy timeout on this
connection): when the store is busy it is simply tried at the next interval.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

from .._throttle import LogThrottle

__all__ = ["Checkpointer"]

log = logging.getLogger("rxsinks.store")

INTERVAL = 0.25  # seconds between checkpoints (sooner when the store asks)
TRUNCATE_ABOVE = 4 << 20
"""Bytes of write-ahead log past which a checkpoint that copied all of it truncates the file."""
# a failing checkpoint (a full disk) fails four times a second: one line a minute is enough
WARN_EVERY = 60.0


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on ``path`` every ``interval`` seconds, or as
    soon as :meth:`poke` asks, until :meth:`stop`; truncates the log when all of it is copied
    back and it is over ``truncate_above`` bytes.

    Raises:
        sqlite3.Error: the database cannot be opened (the caller keeps automatic checkpoints).
    """

    def __init__(
        self, path: Path, interval: float = INTERVAL, truncate_above: int = TRUNCATE_ABOVE
    ) -> None:
        # timeout 0: a checkpoint that would have to wait for the store's writer (or hold the
        # writer's lock while it waits for a reader) gives up at once instead
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.0)
        self._interval = interval
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._truncate_above = truncate_above
        self.truncated = 0  # how many times the log was truncated
        self._failures = LogThrottle(log, logging.WARNING, WARN_EVERY)
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"rxsinks-checkpoint:{path}", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        """Checkpoint now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after a last checkpoint, and close the connection."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                try:
                    self._checkpoint()
                except sqlite3.Error as exc:  # a full disk, say: the log keeps it, try again
                    self._failures.failed(
                        "store %s: WAL checkpoint failed, will retry: %s", self._path, exc
                    )
                else:
                    self._failures.succeeded("store %s: WAL checkpoints work again", self._path)
                if self._stopping:
                    return
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()

    def _checkpoint(self) -> None:
        busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy or frames != copied or self._wal_bytes() <= self._truncate_above:
            return
        # all of the log is in the database: empty the file, if nobody is using it right now
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            self.truncated += 1

    def _wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size
        except OSError:
            return 0
