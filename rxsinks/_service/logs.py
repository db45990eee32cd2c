"""What the relay logs about its endpoints: state changes once, dead letters at most once a minute.

Both are observers an endpoint's streams are subscribed to (:attr:`~rxsinks.Endpoint.outcomes`,
:attr:`~rxsinks.Endpoint.dead_letters`); they log on the ``rxsinks.relay`` logger with the
structured fields ``endpoint`` and ``state`` in the record's ``extra``.
"""

from __future__ import annotations

import logging
from typing import Final

from reactivex import abc

from .._exceptions import EndpointDisabledError
from .._outcome import DeadLetter, Outcome, OutcomeKind
from .._redact import redact_text
from .._throttle import LogThrottle

__all__ = ["DeadLetterLog", "StateLog"]

log = logging.getLogger("rxsinks.relay")

# dead letters of one endpoint: the first logged at ERROR, then one line a minute with a count
_DEAD_LETTER_LOG_EVERY: Final = 60.0


class StateLog(abc.ObserverBase[Outcome]):
    """Logs one line per state change of one endpoint (never per attempt).

    A breaker that stays unhealthy goes open -> half open -> open once per backoff; only the
    first opening and the recovery are worth a line at INFO and above, the trials are DEBUG.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._last_error: BaseException | None = None
        self._open = False
        self._disabled = False

    def _log(self, level: int, state: str, message: str, *args: object) -> None:
        log.log(level, message, *args, extra={"endpoint": self._name, "state": state})

    def on_next(self, value: Outcome) -> None:
        kind = value.kind
        if kind is OutcomeKind.FAILED:
            self._last_error = value.error
        elif kind is OutcomeKind.BREAKER_OPENED:
            if self._open:
                self._log(logging.DEBUG, "reopened", "endpoint %s: trial failed", self._name)
                return
            self._open = True
            self._log(
                logging.WARNING,
                "breaker_opened",
                "endpoint %s: breaker opened (last error: %s)",
                self._name,
                self._last_error,
            )
        elif kind is OutcomeKind.BREAKER_CLOSED:
            self._open = False
            self._log(
                logging.INFO, "recovered", "endpoint %s: recovered, breaker closed", self._name
            )
        elif kind is OutcomeKind.BREAKER_HALF_OPEN:
            self._log(logging.DEBUG, "half_open", "endpoint %s: breaker half open", self._name)
        elif kind is OutcomeKind.DISABLED:
            if self._disabled:
                return
            self._disabled = True
            self._log(
                logging.ERROR,
                "disabled",
                "endpoint %s: disabled: the receiver answered %s Gone; it takes no new events "
                "(counted as Dropped) and its queued ones are dead-lettered. To re-enable it: "
                "fix the receiver (or its URL), restart the relay, then replay with "
                "`rxsinks dead-letters replay --endpoint %s`",
                self._name,
                value.status or 410,
                self._name,
            )

    def on_error(self, error: Exception) -> None:
        log.error("endpoint %s: outcome stream failed: %s", self._name, error)

    def on_completed(self) -> None:
        pass


class DeadLetterLog(abc.ObserverBase[DeadLetter]):
    """Logs an endpoint's dead letters: at ERROR, at most one line a minute with a count.

    Subscribed to every endpoint, it takes over the endpoint's own line per block. Blocks failed
    because the endpoint is disabled (410 Gone) are DEBUG: the disabling was logged once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._throttle = LogThrottle(log, logging.ERROR, _DEAD_LETTER_LOG_EVERY)

    def on_next(self, value: DeadLetter) -> None:
        if isinstance(value.error, EndpointDisabledError):
            log.debug(
                "endpoint %s: %d event(s) dead-lettered: the endpoint is disabled",
                self._name,
                len(value.events),
            )
            return
        self._throttle.failed(
            "endpoint %s: gave up on %d event(s) after %d attempt(s): %s "
            "(see `rxsinks dead-letters list`)",
            self._name,
            len(value.events),
            value.attempts,
            redact_text(str(value.error)),
        )

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass
