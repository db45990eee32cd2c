"""The relay service: endpoints built from a :class:`RelayConfig`, fed by the ingest server.

A :class:`Relay` is what ``rxsinks serve`` runs: one :class:`~rxsinks.EventSubject`, one
:class:`~rxsinks.Endpoint` per enabled endpoint of the configuration subscribed to it (disabled
ones are never built, as in the registry), and the ``aiohttp.web`` ingest app the registry posts
to (see :mod:`rxsinks._ingest`). Events enter in one place, :meth:`Relay.accept`, which the ingest
awaits before it answers 2xx.

Lifecycle::

    relay = Relay(load_config("rxsinks.yml"))
    await relay.start()              # binds the ingest (port 0 picks a free port)
    ...                              # the registry posts to relay.url
    report = await relay.stop(10.0)  # 503 for new POSTs, flush for up to 10 s, release

Every endpoint state change is logged once on the ``rxsinks.relay`` logger, with the structured
fields ``endpoint`` and ``state`` (``breaker_opened``, ``recovered``, ``disabled``) in the record's
``extra``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from reactivex import abc
from tenacity.stop import stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential, wait_fixed

from ._config import ConfigErrors, EndpointConfig, RelayConfig, StoreConfig
from ._durable import QueueStore, Store
from ._endpoint import Endpoint
from ._event import Event
from ._exceptions import SINK_CLOSED, ConfigError
from ._filter import EventFilter
from ._ingest import ingest_app
from ._outcome import Outcome, OutcomeKind
from ._queue import Overflow
from ._retry import Policy
from ._store import DeadLetterRecord, SQLiteStore, StoreError
from ._subject import CloseReport, EventSubject

__all__ = [
    "Relay",
    "build_endpoints",
    "endpoint_from_config",
    "exponential_wait",
    "open_store",
]

log = logging.getLogger("rxsinks.relay")

# every spelling the configuration (or a person) may use, mapped to the queue's names
_OVERFLOWS: dict[str, Overflow] = {
    "dropoldest": "drop_oldest",
    "droppoldest": "drop_oldest",
    "dropnewest": "drop_newest",
    "error": "error",
}

# time aiohttp gives handlers still running when the runner is cleaned up: they only wait for
# accept(), which never blocks on delivery, so this is only reached by clients sending slowly
_HANDLER_SHUTDOWN = 2.0

# a Redis-backed endpoint reads new events as they are stored (a blocking read) and falls
# back to looking this often when that read fails
_POLL_INTERVAL = 0.1
# how often the store drops what every endpoint has delivered
_COMPACT_EVERY = 30.0


def open_store(config: StoreConfig) -> Store | None:
    """The store a configuration names, not yet opened (``None`` for ``kind: memory``)."""
    if config.kind == "memory":
        return None
    if config.kind == "redis":
        try:
            from ._redis_store import RedisStore
        except ImportError as exc:
            raise StoreError(
                f"store.url is Redis but the redis package is missing: {exc}; "
                "install it with: pip install 'rxsinks[redis]'"
            ) from None

        assert config.url is not None
        redis_store: Store = RedisStore(config.url)
        return redis_store
    assert config.path is not None
    return SQLiteStore(config.path, retention=config.retention, max_bytes=config.max_size)


def exponential_wait(base: float, factor: float, maximum: float) -> Policy:
    """go-events' exponential backoff bound as a tenacity wait strategy.

    After the n-th failed attempt of a block, it waits ``base + factor * 2**(n-1)`` seconds,
    capped at ``maximum``: with ``(1, 1, 20)`` that is 2, 3, 5, 9, 17, 20, 20 ... seconds.
    go-events draws the actual wait uniformly from ``[0, bound)``; rxsinks waits the bound, so
    waits are reproducible and never shorter than go-events' longest.

    Args:
        base: seconds added to every wait (>= 0).
        factor: seconds multiplied by ``2**(n-1)`` (>= 0).
        maximum: the cap (>= ``base``).

    Raises:
        ValueError: a negative value, or ``maximum < base``.
    """
    if base < 0 or factor < 0 or maximum < base:
        raise ValueError(
            f"exponential backoff needs 0 <= base <= max and factor >= 0, "
            f"got base={base}, factor={factor}, max={maximum}"
        )
    # tenacity's wait_exponential gives multiplier * exp_base**(attempt-1) capped at its max;
    # capping that at max - base and adding base caps the sum at max.
    return wait_exponential(multiplier=factor, exp_base=2, max=maximum - base) + wait_fixed(base)


def _overflow(value: str) -> Overflow:
    key = value.lower().replace("_", "").replace("-", "")
    try:
        return _OVERFLOWS[key]
    except KeyError:
        raise ValueError(
            f"queue overflow must be dropoldest, dropnewest or error, got {value!r}"
        ) from None


def endpoint_from_config(
    config: EndpointConfig,
    *,
    scheduler: abc.SchedulerBase | None = None,
    store: QueueStore | None = None,
    store_window: int = 1024,
    poll_interval: float | None = None,
) -> Endpoint:
    """Build the :class:`~rxsinks.Endpoint` an :class:`EndpointConfig` describes.

    Every field is mapped: ``retry_max_attempts`` becomes tenacity ``stop_after_attempt``,
    ``retry_max_age`` ``stop_after_delay`` (both: whichever comes first), ``retry_exponential``
    an :func:`exponential_wait`, the ``match_*`` and ``exclude_repositories`` lists an
    :class:`~rxsinks.EventFilter`, the ``tls_*`` fields the webhook's TLS options. Zero means
    "not set" for the retry bounds and the queue bound, as in the configuration file.

    Args:
        config: one endpoint of a :class:`RelayConfig` (disabled or not: the caller decides).
        scheduler: the clock for waits (tests); by default the running event loop.
        store: the durable store its queue lives in (``None``: in memory).
        store_window: events of its backlog kept in memory.
        poll_interval: when other relay instances store events too (Redis), the seconds between
            looks for them if the store cannot wait for them with a blocking read.

    Raises:
        ValueError, TypeError, OSError, ssl.SSLError: the endpoint cannot be built (a header
            that clashes with the signature, an unreadable certificate...);
            :func:`build_endpoints` turns these into :class:`ConfigErrors`.
    """
    stops: list[Any] = []
    if config.retry_max_attempts > 0:
        stops.append(stop_after_attempt(config.retry_max_attempts))
    if config.retry_max_age > 0:
        stops.append(stop_after_delay(config.retry_max_age))
    stop: Any = None
    for strategy in stops:
        stop = strategy if stop is None else stop | strategy
    wait = None if config.retry_exponential is None else exponential_wait(*config.retry_exponential)
    event_filter = None
    if (
        config.match_actions
        or config.match_media_types
        or config.match_repositories
        or config.exclude_repositories
    ):
        # an empty allow-list means "not configured" in the file, but "nothing" to EventFilter
        event_filter = EventFilter(
            actions=config.match_actions or None,
            media_types=config.match_media_types or None,
            repositories=config.match_repositories or None,
            exclude_repositories=config.exclude_repositories or None,
        )
    return Endpoint(
        config.name,
        config.url,
        headers={name: list(values) for name, values in config.headers.items()},
        timeout=config.timeout,
        threshold=config.threshold,
        backoff=config.backoff,
        ignore_media_types=config.ignore_media_types,
        ignore_actions=config.ignore_actions,
        event_filter=event_filter,
        secret=config.secret,
        batch_max_events=config.batch_max_events,
        batch_max_delay=config.batch_max_delay,
        stop=stop,
        wait=wait,
        queue_max_events=config.queue_max_events or None,
        overflow=_overflow(config.queue_overflow),
        content_type=config.content_type,
        permanent_statuses=config.permanent_statuses,
        scheduler=scheduler,
        secret_headers=config.secret_headers,
        ca_file=config.tls_ca_file,
        cert_file=config.tls_cert_file,
        key_file=config.tls_key_file,
        verify_tls=config.tls_verify,
        redirects=config.redirects,
        retry_after_cap=config.retry_after_cap,
        store=store,
        store_window=store_window,
        poll_interval=poll_interval,
    )


def build_endpoints(
    config: RelayConfig,
    *,
    scheduler: abc.SchedulerBase | None = None,
    store: QueueStore | None = None,
) -> tuple[tuple[EndpointConfig, Endpoint], ...]:
    """Build every enabled endpoint of a configuration, in file order.

    Returns:
        ``(config, endpoint)`` pairs; disabled endpoints are left out.

    Raises:
        ConfigErrors: one problem per endpoint that cannot be built, with its key path
            (``notifications.endpoints[2]``) and the reason.
    """
    built: list[tuple[EndpointConfig, Endpoint]] = []
    problems: list[ConfigError] = []
    for index, endpoint_config in enumerate(config.endpoints):
        if endpoint_config.disabled:
            continue
        try:
            endpoint = endpoint_from_config(
                endpoint_config,
                scheduler=scheduler,
                store=store,
                store_window=config.store.window,
                poll_interval=_POLL_INTERVAL if config.store.kind == "redis" else None,
            )
            built.append((endpoint_config, endpoint))
        except (ValueError, TypeError, OSError, ssl.SSLError) as exc:
            problems.append(
                ConfigError(
                    f"notifications.endpoints[{index}]",
                    f"endpoint {endpoint_config.name!r} cannot be built: {exc}",
                )
            )
    if problems:
        raise ConfigErrors(problems)
    return tuple(built)


class _StateLog(abc.ObserverBase[Outcome]):
    """Logs one line per state change of one endpoint (never per attempt).

    A breaker that stays unhealthy goes open -> half open -> open once per backoff; only the
    first opening and the recovery are worth a line at INFO and above, the trials are DEBUG.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._last_error: BaseException | None = None
        self._open = False

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
            self._log(
                logging.ERROR,
                "disabled",
                "endpoint %s: disabled: the receiver answered %s Gone; no further deliveries",
                self._name,
                value.status or 410,
            )

    def on_error(self, error: Exception) -> None:
        log.error("endpoint %s: outcome stream failed: %s", self._name, error)

    def on_completed(self) -> None:
        pass


class Relay:
    """The relay: ingest server, event subject and endpoints, as configured.

    Args:
        config: the validated configuration (:func:`~rxsinks._config.load_config`).
        scheduler: the clock for endpoint waits (tests); by default the running event loop.

    Raises:
        ConfigErrors: an enabled endpoint cannot be built (see :func:`build_endpoints`).

    Attributes:
        config: the configuration.
        subject: where accepted events are written.
        endpoints: the built endpoints, in file order.
        endpoint_configs: their configurations, in the same order.
        app: the ingest ``aiohttp.web.Application``.
    """

    def __init__(self, config: RelayConfig, *, scheduler: abc.SchedulerBase | None = None) -> None:
        self.config = config
        self.store = open_store(config.store)
        pairs = build_endpoints(config, scheduler=scheduler, store=self.store)
        self.endpoint_configs: tuple[EndpointConfig, ...] = tuple(cfg for cfg, _ in pairs)
        self._built: tuple[Endpoint, ...] = tuple(endpoint for _, endpoint in pairs)
        self._scheduler = scheduler
        # with Redis, several relays share the endpoints: each delivers only for those it holds
        # the lease of, with a fresh Endpoint per lease; the built ones then only filter
        self._shared = config.store.kind == "redis"
        self._live: dict[str, Endpoint] = (
            {} if self._shared else {endpoint.name: endpoint for endpoint in self._built}
        )
        self._leases: Any = None  # a LeaseManager with a Redis store
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.subject = EventSubject()
        for endpoint in self._built:
            endpoint.outcomes.subscribe(_StateLog(endpoint.name))
            if self.store is None:
                self.subject.add(endpoint)
            # a durable endpoint is fed by accept() once the store committed (with the seq);
            # the subject still carries every accepted event for other observers
        self.app = ingest_app(self)
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None
        self._accepting = False
        self._stopped: asyncio.Future[CloseReport] | None = None
        self._compactor: asyncio.Task[None] | None = None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints, in file order (with Redis: the delivering one where this relay holds
        the lease, else the idle one that only filters)."""
        return tuple(self._live.get(endpoint.name, endpoint) for endpoint in self._built)

    @property
    def delivering(self) -> tuple[str, ...]:
        """Names of the endpoints this relay delivers for."""
        return tuple(name for name in (e.name for e in self._built) if name in self._live)

    def __repr__(self) -> str:
        names = ", ".join(endpoint.name for endpoint in self.endpoints)
        where = self.url if self._address is not None else "not started"
        return f"Relay({where}, endpoints=[{names}])"

    @property
    def accepting(self) -> bool:
        """Whether the ingest accepts events (started and not stopping)."""
        return self._accepting

    @property
    def address(self) -> tuple[str, int]:
        """The ingest's bound ``(host, port)`` (the real port when configured with 0).

        Raises:
            RuntimeError: the relay is not started.
        """
        if self._address is None:
            raise RuntimeError("the relay is not started: await relay.start() first")
        return self._address

    @property
    def url(self) -> str:
        """The ingest's URL for the registry's ``notifications.endpoints[].url``."""
        host, port = self.address
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/events"

    async def start(self) -> None:
        """Bind the ingest server and start accepting events.

        Raises:
            OSError: the address cannot be bound (in use, not local...); the message names it.
            RuntimeError: already started.
        """
        if self._runner is not None:
            raise RuntimeError("the relay is already started")
        if self.store is not None:
            # StoreError (corrupt, unwritable, unreachable) stops the start with its message
            await self.store.open()
            if self._shared:
                from ._lease import LeaseManager  # needs the optional `redis` package

                assert self.config.store.url is not None
                self._leases = LeaseManager(
                    self.config.store.url,
                    self.instance_id,
                    [endpoint.name for endpoint in self._built],
                    on_acquire=self._acquired,
                    on_release=self._released,
                )
                self._leases.start()
            else:
                for endpoint in self._built:
                    endpoint.start()  # resumes each endpoint's backlog from the store
            self._compactor = asyncio.ensure_future(self._compact_regularly())
        ingest = self.config.ingest
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_HANDLER_SHUTDOWN)
        await runner.setup()
        site = web.TCPSite(runner, ingest.host or None, ingest.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason = "address already in use (is another rxsinks or service running?)"
            raise OSError(exc.errno, f"cannot listen on {ingest.addr}: {reason}") from exc
        self._runner = runner
        bound = runner.addresses[0]
        self._address = (str(bound[0]), int(bound[1]))
        self._accepting = True
        store = self.config.store
        log.info(
            "store: %s",
            {"memory": "in memory (nothing survives a restart)", "sqlite": store.path}.get(
                store.kind, store.url
            ),
            extra={"store": store.kind},
        )
        log.info(
            "ingest listening on %s; %d endpoint(s): %s",
            self.url,
            len(self.endpoints),
            ", ".join(endpoint.name for endpoint in self.endpoints) or "none",
            extra={"url": self.url},
        )

    async def accept(self, events: Sequence[Event]) -> None:
        """Take accepted events in: the one place where events enter the relay.

        With a durable store, the events and one delivery per accepting endpoint are committed
        first (one transaction); then each endpoint is told, and the subject carries the events
        to any other observer. In memory mode they are written to the subject, which hands them
        to every endpoint's queue. Either way it returns once they are accepted, so the ingest
        may answer 2xx.

        Raises:
            SinkClosedError: the relay is stopping.
            StoreError: the store could not commit them (disk full...): nothing was accepted.
        """
        if self.store is None:
            self.subject.write(*events)
            return
        if not self._accepting and self._runner is not None:
            raise SINK_CLOSED
        routes = [
            [endpoint.name for endpoint in self._built if endpoint.accepts(event)]
            for event in events
        ]
        seqs = await self.store.append(events, routes)
        live = self._live
        for seq, event, names in zip(seqs, events, routes, strict=True):
            for name in names:
                endpoint = live.get(name)
                if endpoint is not None:  # (with Redis, another relay may deliver for it)
                    endpoint.on_stored(seq, event)
        if self.subject.members:
            self.subject.write(*events)

    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None
    ) -> list[DeadLetterRecord]:
        """Dead letters kept in the store (optionally of one endpoint, given up since a time).

        Raises:
            RuntimeError: the relay has no durable store.
        """
        records: list[DeadLetterRecord] = await self._durable_store().dead_letters(endpoint, since)
        return records

    async def replay(self, endpoint: str | None = None, since: float | None = None) -> int:
        """Put dead letters back on their endpoints' queues; returns how many.

        Raises:
            RuntimeError: the relay has no durable store.
        """
        replayed = await self._durable_store().replay(endpoint, since)
        touched = {name for name, _ in replayed}
        for name, candidate in self._live.items():
            if name in touched:
                candidate.rescan()
        return len(replayed)

    async def _acquired(self, name: str) -> None:
        config = next(cfg for cfg in self.endpoint_configs if cfg.name == name)
        endpoint = endpoint_from_config(
            config,
            scheduler=self._scheduler,
            store=self.store,
            store_window=self.config.store.window,
            poll_interval=_POLL_INTERVAL,
        )
        endpoint.outcomes.subscribe(_StateLog(name))
        endpoint.start()  # reads the endpoint's whole backlog: nothing another relay left
        self._live[name] = endpoint
        log.info(
            "delivering for endpoint %s (lease acquired)",
            name,
            extra={"endpoint": name, "state": "leased", "instance": self.instance_id},
        )

    async def _released(self, name: str) -> None:
        endpoint = self._live.pop(name, None)
        if endpoint is None:
            return
        # stop at once: another relay may deliver for it now; what is left stays in Redis
        endpoint.dispose()
        await endpoint.aclose(0)
        log.info(
            "stopped delivering for endpoint %s (lease released)",
            name,
            extra={"endpoint": name, "state": "released", "instance": self.instance_id},
        )

    def _durable_store(self) -> Store:
        if self.store is None:
            raise RuntimeError("dead letters are kept by a durable store; this relay is in memory")
        return self.store

    async def _compact_regularly(self) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(_COMPACT_EVERY)
            try:
                removed = await self.store.compact()
            except Exception as exc:  # a failed compaction only delays the next one
                log.warning("store compaction failed: %s", exc)
                continue
            if removed:
                log.debug("store compaction removed %d delivered event(s)", removed)

    async def stop(self, grace: float | None = None) -> CloseReport:
        """Stop accepting, flush for at most ``grace`` seconds, then release everything.

        New POSTs are answered 503 from the moment this is called; ``/healthz`` answers 503 too.
        What is left undelivered at the deadline is logged per endpoint. Calling it again
        returns the first call's report.

        Args:
            grace: seconds to flush; by default ``ingest.grace`` of the configuration.

        Returns:
            The subject's :class:`~rxsinks.CloseReport` (``flushed`` False when the deadline
            passed with events left).
        """
        if self._stopped is not None:
            return await asyncio.shield(self._stopped)
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            report = await self._stop(self.config.ingest.grace if grace is None else grace)
        except BaseException as exc:
            self._stopped.set_exception(exc)
            raise
        self._stopped.set_result(report)
        return report

    async def _stop(self, grace: float) -> CloseReport:
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        live = list(self._live.values())  # (idle endpoints of a shared store never started)
        log.info("stopping: flushing %d endpoint(s) for up to %gs", len(live), grace)
        subject_report = await self.subject.aclose(grace)
        # each endpoint gets what is left of the grace period: once it is over, an endpoint
        # stops trying and releases its HTTP resources; what it still holds stays in the
        # durable store (in memory mode: goes to its dead letters)
        reports = await asyncio.gather(
            *(endpoint.aclose(max(0.0, deadline - loop.time())) for endpoint in live)
        )
        remaining = 0
        for endpoint, report in zip(live, reports, strict=True):
            if not report.flushed:
                remaining += report.remaining
                log.warning(
                    "endpoint %s: %d event(s) not delivered at shutdown",
                    endpoint.name,
                    report.remaining,
                    extra={
                        "endpoint": endpoint.name,
                        "state": "left",
                        "remaining": report.remaining,
                    },
                )
        if self._runner is not None:
            await self._runner.cleanup()
        if self._compactor is not None:
            self._compactor.cancel()
        if self._leases is not None:
            await self._leases.stop()
        if self.store is not None:
            await self.store.close()
        # the endpoints' reports are the truth: the subject's may only say that its own
        # deadline passed before every endpoint had caught up
        flushed = all(report.flushed for report in reports)
        if flushed:
            log.info("stopped: every accepted event was delivered or dead-lettered")
        else:
            log.warning("stopped with %d event(s) not delivered", remaining)
        return CloseReport(flushed, remaining=remaining, stages=subject_report.stages)

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
