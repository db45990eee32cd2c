"""End to end: the real Docker registry posts to ``rxsinks serve``, which relays to receivers.

The registry (Debian's ``docker-registry``, Docker Distribution 2.8) has two notification
endpoints: a "tap" receiver it posts to directly, and rxsinks' ingest. rxsinks runs as a real
``rxsinks serve`` process with three endpoints: ``all`` (everything), ``flaky`` (its receiver
answers 503 for its first seconds) and ``nopulls`` (``ignore: {actions: [pull]}``). skopeo
pushes, pulls, copies (a cross-repository mount) and deletes images. Then each rxsinks receiver
must hold exactly what the tap holds (filtered for ``nopulls``): the same JSON objects, in the
same order, each once; and rxsinks' ``/metrics`` and ``/debug/vars`` must agree with what the
receivers got.

Needs ``docker-registry`` and ``skopeo`` (:data:`tests.registry.INSTALL_HINT`): skipped without
them, failed without them when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from rxsinks._event import MEDIA_TYPE_V1

if TYPE_CHECKING:
    from tests.registry import MakeOciImage, MakeRegistry, Registry, Skopeo

pytest_plugins = ["tests.registry"]  # the make_registry, make_oci_image and skopeo fixtures

RXSINKS = [sys.executable, "-m", "rxsinks"]
OUTAGE = 3.0
"""Seconds the ``flaky`` receiver answers 503, counted from the first request it gets."""
SETTLE_TIMEOUT = 30.0
"""Seconds allowed, after the last skopeo command, for every event to reach every receiver."""
STABLE_FOR = 0.5
"""Seconds every count must stay unchanged before the deliveries are taken as complete."""
PROCESS_TIMEOUT = 15.0

AiohttpServer = Callable[..., Awaitable[TestServer]]


class Hook:
    """A webhook receiver that keeps every accepted envelope's events as raw JSON objects.

    Args:
        outage: seconds to answer 503, counted from the first request (0: never).

    Attributes:
        events: the events of the envelopes answered 200, as decoded JSON, in arrival order.
        statuses: the statuses answered, in order.
        content_types: the content type of every request, in order.
    """

    def __init__(self, outage: float = 0.0) -> None:
        self.outage = outage
        self.events: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.content_types: list[str] = []
        self._outage_ends: float | None = None
        self.app = web.Application()
        self.app.router.add_post("/hook", self._handle)
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "the hook is not started"
        return str(self.server.make_url("/hook"))

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.content_types.append(request.content_type)
        now = asyncio.get_running_loop().time()
        if self._outage_ends is None:
            self._outage_ends = now + self.outage
        if now < self._outage_ends:
            self.statuses.append(503)
            return web.Response(status=503, text="down for maintenance")
        events = json.loads(body)["events"]
        assert isinstance(events, list)
        self.events.extend(events)
        self.statuses.append(200)
        return web.Response(text="ok")


async def start_hook(aiohttp_server: AiohttpServer, outage: float = 0.0) -> Hook:
    hook = Hook(outage)
    hook.server = await aiohttp_server(hook.app)
    return hook


def store_section(kind: str, directory: Path) -> dict[str, Any]:
    """The ``store:`` section for a store kind (a file in ``directory`` for sqlite)."""
    if kind == "sqlite":
        return {"kind": "sqlite", "path": str(directory / "rxsinks.db")}
    return {"kind": kind}


class Serve:
    """A running ``rxsinks serve`` process; its stderr (JSON log lines) is read continuously,
    so the process never blocks on a full pipe."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.listening = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    @property
    def base(self) -> str:
        """The ingest's ``http://HOST:PORT`` (``/events``, ``/metrics``, ``/debug/vars``)."""
        url: str = self.listening.result()
        return url.removesuffix("/events")

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    self.records.append(record)
                    if "url" in record and not self.listening.done():
                        self.listening.set_result(record["url"])
        if not self.listening.done():
            self.listening.set_exception(AssertionError("rxsinks serve exited before listening"))

    def states(self, endpoint: str) -> list[str]:
        """The state changes logged for an endpoint (``breaker_opened``, ``recovered``...)."""
        return [r["state"] for r in self.records if r.get("endpoint") == endpoint and "state" in r]


@contextlib.asynccontextmanager
async def rxsinks_serve(config: Path) -> AsyncIterator[Serve]:
    """Run ``rxsinks serve --config CONFIG`` until it is listening; kill it if still running
    at the end."""
    process = await asyncio.create_subprocess_exec(
        *RXSINKS,
        "serve",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    serve = Serve(process)
    try:
        await asyncio.wait_for(asyncio.shield(serve.listening), PROCESS_TIMEOUT)
        yield serve
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await serve.reader
        if serve.listening.done() and not serve.listening.cancelled():
            serve.listening.exception()  # retrieved: a start-up failure was reported already


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


def prometheus_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``(sample name, labels)`` -> value, for every sample of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels} in /metrics"
    return samples[key]


async def run_scenario(
    skopeo: Skopeo, registry: Registry, make_oci_image: MakeOciImage, tmp_path: Path
) -> None:
    """Push three tagged images, pull two, copy one to a second repository, delete one."""
    # a nonce in every layer: no blob is shared with a previous run, so nothing skopeo may
    # remember of earlier runs changes what it asks the registry
    nonce = uuid.uuid4().hex.encode()
    host = registry.host
    images = {
        name: make_oci_image(name, {f"{name}.txt": name.encode() + b" " + nonce})
        for name in ("alpha", "beta", "gamma")
    }
    for name, image in images.items():
        await skopeo.copy(image.reference, f"docker://{host}/demo/{name}:v1")
    inspected = await skopeo.inspect(f"docker://{host}/demo/alpha:v1")
    assert inspected["Digest"] == images["alpha"].manifest_digest
    await skopeo.copy(f"docker://{host}/demo/beta:v1", f"oci:{tmp_path / 'pulled'}:v1")
    # skopeo's blob-info cache (in its private home) knows the layer is in demo/alpha since
    # the push: it mounts it into other/alpha instead of uploading it again
    await skopeo.copy(f"docker://{host}/demo/alpha:v1", f"docker://{host}/other/alpha:v1")
    await skopeo.delete(f"docker://{host}/demo/gamma@{images['gamma'].manifest_digest}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_registry_events_reach_every_endpoint_through_serve(
    tmp_path: Path,
    store_kind: str,
    aiohttp_server: AiohttpServer,
    make_registry: MakeRegistry,
    make_oci_image: MakeOciImage,
    skopeo: Skopeo,
) -> None:
    tap = await start_hook(aiohttp_server)
    everything = await start_hook(aiohttp_server)
    flaky = await start_hook(aiohttp_server, outage=OUTAGE)
    nopulls = await start_hook(aiohttp_server)
    config = tmp_path / "rxsinks.yml"
    # a generous timeout: a spurious timeout would make a duplicate delivery, not a faster test
    config.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": "127.0.0.1:0", "grace": "5s"},
                "store": store_section(store_kind, tmp_path),
                "log": {"format": "json", "level": "info"},
                "notifications": {
                    "endpoints": [
                        {"name": "all", "url": everything.url, "timeout": "5s"},
                        {
                            "name": "flaky",
                            "url": flaky.url,
                            "timeout": "5s",
                            "threshold": 2,
                            "backoff": "200ms",
                        },
                        {
                            "name": "nopulls",
                            "url": nopulls.url,
                            "timeout": "5s",
                            "ignore": {"actions": ["pull"]},
                        },
                    ]
                },
            }
        )
    )
    async with rxsinks_serve(config) as serve, aiohttp.ClientSession() as session:
        registry: Registry | None = None
        try:
            # a short backoff keeps the test quick if an endpoint hiccups; the timeout is
            # generous because a spurious one makes the registry send an event twice
            registry = await make_registry(
                [
                    {
                        "name": name,
                        "url": url,
                        "timeout": "5s",
                        "threshold": 3,
                        "backoff": "200ms",
                    }
                    for name, url in (("tap", tap.url), ("rxsinks", serve.listening.result()))
                ],
                events={"includereferences": True},
            )
            await run_scenario(skopeo, registry, make_oci_image, tmp_path)
            registry_metrics = await settle(registry, tap, everything, flaky, nopulls)
            await check_everything(
                session, serve, registry_metrics, tap, everything, flaky, nopulls
            )
            serve.process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(serve.process.wait(), PROCESS_TIMEOUT)
            assert code == 0, "rxsinks serve did not exit 0 on SIGTERM"
            await serve.reader
            messages = [record.get("message", "") for record in serve.records]
            assert "signal received: stopping" in messages
            assert any(m.startswith("stopped: every accepted event") for m in messages)
        except BaseException:
            print_diagnostics(registry, serve, skopeo, tap)
            raise


def expected_counts(tap: Hook) -> dict[str, int]:
    """How many events each rxsinks receiver must end up with."""
    total = len(tap.events)
    return {
        "all": total,
        "flaky": total,
        "nopulls": sum(event["action"] != "pull" for event in tap.events),
    }


async def settle(
    registry: Registry, tap: Hook, everything: Hook, flaky: Hook, nopulls: Hook
) -> dict[str, dict[str, Any]]:
    """Wait until the registry has nothing pending, the tap holds every event the registry
    counted, every rxsinks receiver holds at least its share, and all of it stayed so for
    :data:`STABLE_FOR` seconds.

    Returns:
        The registry's own per-endpoint metrics at that point.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    stable_since: float | None = None
    last: object = None
    while True:
        metrics = await registry.notification_metrics()
        counts = expected_counts(tap)
        received = {
            "all": len(everything.events),
            "flaky": len(flaky.events),
            "nopulls": len(nopulls.events),
        }
        registry_done = all(
            m["Pending"] == 0 and m["Successes"] == m["Events"] for m in metrics.values()
        ) and metrics["tap"]["Successes"] == len(tap.events)
        # once every receiver has at least its share, more will not get better by waiting:
        # the assertions that follow show what is wrong
        done = registry_done and all(received[name] >= counts[name] for name in counts)
        snapshot = (metrics, received)
        now = loop.time()
        if done and snapshot == last and stable_since is not None:
            if now - stable_since >= STABLE_FOR:
                return metrics
        else:
            stable_since = now if done else None
        last = snapshot
        if now > deadline:
            raise AssertionError(
                f"deliveries did not settle within {SETTLE_TIMEOUT}s: registry {metrics}, "
                f"received {received}, expected {counts}"
            )
        await asyncio.sleep(0.1)


async def check_everything(
    session: aiohttp.ClientSession,
    serve: Serve,
    registry_metrics: Mapping[str, Mapping[str, Any]],
    tap: Hook,
    everything: Hook,
    flaky: Hook,
    nopulls: Hook,
) -> None:
    events = tap.events
    actions = Counter(event["action"] for event in events)
    print(
        f"registry events by action: {dict(sorted(actions.items()))}, total {len(events)}; "
        f"flaky refused {flaky.statuses.count(503)} attempt(s)"
    )
    # what the registry sent: every action, in its own media type, references included
    assert set(actions) == {"push", "pull", "mount", "delete"}
    assert set(tap.content_types) == {MEDIA_TYPE_V1}
    assert any(event["target"].get("references") for event in events)
    assert any(re.search(r"\.\d{9}Z$", event["timestamp"]) for event in events)
    assert len({event["id"] for event in events}) == len(events), "the tap got a duplicate"
    # the registry delivered the same events to rxsinks' ingest, each once, all accepted
    assert set(tap.statuses) == {200}
    assert registry_metrics["tap"]["Statuses"] == {"200 OK": len(events)}
    assert registry_metrics["rxsinks"] == registry_metrics["tap"]

    # every endpoint: exactly the tap's events, the same JSON objects, in the same order
    assert everything.events == events
    assert flaky.events == events
    assert nopulls.events == [event for event in events if event["action"] != "pull"]
    assert all(event["action"] != "pull" for event in nopulls.events)
    # the outage happened: the first attempt was refused, so every event came after it
    refused = flaky.statuses.count(503)
    assert flaky.statuses[0] == 503 and refused >= 2
    assert flaky.statuses.count(200) == len(events)
    assert set(everything.statuses) == {200} and set(nopulls.statuses) == {200}
    assert serve.states("flaky")[:1] == ["breaker_opened"] and "recovered" in serve.states("flaky")

    counts = expected_counts(tap)
    refused_by = {"all": 0, "flaky": refused, "nopulls": 0}

    status, text = await fetch(session, f"{serve.base}/debug/vars")
    assert status == 200
    entries = json.loads(text)["registry"]["notifications"]["endpoints"]
    metrics = {entry["name"]: entry["Metrics"] for entry in entries}
    assert set(metrics) == {"all", "flaky", "nopulls"}
    for name, figures in metrics.items():
        statuses = {"200 OK": counts[name]}
        if refused_by[name]:
            statuses["503 Service Unavailable"] = refused_by[name]
        assert {key: figures[key] for key in ("Pending", "Events", "Successes")} == {
            "Pending": 0,
            "Events": counts[name],
            "Successes": counts[name],
        }, name
        assert (figures["Failures"], figures["Errors"]) == (refused_by[name], 0), name
        assert figures["Statuses"] == statuses, name
        assert figures["DeadLetters"] == 0 and figures["Breaker"] == "closed", name

    status, text = await fetch(session, f"{serve.base}/metrics")
    assert status == 200
    samples = prometheus_samples(text)
    events_total = "registry_notifications_events_total"
    for name, count in counts.items():
        assert sample(samples, events_total, type="Events", endpoint=name) == count
        assert sample(samples, events_total, type="Successes", endpoint=name) == count
        assert sample(samples, events_total, type="Failures", endpoint=name) == refused_by[name]
        assert sample(samples, "registry_notifications_pending_total", endpoint=name) == 0
        assert (
            sample(samples, "registry_notifications_status_total", code="200 OK", endpoint=name)
            == count
        )
    assert (
        sample(
            samples,
            "registry_notifications_status_total",
            code="503 Service Unavailable",
            endpoint="flaky",
        )
        == refused
    )
    assert sample(samples, "rxsinks_ingest_events_total") == len(events)
    assert sample(samples, "rxsinks_ingest_requests_total", code="200") == len(tap.statuses)


def print_diagnostics(registry: Registry | None, serve: Serve, skopeo: Skopeo, tap: Hook) -> None:
    """Shown by pytest when the test fails: what each component said."""
    print("--- skopeo commands:")
    for command in skopeo.commands:
        print("  ", " ".join(command))
    print("--- tap events:")
    for event in tap.events:
        target = event.get("target", {})
        print("  ", event.get("action"), target.get("repository"), target.get("digest"))
    print("--- rxsinks serve stderr:")
    print("\n".join(serve.lines[-200:]))
    if registry is not None:
        print(f"--- registry log ({registry.log_path}):")
        print(registry.log_tail())
