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

from typing import TYPE_CHECKING, Any

from ._batch import batch
from ._breaker import Breaker, BreakerState
from ._broadcast import Broadcast, broadcast
from ._config import ConfigErrors, RelayConfig, load_config, parse_config
from ._deliver import Deliver, deliver
from ._durable import DurableQueue
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
    decode_envelope,
    decode_ndjson,
    encode_envelope,
    sample_events,
)
from ._exceptions import (
    SINK_CLOSED,
    ConfigError,
    DeliveryError,
    EndpointDisabledError,
    EnvelopeError,
    PermanentDeliveryError,
    QueueFullError,
    RxSinksError,
    SinkClosedError,
    WebhookStatusError,
)
from ._filter import EventFilter, filter_events, ignore, match
from ._metrics import EndpointMetrics, MetricsSnapshot
from ._outcome import DeadLetter, Outcome, OutcomeKind
from ._queue import Queue, queue
from ._relay import Relay
from ._retry import RetryWithBreaker, retry_with_breaker
from ._sinks import CallbackSink, CollectingSink
from ._store import DeadLetterRecord, SQLiteStore, StoreError
from ._subject import CloseReport, EventSubject
from ._webhook import Attempt, WebhookSink

if TYPE_CHECKING:
    from ._lease import LeaseManager
    from ._redis_store import RedisStore

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the Redis pieces need the optional `redis` package: import them only when asked for
    if name == "RedisStore":
        from ._redis_store import RedisStore

        return RedisStore
    if name == "LeaseManager":
        from ._lease import LeaseManager

        return LeaseManager
    raise AttributeError(f"module 'rxsinks' has no attribute {name!r}")


__all__ = [
    "ENVELOPE_MEDIA_TYPES",
    "MEDIA_TYPE_V1",
    "MEDIA_TYPE_V2",
    "SINK_CLOSED",
    "Actor",
    "Attempt",
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
    "DeliveryError",
    "DurableQueue",
    "Endpoint",
    "EndpointDisabledError",
    "EndpointMetrics",
    "EnvelopeError",
    "Event",
    "EventFilter",
    "EventSubject",
    "LeaseManager",
    "MetricsSnapshot",
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
    "SinkClosedError",
    "Source",
    "StoreError",
    "Target",
    "WebhookSink",
    "WebhookStatusError",
    "batch",
    "broadcast",
    "decode_envelope",
    "decode_ndjson",
    "deliver",
    "encode_envelope",
    "filter_events",
    "ignore",
    "load_config",
    "match",
    "parse_config",
    "queue",
    "retry_with_breaker",
    "sample_events",
]
