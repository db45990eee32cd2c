"""The confirm journal: confirmed deliveries noted in a memory-mapped file, ahead of SQLite.

A delivered block must be marked delivered before the next block of its endpoint goes out, or a
crash could send it again. Through SQLite that is a commit on the store's thread per block: a
hand-over to the thread and back, which costs more than the POST itself on a small machine (the
thread wakes, takes the GIL from the event loop, commits, wakes the loop). The journal makes the
mark a memory write instead: the loop thread writes a 16-byte record for each confirmed event
into a ring mapped from a file beside the database (``rxsinks.db-confirms``), and the store's
thread applies the records to SQLite later, in batches, in one transaction each.

Durability is SQLite's ``synchronous=NORMAL``: the pages of a shared file mapping belong to the
kernel's page cache, so a record written before the process is killed is in the file afterwards;
a power loss may lose the last records (those events are delivered again, never lost). When the
store opens, it applies every record the previous process left before anything reads the queues.

Layout: a 64-byte header (magic, capacity, and the *tail*: how many records were applied to SQLite
since the file was created), then ``capacity`` slots of ``seq: u64, endpoint: u32, crc: u32``.
Record number ``n`` lives in slot ``n % capacity`` and its crc covers ``n`` too, so a slot still
holding a record of an earlier lap, or a record torn by a kill in the middle of its write, does
not check out: recovery reads from the tail until the first slot that does not.

Only one process uses a journal at a time (an exclusive ``flock``); another process opening the
same store (the CLI beside a running relay) works on SQLite alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["ConfirmJournal", "JournalBusy"]

_MAGIC = b"RXSJRNL1"
_HEADER = struct.Struct("<8sIIQ")  # magic, capacity, reserved, tail
_HEADER_SIZE = 64
_TAIL_OFFSET = 16
_TAIL = struct.Struct("<Q")
_RECORD = struct.Struct("<QII")  # seq, endpoint id, crc
_KEY = struct.Struct("<QQI")  # what the crc covers: record number, seq, endpoint id
DEFAULT_CAPACITY = 1 << 16  # 65,536 records: 1 MiB


class JournalBusy(Exception):
    """Another process holds the journal."""


class ConfirmJournal:
    """A ring of ``(endpoint id, seq)`` records in a memory-mapped file; see the module docstring.

    :meth:`append` runs on the event loop's thread; :meth:`unapplied` and :meth:`applied` on the
    store's thread. Record numbers only grow: ``tail <= head``, ``head - tail <= capacity``.

    Raises:
        JournalBusy: another process has the journal open.
        OSError: the file cannot be created or mapped.
    """

    def __init__(self, path: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalBusy(f"{self.path} is in use by another process") from None
            size = os.fstat(fd).st_size
            fresh = size < _HEADER_SIZE
            if not fresh:
                header = os.pread(fd, _HEADER.size, 0)
                magic, stored_capacity, _, _ = _HEADER.unpack(header)
                # anything else is not ours or was cut short: start a new one (the database
                # itself is intact; at worst a few confirmed events are delivered again)
                fresh = magic != _MAGIC or size != _HEADER_SIZE + stored_capacity * _RECORD.size
                if not fresh:
                    capacity = stored_capacity
            size = _HEADER_SIZE + capacity * _RECORD.size
            if fresh:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
                os.pwrite(fd, _HEADER.pack(_MAGIC, capacity, 0, 0), 0)
            # every block on disk now: a write to a hole of a shared mapping on a full disk is
            # a SIGBUS, where this is an OSError (ENOSPC) and the store goes on without journal
            _allocate(fd, size, fresh)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.capacity = capacity
        self._tail: int = _TAIL.unpack_from(self._map, _TAIL_OFFSET)[0]
        self._head: int = self._tail
        # what the previous process left: every record that checks out, from the tail on
        while self._head - self._tail < capacity and self._read(self._head) is not None:
            self._head += 1

    @property
    def head(self) -> int:
        """Records written so far (since the file was created)."""
        return self._head

    @property
    def tail(self) -> int:
        """Records applied to the database so far."""
        return self._tail

    @property
    def room(self) -> int:
        """How many records can be appended before the store applies some."""
        return self.capacity - (self._head - self._tail)

    def append(self, endpoint: int, seqs: Iterable[int]) -> bool:
        """Note ``seqs`` as delivered to ``endpoint``; False (nothing written) if there is no
        room for all of them."""
        seqs = tuple(seqs)
        count = len(seqs)
        if count > self.room:
            return False
        number = self._head
        capacity = self.capacity
        crc32, key = zlib.crc32, _KEY.pack
        fields: list[int] = []
        for offset, seq in enumerate(seqs):
            fields += (seq, endpoint, crc32(key(number + offset, seq, endpoint)))
        # one write per run of slots: up to the end of the ring, then from its start
        start = number % capacity
        first = min(count, capacity - start)
        if first:
            _records(first).pack_into(
                self._map, _HEADER_SIZE + start * _RECORD.size, *fields[: 3 * first]
            )
        if first < count:
            _records(count - first).pack_into(self._map, _HEADER_SIZE, *fields[3 * first :])
        # published only once written: the store's thread reads up to head
        self._head = number + count
        return True

    def unapplied(self) -> tuple[int, list[tuple[int, int]]]:
        """The records not applied yet, as ``(endpoint id, seq)``, and the head they end at."""
        records: list[tuple[int, int]] = []
        head = self._each_unapplied(
            lambda chunk: records.extend(
                (endpoint, seq) for seq, endpoint, _ in _RECORD.iter_unpack(chunk)
            )
        )
        return head, records

    def unapplied_by_endpoint(self) -> tuple[int, dict[int, list[int]]]:
        """Like :meth:`unapplied`, the seqs grouped by endpoint id (each in record order)."""
        groups: dict[int, list[int]] = {}

        def group(chunk: memoryview) -> None:
            # a block's records are consecutive: one dictionary look-up per run of them
            last: int | None = None
            seqs: list[int] = []
            for seq, endpoint, _ in _RECORD.iter_unpack(chunk):
                if endpoint != last:
                    seqs = groups.setdefault(endpoint, [])
                    last = endpoint
                seqs.append(seq)

        return self._each_unapplied(group), groups

    def _each_unapplied(self, take: Callable[[memoryview], object]) -> int:
        """Hand the unapplied records to ``take``, a span of the ring at a time; returns the
        head they end at."""
        head, tail, capacity = self._head, self._tail, self.capacity
        # written by this process (or checked when it opened): no crc to check again
        first, last = tail % capacity, head % capacity
        if head - tail == 0:
            return head
        # one span, or two when the records wrap around the end of the ring (or fill it)
        spans = [(first, last)] if first < last else [(first, capacity), (0, last)]
        view = memoryview(self._map)
        try:
            for start, end in spans:
                chunk = view[
                    _HEADER_SIZE + start * _RECORD.size : _HEADER_SIZE + end * _RECORD.size
                ]
                try:
                    take(chunk)
                finally:
                    chunk.release()
        finally:
            view.release()
        return head

    def applied(self, head: int) -> None:
        """The records up to ``head`` are in the database: their slots may be reused."""
        if head <= self._tail:
            return
        _TAIL.pack_into(self._map, _TAIL_OFFSET, head)
        self._tail = head

    def close(self) -> None:
        """Unmap and unlock (the file stays, for the next process)."""
        with contextlib.suppress(ValueError, BufferError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _read(self, number: int) -> tuple[int, int] | None:
        seq, endpoint, crc = _RECORD.unpack_from(
            self._map, _HEADER_SIZE + (number % self.capacity) * _RECORD.size
        )
        if zlib.crc32(_KEY.pack(number, seq, endpoint)) != crc:
            return None
        return endpoint, seq


@functools.lru_cache(maxsize=256)
def _records(count: int) -> struct.Struct:
    """The layout of ``count`` consecutive records (a block's, written in one call)."""
    return struct.Struct("<" + "QII" * count)


def _allocate(fd: int, size: int, fresh: bool) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        if fresh:  # a file system without fallocate: write the zeros (an older file was)
            os.pwrite(fd, bytes(size - _HEADER_SIZE), _HEADER_SIZE)
