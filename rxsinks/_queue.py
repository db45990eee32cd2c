"""A delivery stage's buffer in memory: its bound, its overflow policy, its hooks and counters.

The buffer is not an operator of its own. Rx has no back-pressure (``on_next`` returns nothing),
so a queue placed above a delivery stage could never learn when a block was delivered: it would
hand every item on at once, and its bound would bound nothing. Reactor's
``onBackpressureBuffer`` works because its subscriber requests items; rxsinks' delivery stage
(:func:`~rxsinks.deliver`) is that subscriber and owns its buffer, so :func:`queue` only
describes it: ``deliver(sink, queue=queue(max_events=10_000))``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from reactivex import Observable

__all__ = ["Overflow", "Queue", "queue", "weight_of"]

log = logging.getLogger("rxsinks.queue")

_T = TypeVar("_T")
Overflow = Literal["drop_oldest", "drop_newest", "error"]
OVERFLOWS: tuple[Overflow, ...] = ("drop_oldest", "drop_newest", "error")
Hook = Callable[[Any], None]

# a tuple of types is checked faster than a union
_BLOCK_TYPES = (tuple, list)


def weight_of(item: object) -> int:
    """How many events an item stands for: the length of a block, else 1."""
    return len(item) if isinstance(item, _BLOCK_TYPES) else 1


def call_hook(hook: Callable[..., None], *args: Any) -> None:
    """Call a user hook; a raising one is logged, never let into the stage's bookkeeping."""
    # a raising hook (a metrics bug, say) runs in the middle of a stage's bookkeeping, where an
    # escaping exception would leave it wedged with an item neither queued nor delivered
    try:
        hook(*args)
    except Exception:
        log.exception("queue hook %r raised; ignored", hook)


class Queue(Generic[_T]):
    """How a delivery stage buffers: bound, overflow policy, hooks; and its live counters.

    The buffer is unbounded by default (the registry's behaviour). With ``max_events`` it holds at
    most that many events (blocks count their length) and ``overflow`` says what gives:
    ``"drop_oldest"`` (the oldest buffered item), ``"drop_newest"`` (the incoming item) or
    ``"error"`` (``on_next`` raises :class:`~rxsinks.QueueFullError` into the producer). Every
    drop is counted in :attr:`dropped`, reported to ``on_drop`` and emitted as a ``DROPPED``
    outcome.

    Hooks mirror the registry's queue listener: ``on_ingress(item)`` when an item is accepted,
    ``on_egress(item)`` when its delivery is over, whatever the outcome; the registry's *Pending*
    gauge is ``ingress - egress``.

    One ``Queue`` may serve several stages (or several subscriptions of one): each gets its own
    buffer, and the counters add up over the live ones.

    Args:
        max_events: bound on buffered events; ``None`` is unbounded.
        overflow: what a full buffer does.
        on_ingress: called with each accepted item.
        on_egress: called with each item once its delivery is over (delivered or given up).
        on_drop: called with each item the overflow policy dropped.
        weigh: how many events an item stands for (by default a block's length, else 1).
    """

    def __init__(
        self,
        *,
        max_events: int | None = None,
        overflow: Overflow = "drop_oldest",
        on_ingress: Hook | None = None,
        on_egress: Hook | None = None,
        on_drop: Hook | None = None,
        weigh: Callable[[Any], int] = weight_of,
    ) -> None:
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events <= 0
        ):
            raise ValueError(f"max_events must be a positive int or None, got {max_events!r}")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}; got {overflow!r}")
        for name, hook in (("on_ingress", on_ingress), ("on_egress", on_egress), ("weigh", weigh)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, got {hook!r}")
        self.max_events = max_events
        self.overflow: Overflow = overflow
        self.on_ingress = on_ingress
        self.on_egress = on_egress
        self.on_drop = on_drop
        self.weigh = weigh
        self.dropped = 0
        """Events dropped by the overflow policy, over every buffer built from this queue."""
        # the live buffers (one per delivery stage subscription): the counters below are read
        # from them, so the hot path keeps no shared totals up to date
        self.buffers: dict[int, Any] = {}

    def __repr__(self) -> str:
        bound = "unbounded" if self.max_events is None else f"max_events={self.max_events}"
        return f"queue({bound}, overflow={self.overflow!r})"

    @property
    def pending(self) -> int:
        """Events accepted and not yet through their delivery (buffered + in flight)."""
        return sum(buffer.pending for buffer in list(self.buffers.values()))

    @property
    def in_flight(self) -> int:
        """Blocks handed to the sink and not yet settled."""
        return sum(buffer.in_flight for buffer in list(self.buffers.values()))

    def __call__(self, source: Observable[Any]) -> Observable[Any]:
        raise TypeError(
            "queue() is not an operator of its own: a queue above a delivery could never learn "
            "when a block was delivered, so its bound would bound nothing. Give it to the "
            "delivery stage: deliver(sink, queue=queue(...))"
        )


def queue(
    *,
    max_events: int | None = None,
    overflow: Overflow = "drop_oldest",
    on_ingress: Hook | None = None,
    on_egress: Hook | None = None,
    on_drop: Hook | None = None,
    weigh: Callable[[Any], int] = weight_of,
) -> Queue[Any]:
    """Describe a delivery stage's buffer: ``deliver(sink, queue=queue(max_events=10_000))``.

    The stage buffers what arrives while its sink is busy, so the producer never waits for a
    delivery. Unbounded by default, like the registry; see :class:`Queue` for the bound, the
    overflow policy, the hooks and the live counters (``pending``, ``dropped``, ``in_flight``).

    The stage hands each block to its sink, which returns when the block was delivered and
    raises when the attempt failed (see :func:`~rxsinks.deliver`); ``list.append`` is a sink.
    Plain reactivex operators mix in before and after the stage.

    Example:
        >>> q = queue(max_events=2, overflow="drop_newest")
        >>> q
        queue(max_events=2, overflow='drop_newest')
        >>> from reactivex import from_iterable, operators as ops
        >>> from reactivex.testing import TestScheduler
        >>> from rxsinks import deliver
        >>> clock, delivered = TestScheduler(), []
        >>> _ = from_iterable("abc").pipe(
        ...     ops.map(str.upper),  # a plain reactivex operator
        ...     deliver(delivered.append, queue=queue(max_events=100), scheduler=clock),
        ...     ops.map(lambda outcome: outcome.kind.value),
        ... ).subscribe(print)
        >>> _ = clock.start()
        delivered
        delivered
        delivered
        >>> delivered
        ['A', 'B', 'C']

    Marble diagram (a sink taking 3 ticks per item; ``max_events=1``, ``drop_newest``; outcomes
    ``A``, ``B``... delivered, ``x`` dropped)::

        -abc-------|
        [ deliver(sink, queue=queue(max_events=1, overflow="drop_newest")) ]
        ---xA--B---|

    Args:
        max_events: bound on buffered events (blocks count their length); ``None`` is unbounded.
        overflow: what a full buffer does: ``"drop_oldest"``, ``"drop_newest"`` or ``"error"``.
        on_ingress: called with each accepted item.
        on_egress: called with each item once its delivery is over.
        on_drop: called with each item the overflow policy dropped.
        weigh: how many events an item stands for.

    Returns:
        A :class:`Queue` to give to :func:`~rxsinks.deliver`.
    """
    return Queue(
        max_events=max_events,
        overflow=overflow,
        on_ingress=on_ingress,
        on_egress=on_egress,
        on_drop=on_drop,
        weigh=weigh,
    )
