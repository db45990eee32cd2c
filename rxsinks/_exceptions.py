"""The rxsinks error tree.

::

    RxSinksError
     ├── SinkClosedError          terminal: written after close; never retried
     ├── QueueFullError           a bounded queue refused a write (overflow="error")
     ├── EnvelopeError            a body that is not a registry envelope (also a ValueError)
     ├── OptionError              .argument, .reason: an option object refused a value
     │    └── OptionTypeError     ... of the wrong type (also a TypeError)
     ├── DeliveryError            .endpoint, .events: one delivery attempt failed
     │    ├── WebhookStatusError  .status, .url, .retry_after: answered outside 200..399
     │    └── PermanentDeliveryError   never retried: dead-lettered at once
     │         └── EndpointDisabledError  the endpoint answered 410 Gone or was disabled
     ├── ConfigError              .path (which key), a message a person can act on
     │    └── ConfigErrors        .problems: every problem of one configuration, together
     └── StoreError               a durable store cannot be opened or written
          ├── StoreLockedError    another relay holds the store
          └── StoreFullError      .fits: the store is full for now (or for good)

A single :data:`SINK_CLOSED` instance is shared by every sink, so code can compare with ``is``
as well as ``isinstance`` (the Go original had two sentinels, and closed endpoints never left
the broadcaster because of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "SINK_CLOSED",
    "ConfigError",
    "ConfigErrors",
    "DeliveryError",
    "EndpointDisabledError",
    "EnvelopeError",
    "OptionError",
    "OptionTypeError",
    "PermanentDeliveryError",
    "QueueFullError",
    "RxSinksError",
    "SinkClosedError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "WebhookStatusError",
]


class RxSinksError(Exception):
    """Base class of every error rxsinks raises on purpose."""


class SinkClosedError(RxSinksError):
    """A write reached a sink after it was closed. Terminal: nothing retries it."""

    def __init__(self, message: str = "sink closed") -> None:
        super().__init__(message)


SINK_CLOSED = SinkClosedError()
"""The one shared terminal error instance."""


class QueueFullError(RxSinksError):
    """A bounded queue with ``overflow="error"`` refused a write."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"queue full: {limit} events buffered (overflow='error')")
        self.limit = limit


class EnvelopeError(RxSinksError, ValueError):
    """A body or an event that is not what the registry sends; the message says what is wrong."""


class DeliveryError(RxSinksError):
    """One delivery attempt of a block of events failed.

    Attributes:
        endpoint: the endpoint's name (or URL when it has none).
        events: the block whose delivery failed.
    """

    def __init__(self, message: str, *, endpoint: str = "", events: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.events = tuple(events)


class WebhookStatusError(DeliveryError):
    """The receiver answered with a status outside 200..399.

    Attributes:
        status: the HTTP status code.
        url: the URL that answered.
        retry_after: seconds the receiver asked us to wait (``Retry-After``), or ``None``.
    """

    def __init__(
        self,
        status: int,
        url: str,
        *,
        reason: str = "",
        retry_after: float | None = None,
        endpoint: str = "",
        events: Sequence[Any] = (),
    ) -> None:
        text = f"{status} {reason}".strip()
        super().__init__(f"{url} answered {text}", endpoint=endpoint, events=events)
        self.status = status
        self.url = url
        self.reason = reason
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """A failure that retrying cannot fix (a configured permanent 4xx, a disabled endpoint).

    Retry operators dead-letter the block at once instead of retrying it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        events: Sequence[Any] = (),
    ) -> None:
        super().__init__(message, endpoint=endpoint, events=events)
        self.status = status


class EndpointDisabledError(PermanentDeliveryError):
    """The endpoint is disabled (it answered ``410 Gone``, or it was disabled by hand).

    Attributes:
        answered: whether this attempt got the answer that disabled it (``False`` for the
            blocks failed afterwards without a request).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        events: Sequence[Any] = (),
        answered: bool = True,
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint, events=events)
        self.answered = answered


class ConfigError(RxSinksError):
    """A configuration value is wrong.

    Attributes:
        path: the key path of the offending value, for example
            ``notifications.endpoints[0].timeout``.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.detail = message


class ConfigErrors(ConfigError):
    """Every problem found in one configuration, raised together.

    Attributes:
        problems: one :class:`~rxsinks.ConfigError` per problem, each with its key path.
        source: the file name (or ``"<config>"``).
    """

    def __init__(self, problems: Sequence[ConfigError], *, source: str = "<config>") -> None:
        self.problems: list[ConfigError] = list(problems)
        self.source = source
        count = len(self.problems)
        listing = "\n".join(f"  {problem}" for problem in self.problems)
        plural = "" if count == 1 else "s"
        super().__init__("", f"{source}: {count} problem{plural}:\n{listing}")


class StoreError(RxSinksError):
    """The store cannot be opened or written (corrupt, unwritable, disk full)."""


class StoreLockedError(StoreError):
    """Another relay uses the store (its lock file is held)."""


class StoreFullError(StoreError):
    """The store holds as much as it may (the memory store's bounds): retry later.

    Attributes:
        fits: False when what was refused is larger than the store may ever hold: retrying the
            same request cannot succeed.
    """

    def __init__(self, message: str, *, fits: bool = True) -> None:
        super().__init__(message)
        self.fits = fits


class OptionError(RxSinksError, ValueError):
    """An option has a wrong value (a :class:`ValueError` too).

    Attributes:
        argument: the option's name as the constructor spells it (``"ca_file"``).
        reason: what is wrong, without the name.
    """

    def __init__(self, argument: str, reason: str) -> None:
        super().__init__(f"{argument}: {reason}")
        self.argument = argument
        self.reason = reason


class OptionTypeError(OptionError, TypeError):
    """An option has a wrong type (a :class:`TypeError` as well as an :class:`OptionError`)."""
