"""Prometheus exposition of endpoint metrics, under the registry's metric names.

Needs the optional ``prometheus-client`` package (``pip install rxsinks[prometheus]``); importing
this module without it raises an :class:`ImportError` that says so. ``import rxsinks`` never
imports it.

Nothing is counted twice: :class:`EndpointCollector` reads each endpoint's
:meth:`~rxsinks.Endpoint.metrics` snapshot at scrape time and turns it into metric families.
The registry's names and labels are kept exactly, so existing dashboards keep working:

===========================================  =========  ===================================
name                                         type       labels
===========================================  =========  ===================================
``registry_notifications_events_total``      counter    ``type`` (Events, Successes,
                                                        Failures, Errors), ``endpoint``
``registry_notifications_pending_total``     gauge      ``endpoint``
``registry_notifications_status_total``      counter    ``code`` ("200 OK"), ``endpoint``
``rxsinks_delivery_seconds``                 histogram  ``endpoint``: first attempt to
                                                        delivery, per delivered block
``rxsinks_breaker_state``                    gauge      ``endpoint``, ``state``: 1 for the
                                                        current state, 0 for the others
``rxsinks_dead_letters_total``               counter    ``endpoint``
``rxsinks_dropped_total``                    counter    ``endpoint``
``rxsinks_endpoint_disabled``                gauge      ``endpoint``: 1 once it answered 410
===========================================  =========  ===================================

Like the registry's labelled counters, endpoints that share a name share their series: their
figures are added up (``rxsinks_breaker_state`` then counts the endpoints in each state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, Protocol, runtime_checkable

try:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError(
        "rxsinks' Prometheus exposition needs the prometheus-client package: "
        "pip install rxsinks[prometheus]"
    ) from exc

from .._breaker import BreakerState
from .._metrics import LATENCY_BUCKETS, MetricsSnapshot

__all__ = ["EndpointCollector", "MetricsSource", "exposition", "register"]

EVENT_TYPES = ("Events", "Successes", "Failures", "Errors")
"""The registry's values of the ``type`` label of ``registry_notifications_events_total``."""

_BREAKER_STATES = tuple(state.value for state in BreakerState)
# prometheus_client's own formatting of "le" (what its Histogram writes); the library is untyped
_le: Callable[[float], str] = floatToGoString
_BUCKET_BOUNDS = (*(_le(bound) for bound in LATENCY_BUCKETS), "+Inf")


@runtime_checkable
class MetricsSource(Protocol):
    """What the collector reads: an :class:`~rxsinks.Endpoint`, or anything shaped like one."""

    @property
    def name(self) -> str:
        """The ``endpoint`` label."""
        ...

    def metrics(self) -> MetricsSnapshot:
        """A snapshot of the endpoint's figures."""
        ...


Endpoints = Callable[[], Iterable[MetricsSource]] | Iterable[MetricsSource] | MetricsSource
"""One endpoint, a collection of them, or a function returning them at each scrape."""


class EndpointCollector(Collector):
    """A Prometheus collector of endpoint metrics, read at scrape time.

    Args:
        endpoints: the endpoints to expose: one :class:`~rxsinks.Endpoint`, a collection of
            them (a list may grow later: it is read at every scrape; a one-shot iterator is
            read once, now), or a function returning them, called at every scrape (for
            endpoints added and removed at run time).

    Raises:
        TypeError: ``endpoints`` is none of these, or holds something that is not an endpoint.

    Example:
        >>> from prometheus_client import REGISTRY
        >>> REGISTRY.register(EndpointCollector([hooks, audit]))  # doctest: +SKIP
    """

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints: Callable[[], Iterable[MetricsSource]]
        if isinstance(endpoints, MetricsSource):
            single = (endpoints,)
            self._endpoints = lambda: single
        elif callable(endpoints):
            self._endpoints = endpoints
        elif isinstance(endpoints, Iterable):
            if iter(endpoints) is endpoints:
                # an iterator would be empty at the second scrape: keep what it holds now
                endpoints = tuple(endpoints)
            _check_all(endpoints)
            items = endpoints
            self._endpoints = lambda: items
        else:
            raise TypeError(
                "endpoints must be an Endpoint, an iterable of endpoints or a function "
                f"returning them, got {type(endpoints).__name__}"
            )

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples: lets a registry check names without a scrape."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        """The metric families, from a fresh snapshot of every endpoint."""
        found = self._endpoints()
        if not isinstance(found, Iterable):
            raise TypeError(
                f"the endpoints function must return an iterable, got {type(found).__name__}"
            )
        endpoints = _check_all(found)
        families = _families()
        totals: dict[str, _Totals] = {}
        seen: set[int] = set()
        for endpoint in endpoints:
            if id(endpoint) in seen:  # listed twice: counted once
                continue
            seen.add(id(endpoint))
            totals.setdefault(endpoint.name, _Totals()).add(endpoint.metrics())
        for name, total in totals.items():
            for kind, value in zip(EVENT_TYPES, total.events, strict=True):
                families.events.add_metric([kind, name], value)
            families.pending.add_metric([name], total.pending)
            for code, count in total.statuses.items():
                families.statuses.add_metric([code, name], count)
            families.latency.add_metric(
                [name],
                list(zip(_BUCKET_BOUNDS, total.buckets, strict=True)),
                total.latency_sum,
            )
            for state in _BREAKER_STATES:
                families.breaker.add_metric([name, state], total.breaker.get(state, 0))
            families.dead_letters.add_metric([name], total.dead_letters)
            families.dropped.add_metric([name], total.dropped)
            families.disabled.add_metric([name], total.disabled)
        return iter(families)


class _Totals:
    """One ``endpoint`` label's figures, added over the endpoints that share the name."""

    def __init__(self) -> None:
        self.events = [0, 0, 0, 0]  # in EVENT_TYPES order
        self.pending = 0
        self.statuses: dict[str, int] = {}
        self.buckets = [0] * len(_BUCKET_BOUNDS)
        self.latency_sum = 0.0
        self.breaker: dict[str, int] = {}
        self.dead_letters = 0
        self.dropped = 0
        self.disabled = 0

    def add(self, snapshot: MetricsSnapshot) -> None:
        figures = (snapshot.events, snapshot.successes, snapshot.failures, snapshot.errors)
        self.events = [mine + theirs for mine, theirs in zip(self.events, figures, strict=True)]
        self.pending += snapshot.pending
        for code, count in snapshot.statuses.items():
            self.statuses[code] = self.statuses.get(code, 0) + count
        # the snapshot's buckets are cumulative already; +Inf counts every delivered block,
        # the slow ones beyond the last bound too
        cumulative = (*snapshot.latency_buckets, snapshot.delivered_blocks)
        if len(cumulative) != len(self.buckets):  # a hand-made snapshot without buckets
            cumulative = (*(0 for _ in LATENCY_BUCKETS), snapshot.delivered_blocks)
        self.buckets = [
            mine + theirs for mine, theirs in zip(self.buckets, cumulative, strict=True)
        ]
        self.latency_sum += snapshot.latency_sum
        self.breaker[snapshot.breaker] = self.breaker.get(snapshot.breaker, 0) + 1
        self.dead_letters += snapshot.dead_letters
        self.dropped += snapshot.dropped
        self.disabled += int(snapshot.disabled)


class _Families(NamedTuple):
    events: CounterMetricFamily
    pending: GaugeMetricFamily
    statuses: CounterMetricFamily
    latency: HistogramMetricFamily
    breaker: GaugeMetricFamily
    dead_letters: CounterMetricFamily
    dropped: CounterMetricFamily
    disabled: GaugeMetricFamily


def _families() -> _Families:
    # Counter families are named without "_total": prometheus_client adds it to the sample
    # name (and strips it from a family name that has it), so the exposed names are the
    # registry's exactly. A gauge keeps its name as given: the registry's pending gauge really
    # is called "..._pending_total".
    return _Families(
        events=CounterMetricFamily(
            "registry_notifications_events",
            "The number of total events",
            labels=["type", "endpoint"],
        ),
        pending=GaugeMetricFamily(
            "registry_notifications_pending_total",
            "The gauge of pending events in queue",
            labels=["endpoint"],
        ),
        statuses=CounterMetricFamily(
            "registry_notifications_status",
            "The number of status code",
            labels=["code", "endpoint"],
        ),
        latency=HistogramMetricFamily(
            "rxsinks_delivery_seconds",
            "Seconds from a block's first attempt to its delivery",
            labels=["endpoint"],
        ),
        breaker=GaugeMetricFamily(
            "rxsinks_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others",
            labels=["endpoint", "state"],
        ),
        dead_letters=CounterMetricFamily(
            "rxsinks_dead_letters",
            "Events given up on (dead-lettered)",
            labels=["endpoint"],
        ),
        dropped=CounterMetricFamily(
            "rxsinks_dropped",
            "Events dropped by a bounded queue",
            labels=["endpoint"],
        ),
        disabled=GaugeMetricFamily(
            "rxsinks_endpoint_disabled",
            "1 when the endpoint disabled itself (it answered 410 Gone)",
            labels=["endpoint"],
        ),
    )


def _check_all(endpoints: Iterable[object]) -> list[MetricsSource]:
    checked: list[MetricsSource] = []
    for index, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, MetricsSource):
            raise TypeError(
                f"endpoints[{index}] is not an endpoint (an object with .name and .metrics()): "
                f"got {type(endpoint).__name__}"
            )
        if not isinstance(endpoint.name, str):
            raise TypeError(
                f"endpoints[{index}].name must be a str, got {type(endpoint.name).__name__}"
            )
        checked.append(endpoint)
    return checked


def register(endpoints: Endpoints, registry: CollectorRegistry = REGISTRY) -> EndpointCollector:
    """Expose endpoints' metrics on a Prometheus registry (the process-wide one by default).

    Args:
        endpoints: see :class:`EndpointCollector`.
        registry: where to register.

    Returns:
        The collector: ``registry.unregister(collector)`` removes it.

    Raises:
        ValueError: the registry already has a collector with these names (prometheus-client's
            own check: register one collector per registry, and give it every endpoint).

    Example:
        >>> collector = register(lambda: service.endpoints)  # doctest: +SKIP
        >>> prometheus_client.start_http_server(9102)  # doctest: +SKIP
    """
    collector = EndpointCollector(endpoints)
    registry.register(collector)
    return collector


def exposition(endpoints: Endpoints) -> bytes:
    """Endpoints' metrics in the Prometheus text format, without touching any global registry.

    Serve it with the content type ``prometheus_client.CONTENT_TYPE_LATEST``.

    Args:
        endpoints: see :class:`EndpointCollector`.

    Returns:
        The exposition, as bytes.

    Example:
        >>> print(exposition([hooks]).decode())  # doctest: +SKIP
        registry_notifications_events_total{endpoint="hooks",type="Events"} 12.0
        ...
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EndpointCollector(endpoints))
    return generate_latest(registry)
