"""What a durable store offers: the part a delivery stage's buffer needs, the part the relay
needs, and the optional features some stores have, each declared as a protocol of its own.

SQLite (:class:`~rxsinks.SQLiteStore`) and Redis Streams (:class:`~rxsinks.RedisStore`) provide
:class:`Store`. Beyond it, a store may note a confirm at once, without a round trip to its
thread (:class:`ConfirmsAtOnce`: SQLite's confirm journal), wait for events other processes
append (:class:`Tails`: Redis' blocking read), count dead-letter replays made by other
processes (:class:`CountsReplays`: Redis), and tell when each delivery arrived
(:class:`KeepsArrivals`: both). Code checks for them with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._event import Event

if TYPE_CHECKING:
    from .sqlite import EndpointBacklog

__all__ = [
    "Arrived",
    "ConfirmsAtOnce",
    "CountsReplays",
    "KeepsArrivals",
    "QueueStore",
    "Store",
    "Stored",
    "Tails",
]

Stored = tuple[int, Event]
"""An event as a store keeps it: its sequence number, and the event."""

Arrived = tuple[int, Event, float | None]
"""An event as a store keeps it, with when the store accepted it (wall-clock seconds since the
epoch; ``None`` when the store does not know, for a delivery put back from the dead letters)."""


class QueueStore(Protocol):
    """What a durable buffer needs from a store."""

    async def read(self, endpoint: str, after: int, limit: int) -> list[Stored]:
        """Up to ``limit`` of the endpoint's undelivered events with a seq above ``after``."""
        ...

    async def backlog(self, endpoint: str) -> tuple[int, int]:
        """How many events the endpoint has to deliver, and the highest seq stored so far."""
        ...

    async def confirm(self, endpoint: str, seqs: Sequence[int]) -> None:
        """The endpoint delivered these events."""
        ...

    async def dead_letter(
        self, endpoint: str, seqs: Sequence[int], error: str, attempts: int
    ) -> None:
        """The endpoint gave up on these events: keep them as dead letters, with the reason."""
        ...


class Store(QueueStore, Protocol):
    """Everything the relay and the command line use of a durable store."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def append(
        self, events: Sequence[Event], routes: Sequence[Sequence[str]]
    ) -> list[int]: ...
    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None, limit: int = 10_000
    ) -> list[Any]: ...
    async def replay(
        self,
        endpoint: str | None = None,
        since: float | None = None,
        *,
        ids: Collection[int] | None = None,
    ) -> list[tuple[str, int]]: ...
    async def compact(self, endpoints: Collection[str] | None = None) -> int: ...
    async def backlogs(self) -> list[EndpointBacklog]: ...
    async def drop_endpoint(self, endpoint: str) -> EndpointBacklog: ...
    async def move_endpoint(self, old: str, new: str) -> EndpointBacklog: ...
    async def probe(self) -> None: ...


@runtime_checkable
class ConfirmsAtOnce(Protocol):
    """A store that notes a confirm at once (SQLite: in its confirm journal)."""

    def confirm_now(self, endpoint: str, seqs: Sequence[int]) -> bool:
        """Note the confirm; False when it cannot (then :meth:`QueueStore.confirm` does)."""
        ...


@runtime_checkable
class Tails(Protocol):
    """A store that can wait for events another process appends (Redis: a blocking read)."""

    async def tail(self, endpoint: str, after: int, limit: int, wait: float = 1.0) -> list[Stored]:
        """The endpoint's events after ``after`` as soon as one is stored, ``[]`` after
        ``wait`` seconds."""
        ...


@runtime_checkable
class CountsReplays(Protocol):
    """A store that counts dead-letter replays, so other processes notice them (Redis)."""

    async def replay_generation(self, endpoint: str) -> int:
        """A number that changes whenever the endpoint's dead letters are replayed."""
        ...


@runtime_checkable
class KeepsArrivals(Protocol):
    """A store that keeps when it accepted each event (SQLite, Redis), so a delivery delay
    counted from the arrival is served once, across restarts."""

    async def read_arrivals(self, endpoint: str, after: int, limit: int) -> list[Arrived]:
        """Like :meth:`QueueStore.read`, each event with when the store accepted it."""
        ...
