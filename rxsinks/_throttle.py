"""Rate-limited logging for failures that repeat: one line when it starts, then one a minute.

A full disk fails every commit, every WAL checkpoint (four a second) and every ingest request;
a line for each buries everything else in the log. :class:`LogThrottle` logs the first failure
at its level, then at most one line per ``interval`` saying how many were held back, and one
INFO line when the failures stop. It is thread-safe: the store logs from its own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["LogThrottle"]


class LogThrottle:
    """Logs a repeating failure once per ``interval`` seconds, with a count.

    Args:
        logger: where the lines go.
        level: the level of the failure lines (WARNING, ERROR...).
        interval: seconds between two failure lines.
        clock: seconds, monotonic (tests).

    Example:
        >>> throttle = LogThrottle(logging.getLogger("x"), logging.WARNING)
        >>> throttle.failed("checkpoint failed: %s", "disk full")   # logged
        >>> throttle.failed("checkpoint failed: %s", "disk full")   # held back, counted
        >>> throttle.succeeded("checkpoints work again")            # logged at INFO
    """

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None  # when the last failure line was logged
        self._held = 0  # failures not logged since then
        self._failing = False

    @property
    def failing(self) -> bool:
        """Whether the last report was a failure."""
        return self._failing

    def failed(self, message: str, *args: object) -> None:
        """Report one failure; logged unless a line went out less than ``interval`` ago."""
        now = self._clock()
        with self._lock:
            self._failing = True
            if self._last is not None and now - self._last < self._interval:
                self._held += 1
                return
            held, self._held = self._held, 0
            self._last = now
        if held:
            message += " (%d more time(s) since the last such line)"
            args = (*args, held)
        self._logger.log(self._level, message, *args)

    def succeeded(self, message: str | None = None, *args: object) -> None:
        """Report a success: after failures, logs ``message`` at INFO (if given) and resets."""
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            held, self._held = self._held, 0
            self._last = None
        if message is not None:
            if held:
                message += " (after %d more failure(s) not logged)"
                args = (*args, held)
            self._logger.info(message, *args)
