"""Where stages run: the default scheduler, a cheap clock, and how a stage guards its state.

Every rxsinks stage that waits or decouples does so through a reactivex scheduler, so a
``TestScheduler`` sees every wait at an exact virtual time. Without one given:

* on a running asyncio loop, the loop (``AsyncIOScheduler``);
* anywhere else, one shared background thread (a reactivex ``EventLoopScheduler``): a producer
  outside any loop never waits for a timer. The trampoline scheduler would be the obvious
  choice, but it runs a timed action by *sleeping* in the caller's thread, so a batch delay or a
  retry backoff would block whoever called ``on_next``.

A stage's state is touched by its upstream (``on_next``...) and by work it scheduled (drains,
timers, finished deliveries). How those calls are kept apart depends on the scheduler
(:func:`confinement_of`): a loop or a virtual-time scheduler runs everything on one thread, so
the stage needs no lock (calls from another thread are handed to the loop); a thread-based
scheduler may run work on any of its threads, so every entry point takes the stage's lock.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Callable

from reactivex import abc
from reactivex.scheduler import (
    CurrentThreadScheduler,
    EventLoopScheduler,
    ImmediateScheduler,
    TrampolineScheduler,
    VirtualTimeScheduler,
)
from reactivex.scheduler.eventloop import AsyncIOScheduler, AsyncIOThreadSafeScheduler

__all__ = ["Confinement", "clock_of", "confinement_of", "default_scheduler", "loop_of"]

_background: EventLoopScheduler | None = None
_background_lock = threading.Lock()


def _background_scheduler() -> EventLoopScheduler:
    global _background
    with _background_lock:
        if _background is None:
            _background = EventLoopScheduler(
                thread_factory=lambda target: threading.Thread(
                    target=target, name="rxsinks-scheduler", daemon=True
                )
            )
        return _background


def default_scheduler() -> abc.SchedulerBase:
    """The scheduler a stage uses when none is given (see the module docstring)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _background_scheduler()
    return AsyncIOScheduler(loop)


def clock_of(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """A cheap reading of ``scheduler``'s clock in seconds (the loop's monotonic clock on
    asyncio; the virtual clock on a test scheduler)."""
    if isinstance(scheduler, AsyncIOScheduler):
        return scheduler._loop.time
    return lambda: scheduler.to_seconds(scheduler.now)


def loop_of(scheduler: abc.SchedulerBase) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop a scheduler runs on, if it is one."""
    if isinstance(scheduler, AsyncIOScheduler):
        return scheduler._loop
    return None


class Confinement(enum.Enum):
    """How a stage keeps concurrent calls apart (see the module docstring)."""

    LOOP = "loop"
    """Everything runs on one asyncio loop's thread; calls from other threads are handed to it."""
    CALLER = "caller"
    """A virtual-time or trampoline scheduler: everything runs on the caller's thread."""
    LOCKED = "locked"
    """A thread-based scheduler: every entry point takes the stage's lock."""


def confinement_of(scheduler: abc.SchedulerBase) -> Confinement:
    """Which :class:`Confinement` a stage running on ``scheduler`` needs."""
    if isinstance(scheduler, AsyncIOThreadSafeScheduler):
        return Confinement.LOCKED
    if isinstance(scheduler, AsyncIOScheduler):
        return Confinement.LOOP
    if isinstance(
        scheduler,
        VirtualTimeScheduler | TrampolineScheduler | CurrentThreadScheduler | ImmediateScheduler,
    ):
        return Confinement.CALLER
    return Confinement.LOCKED
