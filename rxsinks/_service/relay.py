"""The relay service: endpoints built from a :class:`RelayConfig`, fed by the ingest server.

A :class:`Relay` is what ``rxsinks serve`` runs: one :class:`~rxsinks.EventSubject`, one
:class:`~rxsinks.Endpoint` per enabled endpoint of the configuration subscribed to it (disabled
ones are never built, as in the registry), and the ``aiohttp.web`` ingest app the registry
posts to (see :mod:`rxsinks._service.ingest`). Events enter in one place, :meth:`Relay.accept`,
which the ingest awaits before it answers 2xx.

Lifecycle::

    relay = Relay(load_config("rxsinks.yml"))
    await relay.start()              # binds the ingest (port 0 picks a free port)
    ...                              # the registry posts to relay.url
    report = await relay.stop(10.0)  # 503 for new POSTs, flush for up to 10 s, release

Every endpoint state change is logged once on the ``rxsinks.relay`` logger, with the structured
fields ``endpoint`` and ``state`` (``breaker_opened``, ``recovered``, ``disabled``) in the record's
``extra``. An endpoint disabled by ``410 Gone`` takes no further events until the relay restarts
(they count as its ``Dropped``).

Safety at start: the ingest refuses to listen beyond loopback without a token unless
``ingest.insecure`` (:func:`~rxsinks._service.config.exposure_problems`); a SQLite store is locked,
so a second relay on it fails with :class:`~rxsinks._store.StoreLockedError`; endpoints the store
holds events for but the configuration no longer names are reported, with the commands that
drop or move their backlog. The memory store holds at most ``store.maxevents`` events and
``store.maxsize`` bytes: past them :meth:`Relay.accept` raises
:class:`~rxsinks._store.StoreFullError` (the ingest answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
import uuid
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from aiohttp import web
from reactivex import abc

from .._endpoint import Endpoint
from .._event import Event, encode_event
from .._exceptions import SINK_CLOSED, ConfigError, StoreError, StoreFullError
from .._redact import redact_url
from .._store.protocol import Store
from .._store.sqlite import DeadLetterRecord
from .._subject import CloseReport, EventSubject
from .budget import MemoryBudget, Release
from .build import POLL_INTERVAL, build_endpoints, endpoint_from_config, open_store
from .config import (
    ConfigErrors,
    EndpointConfig,
    RelayConfig,
    exposure_problems,
    listens_beyond_loopback,
)
from .ingest import GUARD, INGEST, GuardedSite, ingest_app, ingest_runner
from .logs import DeadLetterLog, StateLog
from .ui import setup_ui

if TYPE_CHECKING:
    from .._store.lease import LeaseManager  # needs the optional `redis` package

__all__ = ["Mode", "Relay"]

log = logging.getLogger("rxsinks.relay")

Mode = Literal["memory", "local", "shared"]
"""How a relay holds and delivers its events (see :class:`Relay`)."""

_MODES: Final[dict[str, Mode]] = {"memory": "memory", "sqlite": "local", "redis": "shared"}
# time aiohttp gives handlers still running when the runner is cleaned up: they only wait for
# accept(), which never blocks on delivery, so this is only reached by clients sending slowly
_HANDLER_SHUTDOWN: Final = 2.0
# how often the store drops what every endpoint has delivered
_COMPACT_EVERY: Final = 30.0
# while the store refuses writes, /healthz tries a small write at most this often
_PROBE_EVERY: Final = 5.0


class Relay:
    """The relay: ingest server, event subject and endpoints, as configured.

    It runs in one of three modes (:attr:`mode`), chosen by ``store.kind``:

    ``"memory"`` (``kind: memory``)
        The endpoints are subscribed to :attr:`subject`; accepted events go straight to their
        queues, within the memory store's bounds. Nothing survives a restart.
    ``"local"`` (SQLite)
        :meth:`accept` commits events to the store first, then hands each endpoint the events it
        takes (:meth:`~rxsinks.Endpoint.on_stored`); every endpoint delivers here and resumes
        its backlog at start. The store is locked: one relay per file.
    ``"shared"`` (Redis)
        Several relays share the store. Each delivers only for the endpoints whose lease it
        holds (a :class:`~rxsinks.LeaseManager`), with a fresh endpoint per lease; the endpoints
        built from the configuration only decide which events each endpoint takes.

    Args:
        config: the validated configuration (:func:`~rxsinks._service.config.load_config`).
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
        self.mode: Mode = _MODES[config.store.kind]
        """``"memory"``, ``"local"`` or ``"shared"`` (see the class docstring)."""
        self.store = open_store(config.store, exclusive=True)
        pairs = build_endpoints(config, scheduler=scheduler, store=self.store)
        self.endpoint_configs: tuple[EndpointConfig, ...] = tuple(cfg for cfg, _ in pairs)
        # every enabled endpoint, in file order: they decide which events each endpoint takes;
        # they deliver too, except in shared mode (see _live)
        self._built: tuple[Endpoint, ...] = tuple(endpoint for _, endpoint in pairs)
        self._scheduler = scheduler
        # the endpoints delivering here, by name: all of them, or in shared mode those whose
        # lease this relay holds (a fresh Endpoint per lease)
        self._live: dict[str, Endpoint] = (
            {} if self.mode == "shared" else {endpoint.name: endpoint for endpoint in self._built}
        )
        self._leases: LeaseManager | None = None  # shared mode, once started
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.subject = EventSubject()
        self._budget: MemoryBudget | None = None
        if self.store is None:
            self._budget = MemoryBudget(
                config.store.memory_max_events, config.store.memory_max_bytes
            )
        self._unsubscribed: set[str] = set()  # disabled endpoints taken off the subject
        for endpoint in self._built:
            self._watch(endpoint)
            if self.store is None:
                self.subject.add(endpoint)
            # a durable endpoint is fed by accept() once the store committed (with the seq);
            # the subject still carries every accepted event for other observers
        self.app = ingest_app(self)
        # the operator's page (/ui) and its JSON API (/api/...), behind the ingest's token
        setup_ui(self.app, self, self.app[INGEST], self.app[INGEST].authorized)
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None
        self._accepting = False
        self._stopped: asyncio.Future[CloseReport] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._store_problem: str | None = None
        self._probed = 0.0

    def _watch(self, endpoint: Endpoint) -> None:
        endpoint.outcomes.subscribe(StateLog(endpoint.name))
        endpoint.dead_letters.subscribe(DeadLetterLog(endpoint.name))
        if self._budget is not None:
            endpoint.outcomes.subscribe(Release(self._budget))

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints, in file order (with Redis: the delivering one where this relay holds
        the lease, else the idle one that only filters)."""
        return tuple(self._live.get(endpoint.name, endpoint) for endpoint in self._built)

    @property
    def leases(self) -> LeaseManager | None:
        """With a Redis store, the lease manager deciding which instance delivers for which
        endpoint (once started); otherwise ``None``."""
        return self._leases

    @property
    def memory_held(self) -> tuple[int, int] | None:
        """With the memory store: the events and bytes of event JSON it holds now (bounded by
        ``store.maxevents`` and ``store.maxsize``); with a durable store ``None``."""
        budget = self._budget
        return None if budget is None else (budget.events, budget.bytes)

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
        ingest = self.config.ingest
        exposure = exposure_problems(ingest)
        if exposure:
            raise ConfigErrors(exposure)
        if ingest.token is None and listens_beyond_loopback(ingest):
            log.warning(
                "ingest: listening on %s, beyond loopback, WITHOUT a token (ingest.insecure): "
                "anyone who can reach it can post events; the admin routes stay closed",
                ingest.addr,
            )
        if self.store is not None:
            # StoreError (corrupt, unwritable, unreachable, locked by another relay) stops the
            # start with its message
            await self.store.open()
            await self._report_orphans()
            if self.mode == "shared":
                from .._store.lease import LeaseManager  # needs the optional `redis` package

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
                    self._start_endpoint(endpoint)
            self._compactor = asyncio.ensure_future(self._compact_regularly())
        runner = ingest_runner(self.app, ingest, _HANDLER_SHUTDOWN)
        await runner.setup()
        site = GuardedSite(runner, ingest.host or None, ingest.port, self.app[GUARD])
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
        if store.kind == "memory":
            events = store.memory_max_events
            where = (
                f"in memory (nothing survives a restart; at most "
                f"{'unbounded' if events is None else events} events, "
                f"{store.memory_max_bytes} bytes)"
            )
        elif store.kind == "sqlite":
            where = str(store.path)
        else:
            where = redact_url(store.url or "")
        log.info("store: %s", where, extra={"store": store.kind})
        # the real addresses: every interface shows as such, not as the loopback URL
        listening = ", ".join(_shown_address(address) for address in runner.addresses)
        log.info(
            "ingest listening on %s (POST /events); %d endpoint(s): %s",
            listening,
            len(self.endpoints),
            ", ".join(endpoint.name for endpoint in self.endpoints) or "none",
            extra={"url": self.url},
        )

    def _start_endpoint(self, endpoint: Endpoint) -> None:
        """Start an endpoint on its backlog; options its store cannot serve are a problem of
        the configuration, reported at the endpoint's key path."""
        try:
            endpoint.start()  # resumes the endpoint's backlog from the store
        except ValueError as exc:
            index = [cfg.name for cfg in self.config.endpoints].index(endpoint.name)
            raise ConfigErrors(
                [ConfigError(f"notifications.endpoints[{index}]", str(exc))]
            ) from None

    async def accept(self, events: Sequence[Event], *, size: int | None = None) -> None:
        """Take accepted events in: the one place where events enter the relay.

        With a durable store, the events and one delivery per accepting endpoint are committed
        first (one transaction); then each endpoint is told, and the subject carries the events
        to any other observer. In memory mode they are written to the subject, which hands them
        to every endpoint's queue, within the memory store's bounds. Either way it returns once
        they are accepted, so the ingest may answer 2xx. An endpoint disabled by 410 Gone takes
        none of them (they count as its ``Dropped``).

        Args:
            events: the events.
            size: the bytes they took in the request (the memory store's bound counts them);
                by default their JSON is measured.

        Raises:
            SinkClosedError: the relay is stopping.
            StoreFullError: the memory store is at its bounds: nothing was accepted.
            StoreError: the store could not commit them (disk full...): nothing was accepted.
        """
        disabled = self._disabled()
        if self.store is None:
            if self._budget is not None:
                self._admit(events, size, disabled)
            self.subject.write(*events)
            return
        if not self._accepting and self._runner is not None:
            raise SINK_CLOSED
        routes = [
            [
                endpoint.name
                for endpoint in self._built
                if endpoint.name not in disabled and endpoint.accepts(event)
            ]
            for event in events
        ]
        if disabled:
            self._count_skipped(events, disabled)
        try:
            seqs = await self.store.append(events, routes)
        except StoreError as exc:
            self._store_problem = str(exc)
            self._probed = time.monotonic()
            raise
        self._store_problem = None
        live = self._live
        for seq, event, names in zip(seqs, events, routes, strict=True):
            for name in names:
                endpoint = live.get(name)
                if endpoint is not None:  # (with Redis, another relay may deliver for it)
                    endpoint.on_stored(seq, event)
        if self.subject.members:
            self.subject.write(*events)

    def _disabled(self) -> dict[str, Endpoint]:
        """The endpoints (delivering here) that disabled themselves, by name."""
        disabled = {name: ep for name, ep in self._live.items() if ep.disabled}
        if disabled and self.store is None:
            for name, endpoint in disabled.items():
                if name not in self._unsubscribed:
                    # it takes nothing any more: the subject stops handing it events
                    self._unsubscribed.add(name)
                    self.subject.remove(endpoint)
        return disabled

    def _count_skipped(self, events: Sequence[Event], disabled: dict[str, Endpoint]) -> None:
        for endpoint in disabled.values():
            skipped = sum(1 for event in events if endpoint.accepts(event))
            if skipped:
                endpoint.metrics_observer.dropped(skipped)

    def _admit(
        self, events: Sequence[Event], size: int | None, disabled: dict[str, Endpoint]
    ) -> None:
        assert self._budget is not None
        if disabled:
            self._count_skipped(events, disabled)
        takers = [
            sum(
                1
                for endpoint in self._built
                if endpoint.name not in disabled and endpoint.accepts(event)
            )
            for event in events
        ]
        if size is not None and events:
            each = max(1, size // len(events))
            sizes = [each] * len(events)
        else:
            sizes = [len(encode_event(event).encode("utf-8", "surrogatepass")) for event in events]
        try:
            self._budget.admit(events, takers, sizes)
        except StoreFullError as exc:
            if not exc.fits or any(endpoint.pending for endpoint in self._built):
                raise
            # nothing is queued anywhere: what the budget still counts was settled without an
            # outcome (closed endpoints): start over rather than refuse for ever
            self._budget.reset()
            self._budget.admit(events, takers, sizes)

    async def store_problem(self) -> str | None:
        """Why the store cannot write, or ``None`` when it can (as far as is known).

        Set when a write failed (a full disk); while it is, a small test write is tried at most
        every few seconds, and a success clears it.
        """
        problem = self._store_problem
        if problem is None or self.store is None:
            return None
        now = time.monotonic()
        if now - self._probed < _PROBE_EVERY:
            return problem
        self._probed = now
        try:
            await self.store.probe()
        except StoreError as exc:
            self._store_problem = str(exc)
        else:
            self._store_problem = None
        return self._store_problem

    async def _report_orphans(self) -> None:
        """Warn about endpoints the store keeps events for that the configuration lacks."""
        if self.store is None:
            return
        configured = {endpoint.name for endpoint in self.config.endpoints}
        try:
            found = await self.store.backlogs()
        except StoreError as exc:
            log.warning("store: cannot list its endpoints: %s", exc)
            return
        for backlog in found:
            if backlog.endpoint in configured:
                continue
            log.warning(
                "store: endpoint %r is not in the configuration but the store keeps %d "
                "undelivered event(s) and %d dead letter(s) for it (renamed or removed?); "
                "drop them with `rxsinks store drop-endpoint %s --config FILE`, or give them to "
                "a configured endpoint with `rxsinks store move-endpoint %s NEW --config FILE` "
                "(with the relay stopped)",
                backlog.endpoint,
                backlog.pending,
                backlog.dead_letters,
                backlog.endpoint,
                backlog.endpoint,
                extra={"endpoint": backlog.endpoint, "state": "orphaned"},
            )

    async def compact(self) -> int:
        """Drop from the store what every endpoint has delivered; returns how many events.

        Deliveries kept for endpoints that are not configured any more hold back only their
        own events (see the start-up warning), not everybody's.
        """
        if self.store is None:
            return 0
        return await self.store.compact([endpoint.name for endpoint in self.config.endpoints])

    async def dead_letters(
        self, endpoint: str | None = None, since: float | None = None
    ) -> list[DeadLetterRecord]:
        """Dead letters kept in the store (optionally of one endpoint, given up since a time).

        Raises:
            RuntimeError: the relay has no durable store.
        """
        records: list[DeadLetterRecord] = await self._durable_store().dead_letters(endpoint, since)
        return records

    async def replay(
        self,
        endpoint: str | None = None,
        since: float | None = None,
        *,
        ids: Collection[int] | None = None,
    ) -> int:
        """Put dead letters back on their endpoints' queues; returns how many.

        Args:
            endpoint: only this endpoint's.
            since: only those given up since this unix time.
            ids: only these (:attr:`~rxsinks.DeadLetterRecord.id`); unknown ids are skipped.

        Raises:
            RuntimeError: the relay has no durable store.
        """
        replayed = await self._durable_store().replay(endpoint, since, ids=ids)
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
            poll_interval=POLL_INTERVAL,
        )
        self._watch(endpoint)
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
                removed = await self.compact()
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


def _shown_address(address: Any) -> str:
    """A bound socket address as ``host:port`` (IPv6 in brackets)."""
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
