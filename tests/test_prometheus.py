"""Prometheus exposition: the registry's metric names, read from live endpoints at scrape time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rxsinks
from rxsinks._metrics import LATENCY_BUCKETS, MetricsSnapshot
from rxsinks._service.prometheus import EVENT_TYPES, EndpointCollector, exposition, register
from tests.endpoint_fixtures import StartHook, eventually, make_events, refused_url, start_hook

__all__ = ["start_hook"]  # the fixture, re-exported for pytest

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: bytes) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def of(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def for_endpoint(samples: Samples, endpoint: str) -> Samples:
    return {key: value for key, value in samples.items() if ("endpoint", endpoint) in key[1]}


class Fixed:
    """A hand-made metrics source (the collector reads anything with .name and .metrics())."""

    def __init__(self, name: str, snapshot: MetricsSnapshot) -> None:
        self.name = name
        self.snapshot = snapshot

    def metrics(self) -> MetricsSnapshot:
        return self.snapshot


# -- the exposed names ---------------------------------------------------------------------------


def test_names_and_types_are_the_registrys_exactly() -> None:
    text = exposition(Fixed("hooks", MetricsSnapshot())).decode()
    types = sorted(line for line in text.splitlines() if line.startswith("# TYPE"))
    assert types == [
        "# TYPE registry_notifications_events_total counter",
        "# TYPE registry_notifications_pending_total gauge",
        "# TYPE registry_notifications_status_total counter",
        "# TYPE rxsinks_breaker_state gauge",
        "# TYPE rxsinks_dead_letters_total counter",
        "# TYPE rxsinks_delivery_seconds histogram",
        "# TYPE rxsinks_dropped_total counter",
        "# TYPE rxsinks_endpoint_disabled gauge",
    ]
    assert 'registry_notifications_events_total{endpoint="hooks",type="Events"} 0.0' in text
    assert 'registry_notifications_pending_total{endpoint="hooks"} 0.0' in text
    assert "_total_total" not in text
    assert EVENT_TYPES == ("Events", "Successes", "Failures", "Errors")


# -- live endpoints against real receivers -------------------------------------------------------


async def test_exposition_of_live_endpoints(start_hook: StartHook) -> None:
    flaky = await start_hook(500)
    gone = await start_hook(410)
    alpha = rxsinks.Endpoint("alpha", flaky.url, threshold=1, backoff=0.02)
    beta = rxsinks.Endpoint("beta", gone.url)
    gamma = rxsinks.Endpoint(
        "gamma", refused_url(), threshold=1, backoff=10.0, queue=rxsinks.queue(max_events=2)
    )
    subject = rxsinks.EventSubject()
    for endpoint in (alpha, beta, gamma):
        subject.subscribe(endpoint)
    subject.write(*make_events(4))  # gamma keeps the last 2 and drops 2
    await alpha.aclose(timeout=10)
    await beta.aclose(timeout=10)
    await eventually(lambda: gamma.metrics().breaker == "open", "gamma's first failed attempt")

    samples = parse(exposition([alpha, beta, gamma]))

    assert for_endpoint(samples, "alpha") == {
        **events_total("alpha", events=4, successes=4, failures=1, errors=0),
        ("registry_notifications_pending_total", (("endpoint", "alpha"),)): 0.0,
        status("500 Internal Server Error", "alpha"): 1.0,
        status("200 OK", "alpha"): 4.0,
        **histogram("alpha", alpha.metrics()),
        **breaker("alpha", "closed"),
        ("rxsinks_dead_letters_total", (("endpoint", "alpha"),)): 0.0,
        ("rxsinks_dropped_total", (("endpoint", "alpha"),)): 0.0,
        ("rxsinks_endpoint_disabled", (("endpoint", "alpha"),)): 0.0,
    }
    assert of(samples, "rxsinks_delivery_seconds_count", endpoint="alpha") == 4.0
    assert of(samples, "rxsinks_delivery_seconds_sum", endpoint="alpha") > 0.0

    beta_samples = for_endpoint(samples, "beta")
    assert {k: v for k, v in beta_samples.items() if k[0].startswith("registry_")} == {
        # the 410 was answered once; the 3 later events were never sent
        **events_total("beta", events=4, successes=0, failures=1, errors=0),
        ("registry_notifications_pending_total", (("endpoint", "beta"),)): 0.0,
        status("410 Gone", "beta"): 1.0,
    }
    assert of(samples, "rxsinks_dead_letters_total", endpoint="beta") == 4.0
    assert of(samples, "rxsinks_endpoint_disabled", endpoint="beta") == 1.0
    assert of(samples, "rxsinks_delivery_seconds_count", endpoint="beta") == 0.0

    assert of(samples, "registry_notifications_events_total", type="Events", endpoint="gamma") == 4
    assert of(samples, "registry_notifications_events_total", type="Errors", endpoint="gamma") == 1
    assert of(samples, "registry_notifications_pending_total", endpoint="gamma") == 2.0
    assert of(samples, "rxsinks_dropped_total", endpoint="gamma") == 2.0
    assert breaker("gamma", "open").items() <= for_endpoint(samples, "gamma").items()

    report = await gamma.aclose(timeout=0.05)
    assert report.remaining == 2
    after = parse(exposition([gamma]))
    assert of(after, "registry_notifications_pending_total", endpoint="gamma") == 0.0
    assert of(after, "rxsinks_dead_letters_total", endpoint="gamma") == 2.0
    assert (await subject.aclose(timeout=10)).flushed


def events_total(
    endpoint: str, *, events: int, successes: int, failures: int, errors: int
) -> Samples:
    values = (events, successes, failures, errors)
    return {
        (
            "registry_notifications_events_total",
            (("endpoint", endpoint), ("type", kind)),
        ): float(value)
        for kind, value in zip(EVENT_TYPES, values, strict=True)
    }


def status(code: str, endpoint: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("registry_notifications_status_total", (("code", code), ("endpoint", endpoint)))


def histogram(endpoint: str, snapshot: MetricsSnapshot) -> Samples:
    bounds = [*(repr(float(bound)) for bound in LATENCY_BUCKETS), "+Inf"]
    counts = [*snapshot.latency_buckets, snapshot.delivered_blocks]
    samples: Samples = {
        ("rxsinks_delivery_seconds_bucket", (("endpoint", endpoint), ("le", le))): float(count)
        for le, count in zip(bounds, counts, strict=True)
    }
    samples[("rxsinks_delivery_seconds_count", (("endpoint", endpoint),))] = float(
        snapshot.delivered_blocks
    )
    samples[("rxsinks_delivery_seconds_sum", (("endpoint", endpoint),))] = snapshot.latency_sum
    return samples


def breaker(endpoint: str, current: str) -> Samples:
    return {
        ("rxsinks_breaker_state", (("endpoint", endpoint), ("state", state))): float(
            state == current
        )
        for state in ("closed", "open", "half_open")
    }


# -- collectors and registries -------------------------------------------------------------------


def test_register_reads_a_function_at_every_scrape() -> None:
    registry = CollectorRegistry()
    endpoints = [Fixed("a", MetricsSnapshot(events=1))]
    collector = register(lambda: endpoints, registry)

    first = parse(generate_latest(registry))
    endpoints.append(Fixed("b", MetricsSnapshot(events=2, pending=2)))
    second = parse(generate_latest(registry))

    assert of(first, "registry_notifications_events_total", type="Events", endpoint="a") == 1
    assert for_endpoint(first, "b") == {}
    assert of(second, "registry_notifications_events_total", type="Events", endpoint="b") == 2
    assert of(second, "registry_notifications_pending_total", endpoint="b") == 2
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(endpoints, registry)  # one collector per registry
    registry.unregister(collector)
    assert parse(generate_latest(registry)) == {}


def test_a_list_is_read_live_and_an_iterator_once() -> None:
    endpoints = [Fixed("a", MetricsSnapshot())]
    from_list = EndpointCollector(endpoints)
    from_iterator = EndpointCollector(iter([Fixed("c", MetricsSnapshot())]))
    endpoints.append(Fixed("b", MetricsSnapshot()))

    def names(collector: EndpointCollector) -> set[str]:
        return {
            sample.labels["endpoint"] for family in collector.collect() for sample in family.samples
        }

    assert names(from_list) == {"a", "b"}
    assert names(from_iterator) == {"c"}
    assert names(from_iterator) == {"c"}  # the second scrape sees it too


def test_endpoints_sharing_a_name_are_added_up_and_one_listed_twice_counts_once() -> None:
    one = Fixed(
        "hooks",
        MetricsSnapshot(
            events=3,
            statuses={"200 OK": 3},
            breaker="open",
            delivered_blocks=3,
            latency_sum=0.5,
            latency_buckets=(1,) * len(LATENCY_BUCKETS),
        ),
    )
    two = Fixed(
        "hooks",
        MetricsSnapshot(
            events=2, statuses={"200 OK": 1, "500 Internal Server Error": 4}, dead_letters=1
        ),
    )
    samples = parse(exposition([one, two, one]))
    assert of(samples, "registry_notifications_events_total", type="Events", endpoint="hooks") == 5
    assert of(samples, "registry_notifications_status_total", code="200 OK", endpoint="hooks") == 4
    assert of(samples, "rxsinks_dead_letters_total", endpoint="hooks") == 1
    assert of(samples, "rxsinks_breaker_state", endpoint="hooks", state="open") == 1
    assert of(samples, "rxsinks_breaker_state", endpoint="hooks", state="closed") == 1
    assert of(samples, "rxsinks_delivery_seconds_bucket", endpoint="hooks", le="0.001") == 1
    assert of(samples, "rxsinks_delivery_seconds_count", endpoint="hooks") == 3
    assert of(samples, "rxsinks_delivery_seconds_sum", endpoint="hooks") == 0.5


def test_bad_endpoints_get_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"endpoints\[1\] is not an endpoint .*: got str"):
        EndpointCollector([Fixed("a", MetricsSnapshot()), "http://example.com"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="an Endpoint, an iterable of endpoints or a function"):
        EndpointCollector(42)  # type: ignore[arg-type]
    collector = EndpointCollector(lambda: [object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"endpoints\[0\] is not an endpoint .*: got object"):
        list(collector.collect())


def test_a_single_endpoint_is_accepted() -> None:
    endpoint = rxsinks.Endpoint("solo", "http://127.0.0.1:9/hook")
    samples = parse(exposition(endpoint))
    assert of(samples, "rxsinks_breaker_state", endpoint="solo", state="closed") == 1


def test_without_prometheus_client_import_rxsinks_works_and_the_error_says_what_to_install() -> (
    None
):
    script = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import rxsinks
rxsinks.Endpoint("a", "http://127.0.0.1:9/hook")
try:
    import rxsinks._service.prometheus
except ImportError as exc:
    print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install rxsinks[prometheus]" in result.stdout
    assert result.stderr == ""
