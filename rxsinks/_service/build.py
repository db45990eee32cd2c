"""From a validated configuration to the objects that run: the store and the endpoints.

The configuration reader (:mod:`rxsinks._service.config`) has already turned every endpoint into
the option objects an :class:`~rxsinks.Endpoint` takes, so building one passes them on; what is
decided here is only what the file cannot say: which store the endpoints share, how much of it
each keeps in memory, and whether other relays write to it too (Redis).
"""

from __future__ import annotations

import ssl
from typing import Final

from reactivex import abc

from .._endpoint import Endpoint
from .._exceptions import ConfigError, ConfigErrors, StoreError
from .._store.protocol import QueueStore, Store
from .._store.sqlite import SQLiteStore
from .config import EndpointConfig, RelayConfig, StoreConfig

__all__ = ["POLL_INTERVAL", "build_endpoints", "endpoint_from_config", "open_store"]

POLL_INTERVAL: Final = 0.1
"""A Redis-backed endpoint reads new events as they are stored (a blocking read) and falls back
to looking this often (seconds) when that read fails."""


def open_store(config: StoreConfig, *, exclusive: bool = False) -> Store | None:
    """The store a configuration names, not yet opened (``None`` for ``kind: memory``).

    Args:
        config: the store settings.
        exclusive: a relay's: a SQLite store is locked when opened, so that no other relay
            delivers from it (Redis is shared by design).

    Raises:
        StoreError: the store is Redis and the optional ``redis`` package is missing.
    """
    if config.kind == "memory":
        return None
    if config.kind == "redis":
        try:
            from .._store.redis import RedisStore
        except ImportError as exc:
            raise StoreError(
                f"store.url is Redis but the redis package is missing: {exc}; "
                "install it with: pip install 'rxsinks[redis]'"
            ) from None

        assert config.url is not None
        redis_store: Store = RedisStore(config.url)
        return redis_store
    assert config.path is not None
    return SQLiteStore(
        config.path, retention=config.retention, max_bytes=config.max_size, exclusive=exclusive
    )


def endpoint_from_config(
    config: EndpointConfig,
    *,
    scheduler: abc.SchedulerBase | None = None,
    store: QueueStore | None = None,
    store_window: int = 1024,
    poll_interval: float | None = None,
) -> Endpoint:
    """Build the :class:`~rxsinks.Endpoint` an :class:`EndpointConfig` describes.

    Args:
        config: one endpoint of a :class:`RelayConfig` (disabled or not: the caller decides).
        scheduler: the clock for waits (tests); by default the running event loop.
        store: the durable store its queue lives in (``None``: in memory, bounded as
            ``config.queue`` says; a durable queue's bound is the store's).
        store_window: events of its backlog kept in memory.
        poll_interval: when other relay instances store events too (Redis), the seconds between
            looks for them if the store cannot wait for them with a blocking read.
    """
    return Endpoint(
        config.name,
        config.url,
        webhook=config.webhook,
        retry=config.retry,
        queue=config.queue if store is None else None,
        batch=config.batch,
        delivery=config.delivery,
        filter=config.filter,
        ignore_actions=config.ignore.ignore_actions,
        ignore_media_types=config.ignore.ignore_media_types,
        store=store,
        store_window=store_window,
        poll_interval=poll_interval,
        scheduler=scheduler,
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
            (``notifications.endpoints[2]``) and the reason. (The reader has checked every
            value; what is left is what only building finds, e.g. a file that went missing.)
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
                poll_interval=POLL_INTERVAL if config.store.kind == "redis" else None,
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
