"""A small store in memory, for the durable buffer's tests: a real ``QueueStore``, kept in dicts.

:class:`MemoryStore` keeps one delivery per (endpoint, seq) as SQLite and Redis do, so confirms
and dead letters in any order remove exactly the events they name. Its calls never wait, so
under a ``TestScheduler`` they finish in the event loop's next turns and virtual time stands
still meanwhile. Tests can make the next calls of a method fail (:attr:`failing`), and read
what happened (:attr:`calls`, :attr:`confirmed`, :attr:`dead`). :class:`JournalingMemoryStore`
also notes confirms at once, like SQLite's journal (``ConfirmsAtOnce``).

A crash of the process holding a durable queue is a new queue on the same store object: what
the store holds is what was recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rxsinks._event import Event
from rxsinks._exceptions import StoreError


class MemoryStore:
    """One endpoint's (or several endpoints') deliveries in memory; see the module docstring.

    Args:
        clock: what :attr:`calls` records each call's time with (virtual time, say).
        wall: the wall clock arrivals are stamped with (default ``time.time``).
    """

    def __init__(
        self,
        clock: Callable[[], float] = lambda: 0.0,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        self.wall = wall or time.time
        self.seq = 0
        self.events: dict[int, tuple[Event, float]] = {}  # seq -> event, when it arrived
        self.deliveries: dict[str, set[int]] = {}
        self.confirmed: list[int] = []  # in the order confirms were recorded
        self.dead: list[tuple[int, str, int]] = []  # seq, reason, attempts
        self.calls: list[tuple[float, str]] = []  # (clock, what) of every queue call
        # method name ("backlog", "read", "confirm", "dead_letter") -> how many of its next
        # calls raise StoreError
        self.failing: dict[str, int] = {}

    def add(self, events: Sequence[Event], endpoint: str = "hook") -> list[int]:
        """Store ``events`` for ``endpoint`` (as an ingest would) and return their seqs."""
        seqs = []
        for event in events:
            self.seq += 1
            self.events[self.seq] = (event, self.wall())
            self.deliveries.setdefault(endpoint, set()).add(self.seq)
            seqs.append(self.seq)
        return seqs

    def pending(self, endpoint: str = "hook") -> list[int]:
        """The seqs still to deliver to ``endpoint``, in order."""
        return sorted(self.deliveries.get(endpoint, ()))

    def _call(self, method: str, what: str) -> None:
        self.calls.append((self.clock(), what))
        if self.failing.get(method):
            self.failing[method] -= 1
            raise StoreError(f"{what} failed (as the test asked)")

    async def read(self, endpoint: str, after: int, limit: int) -> list[tuple[int, Event]]:
        return [(seq, event) for seq, event, _ in await self.read_arrivals(endpoint, after, limit)]

    async def read_arrivals(
        self, endpoint: str, after: int, limit: int
    ) -> list[tuple[int, Event, float | None]]:
        self._call("read", f"read after {after}")
        seqs = [seq for seq in self.pending(endpoint) if seq > after][:limit]
        return [(seq, *self.events[seq]) for seq in seqs]

    async def backlog(self, endpoint: str) -> tuple[int, int]:
        self._call("backlog", "backlog")
        return len(self.deliveries.get(endpoint, ())), self.seq

    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None:
        self._call("confirm", f"confirm {list(seqs)}")
        self._remove(endpoint, seqs)
        self.confirmed += seqs

    async def dead_letter(
        self, endpoint: str, seqs: Sequence[int], error: str, attempts: int
    ) -> None:
        self._call("dead_letter", f"dead letter {list(seqs)}")
        self._remove(endpoint, seqs)
        self.dead += [(seq, error, attempts) for seq in seqs]

    def _remove(self, endpoint: str, seqs: Sequence[int]) -> None:
        waiting = self.deliveries.get(endpoint, set())
        for seq in seqs:
            waiting.discard(seq)


class JournalingMemoryStore(MemoryStore):
    """A :class:`MemoryStore` that notes confirms at once, as SQLite's journal does."""

    def confirm_now(self, endpoint: str, seqs: Sequence[int]) -> bool:
        self.calls.append((self.clock(), f"confirm now {list(seqs)}"))
        self._remove(endpoint, seqs)
        self.confirmed += seqs
        return True
