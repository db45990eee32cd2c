"""rxsinks: webhook delivery from an event stream.

The Docker registry's notification sinks (broadcast -> ignore -> queue -> circuit-breaking retry
-> HTTP) as RxPY operators over an event subject: a delivery stage (``deliver``) buffers, hands
each block to a sink (any function: it returns, raises, or returns an awaitable or an
observable) and retries through the registry's breaker and tenacity policies; webhooks go out
with aiohttp.

    >>> import rxsinks
    >>> subject = rxsinks.EventSubject()                                  # doctest: +SKIP
    >>> subject.subscribe(rxsinks.Endpoint("hooks", "http://127.0.0.1:8080/events"))
    ... # doctest: +SKIP
    >>> subject.on_next(rxsinks.Event.new("push", target={"repository": "library/alpine"}))
    ... # doctest: +SKIP
    >>> await subject.aclose(timeout=10)                                  # doctest: +SKIP
"""

import typing as _typing

from ._batch import batch
from ._breaker import Breaker, BreakerState
from ._broadcast import Broadcast, broadcast
from ._deliver import Deliver, deliver
from ._endpoint import Endpoint
from ._event import (
    ENVELOPE_MEDIA_TYPES,
    MEDIA_TYPE_V1,
    MEDIA_TYPE_V2,
    Actor,
    Event,
    Request,
    Source,
    Target,
    block_time,
    decode_envelope,
    decode_ndjson,
    encode_envelope,
    sample_events,
)
from ._exceptions import (
    SINK_CLOSED,
    ConfigError,
    ConfigErrors,
    DeliveryError,
    EndpointDisabledError,
    EnvelopeError,
    PermanentDeliveryError,
    QueueFullError,
    RxSinksError,
    SinkClosedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    WebhookStatusError,
)
from ._filter import EventFilter, filter_events, ignore, match
from ._http.sink import Attempt, WebhookSink
from ._metrics import EndpointMetrics, MetricsSnapshot
from ._options import (
    TLS,
    Batching,
    Delivery,
    ExponentialWait,
    Headers,
    OptionError,
    OptionTypeError,
    Secret,
    WebhookOptions,
    exponential_wait,
)
from ._outcome import DeadLetter, Outcome, OutcomeKind
from ._queue import Queue, queue
from ._retry import RetryWithBreaker, retry_with_breaker
from ._service.config import RelayConfig, load_config, parse_config
from ._service.relay import Relay
from ._sinks import CallbackSink, CollectingSink
from ._store.durable import DurableQueue
from ._store.sqlite import DeadLetterRecord, SQLiteStore
from ._subject import CloseReport, EventSubject
from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    from ._store.lease import LeaseManager
    from ._store.redis import RedisStore


def __getattr__(name: str) -> _typing.Any:
    # the Redis pieces need the optional `redis` package: import them only when asked for
    if name == "RedisStore":
        from ._store.redis import RedisStore

        return RedisStore
    if name == "LeaseManager":
        from ._store.lease import LeaseManager

        return LeaseManager
    raise AttributeError(f"module 'rxsinks' has no attribute {name!r}")


__all__ = [
    "ENVELOPE_MEDIA_TYPES",
    "MEDIA_TYPE_V1",
    "MEDIA_TYPE_V2",
    "SINK_CLOSED",
    "TLS",
    "Actor",
    "Attempt",
    "Batching",
    "Breaker",
    "BreakerState",
    "Broadcast",
    "CallbackSink",
    "CloseReport",
    "CollectingSink",
    "ConfigError",
    "ConfigErrors",
    "DeadLetter",
    "DeadLetterRecord",
    "Deliver",
    "Delivery",
    "DeliveryError",
    "DurableQueue",
    "Endpoint",
    "EndpointDisabledError",
    "EndpointMetrics",
    "EnvelopeError",
    "Event",
    "EventFilter",
    "EventSubject",
    "ExponentialWait",
    "Headers",
    "LeaseManager",
    "MetricsSnapshot",
    "OptionError",
    "OptionTypeError",
    "Outcome",
    "OutcomeKind",
    "PermanentDeliveryError",
    "Queue",
    "QueueFullError",
    "RedisStore",
    "Relay",
    "RelayConfig",
    "Request",
    "RetryWithBreaker",
    "RxSinksError",
    "SQLiteStore",
    "Secret",
    "SinkClosedError",
    "Source",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "Target",
    "WebhookOptions",
    "WebhookSink",
    "WebhookStatusError",
    "batch",
    "block_time",
    "broadcast",
    "decode_envelope",
    "decode_ndjson",
    "deliver",
    "encode_envelope",
    "exponential_wait",
    "filter_events",
    "ignore",
    "load_config",
    "match",
    "parse_config",
    "queue",
    "retry_with_breaker",
    "sample_events",
]
