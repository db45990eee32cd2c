"""What happened to a block: the records on an endpoint's outcome stream and dead-letter stream."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["DeadLetter", "Outcome", "OutcomeKind"]


class OutcomeKind(enum.StrEnum):
    """Kinds of :class:`Outcome`."""

    DELIVERED = "delivered"
    """A block was accepted by the receiver (2xx/3xx)."""
    FAILED = "failed"
    """One attempt failed (status or transport error); ``retry_in`` is None when it will not be
    retried (a ``DEAD_LETTERED`` outcome follows)."""
    DEAD_LETTERED = "dead_lettered"
    """The block was given up on (policy stop, permanent error, disabled or closed endpoint)."""
    DROPPED = "dropped"
    """A bounded queue dropped the block (overflow policy)."""
    BREAKER_OPENED = "breaker_opened"
    BREAKER_HALF_OPEN = "breaker_half_open"
    BREAKER_CLOSED = "breaker_closed"
    DISABLED = "disabled"
    """The endpoint disabled itself (it answered 410 Gone)."""


class Outcome(NamedTuple):
    """One entry of an outcome stream: an immutable record.

    (A named tuple rather than a frozen dataclass: a delivery stage makes one per block on its
    hottest path, and a named tuple costs a third as much to build.)

    Attributes:
        kind: what happened.
        events: the block concerned (empty for breaker transitions).
        attempt: the attempt number for this block (1 for the first try), 0 when not applicable.
        error: the failure, if any.
        status: the HTTP status of the attempt, if there was an answer.
        retry_in: seconds until the next attempt (``FAILED`` only; None: given up).
        latency: seconds from the block's first attempt to its delivery (``DELIVERED`` only).
        endpoint: the endpoint's name, when known.
    """

    kind: OutcomeKind
    events: Sequence[Any] = ()
    attempt: int = 0
    error: BaseException | None = None
    status: int | None = None
    retry_in: float | None = None
    latency: float | None = None
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A block that will not be delivered, with the reason. Kept, never silently dropped.

    Attributes:
        events: the block.
        error: the last error (the reason it was given up on).
        attempts: how many attempts were made.
        endpoint: the endpoint's name, when known.
    """

    events: Sequence[Any]
    error: BaseException
    attempts: int
    endpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
