"""The relay's configuration: the YAML file of ``rxsinks serve``, read into option objects.

The ``notifications:`` section is the Docker registry's own, so a registry ``config.yml`` (2.8
or 3) loads unchanged: its other sections, ``version``, ``storage``, ``http``, ``tags`` ..., are
ignored with a note. rxsinks adds its own sections and optional per-endpoint keys::

    ingest:
      addr: 127.0.0.1:5056        # host:port the ingest server listens on
      token: ${RXSINKS_TOKEN}     # requests then need "Authorization: Bearer <token>"; required
                                  # beyond loopback unless insecure: true; never empty
      max_body: 1MiB              # bytes, or B/KB/KiB/MB/MiB/GB/GiB
      grace: 10s                  # flush grace period at shutdown
      insecure: false             # true: listen beyond loopback without a token (a WARNING)
      open_metrics: false         # true: /metrics and /debug/vars need no token
      header_timeout: 10s         # a request's head must arrive within this
      body_timeout: 30s           # its body within this
      idle_timeout: 75s           # an idle keep-alive connection is closed after this
      max_connections: 512        # connections at once (idle ones give way to new ones)
    store:
      path: rxsinks.db            # sqlite (default); or kind: memory; or url: redis://...
      maxsize: 1GiB               # optional cap (memory store: 64MiB by default)
      maxevents: 100000           # memory store only: events held at once (0: no cap)
    notifications:
      events: {includereferences: true}
      endpoints:
        - name: alpha
          url: https://hooks.example.com/a
          headers: {Authorization: [Bearer x]}
          timeout: 500ms          # registry keys: defaults 1s / 10 / 1s when missing or <= 0
          threshold: 5
          backoff: 1s
          ignoredmediatypes: [application/octet-stream]
          ignore: {mediatypes: [], actions: [pull]}
          disabled: false
          secret: ${HOOK_SECRET}  # rxsinks keys from here on, all optional
          secretheaders: [X-Api-Key]
          contenttype: v1         # v1 | v2 | a full media type
          batch: {maxevents: 100, maxdelay: 200ms}
          concurrency: 1          # POSTs in flight at once
          orderby: repository     # with concurrency > 1: repository | none | a JSON pointer
          delay: 0s               # no event goes before its timestamp + this
          retry: {maxattempts: 0, maxage: 0s, exponential: {base: 1s, factor: 1s, max: 20s}}
          permanentstatuses: [400, 404, 422]
          retryaftercap: 5m
          redirects: safe         # safe | none
          tls: {cafile: ca.pem, certfile: c.pem, keyfile: k.pem, insecureskipverify: false}
          queue: {maxevents: 0, overflow: dropoldest}   # dropoldest | dropnewest | error
          match: {actions: [push], repositories: ["library/*"], excluderepositories: []}
    log: {level: info, format: text}

The reader only turns YAML into the objects an :class:`~rxsinks.Endpoint` takes
(:class:`~rxsinks.WebhookOptions`, :class:`~rxsinks.Batching`, :class:`~rxsinks.Delivery`,
:func:`~rxsinks.retry_with_breaker`, :func:`~rxsinks.queue`, :class:`~rxsinks.EventFilter`):
what a valid value is, the objects say, and their errors are reported at the key path of the
value (:class:`~rxsinks.OptionError` names the argument). Keys are matched case-insensitively
(the registry's Go YAML decoder does the same) and reported by their lowercase path. Durations
use Go syntax (:func:`~rxsinks._service.units.parse_duration`: a bare number means
nanoseconds). String values may use ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal
dollar. Every problem in a file is collected before anything is raised: one
:class:`ConfigErrors` lists them all, each a :class:`~rxsinks.ConfigError` with the key path
(``notifications.endpoints[1].timeout``) and what was expected.

Relative file paths (store, TLS files) are relative to the working directory, as in the registry.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar

import yaml
from tenacity.stop import stop_after_attempt, stop_after_delay, stop_any

from .._exceptions import ConfigError, ConfigErrors
from .._filter import EventFilter
from .._options import (
    ALWAYS_SECRET_HEADERS,
    DEFAULT_BACKOFF,
    DEFAULT_THRESHOLD,
    DEFAULT_TIMEOUT,
    TLS,
    Batching,
    Delivery,
    ExponentialWait,
    Headers,
    OptionError,
    Secret,
    WebhookOptions,
    check_url,
    exponential_wait,
    registry_default,
)
from .._queue import Overflow, Queue
from .._redact import redact_url
from .._retry import RetryWithBreaker
from .units import parse_duration, parse_size

__all__ = [
    "REDACTED",
    "ConfigErrors",
    "EndpointConfig",
    "IngestConfig",
    "LogConfig",
    "RelayConfig",
    "StoreConfig",
    "exposure_problems",
    "load_config",
    "parse_config",
]

log = logging.getLogger("rxsinks.config")

REDACTED: Final = "<redacted>"
"""What :meth:`RelayConfig.redacted` shows instead of a secret."""

MEMORY_MAX_EVENTS: Final = 100_000
"""Events the memory store holds at most, by default (``store.maxevents``)."""

MEMORY_MAX_BYTES: Final = 64 * 1024 * 1024
"""Bytes of event JSON the memory store holds at most, by default (``store.maxsize``)."""

StoreKind = Literal["sqlite", "memory", "redis"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

_ACTIONS = ("delete", "mount", "pull", "push")
# the registry's own top-level sections: accepted so that its config.yml loads, then ignored
_REGISTRY_SECTIONS = (
    "auth",
    "catalog",
    "compatibility",
    "health",
    "http",
    "loglevel",
    "middleware",
    "policy",
    "proxy",
    "redis",
    "reporting",
    "storage",
    "tags",
    "validation",
    "version",
)
_TOP_KEYS = ("ingest", "log", "notifications", "store")
_ENDPOINT_KEYS = (
    # the registry's keys
    "backoff",
    "disabled",
    "headers",
    "ignore",
    "ignoredmediatypes",
    "name",
    "threshold",
    "timeout",
    "url",
    # rxsinks extensions
    "batch",
    "concurrency",
    "contenttype",
    "delay",
    "match",
    "orderby",
    "permanentstatuses",
    "queue",
    "redirects",
    "retry",
    "retryaftercap",
    "secret",
    "secretheaders",
    "tls",
)
# value spellings accepted (case-insensitively) -> the canonical value
_STORE_KINDS: Final[dict[str, StoreKind]] = {
    "sqlite": "sqlite",
    "memory": "memory",
    "redis": "redis",
}
_OVERFLOWS: Final[dict[str, Overflow]] = {
    # "droppoldest" is how an early draft of the format spelled it
    **dict.fromkeys(("dropoldest", "droppoldest", "drop_oldest", "drop-oldest"), "drop_oldest"),
    **dict.fromkeys(("dropnewest", "drop_newest", "drop-newest"), "drop_newest"),
    "error": "error",
}
# the registry's logrus level names map to the nearest Python level
_LOG_LEVELS: Final[dict[str, LogLevel]] = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "critical",
    "panic": "critical",
    "critical": "critical",
}
_LOG_FORMATS: Final[dict[str, LogFormat]] = {"text": "text", "json": "json", "logstash": "json"}
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- the result


def _plain(value: object) -> object:
    """Turn tuples and mappings into lists and dicts, so the result dumps as YAML or JSON."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _redact_url(url: str) -> str:
    """A URL as it may be shown: user info and query values hidden (see rxsinks._redact)."""
    return redact_url(url)


class _Redactable(Protocol):
    def redacted(self) -> dict[str, Any]: ...


def _safe_repr(config: _Redactable) -> str:
    """A repr built from the redacted view, so logging a config never leaks a secret."""
    fields = ", ".join(f"{key}={value!r}" for key, value in config.redacted().items())
    return f"{type(config).__name__}({fields})"


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Where and how the relay accepts events from the registry.

    Attributes:
        host: interface to listen on (``""`` means every interface, as in Go's ``:5056``).
        port: TCP port (0 picks a free one).
        token: when set, requests need ``Authorization: Bearer <token>``; the admin routes
            (dead letters, replay) are refused without one.
        max_body: largest request body accepted, in bytes.
        grace: seconds given to flush queues at shutdown.
        insecure: listening beyond loopback without a token is allowed (with a WARNING); by
            default it is refused (:func:`exposure_problems`).
        open_metrics: ``/metrics`` and ``/debug/vars`` are served without the token.
        header_timeout: seconds a connection has to send a complete request head (from its
            opening, or from its first byte after an idle keep-alive wait).
        body_timeout: seconds a request has to send its body, once its head arrived.
        idle_timeout: seconds an idle keep-alive connection is kept open.
        max_connections: connections open at once; past it, an idle connection (or one still
            sending its head) is closed for the newcomer, else the newcomer is.
    """

    host: str = "127.0.0.1"
    port: int = 5056
    token: str | None = None
    max_body: int = 1024 * 1024
    grace: float = 10.0
    insecure: bool = False
    open_metrics: bool = False
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 512

    @property
    def addr(self) -> str:
        """``host:port`` as configured (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return _safe_repr(self)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data, with the token hidden."""
        return {
            "host": self.host,
            "port": self.port,
            "token": None if self.token is None else REDACTED,
            "max_body": self.max_body,
            "grace": self.grace,
            "insecure": self.insecure,
            "open_metrics": self.open_metrics,
            "header_timeout": self.header_timeout,
            "body_timeout": self.body_timeout,
            "idle_timeout": self.idle_timeout,
            "max_connections": self.max_connections,
        }


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The durable store of events not yet delivered.

    Attributes:
        kind: ``"sqlite"`` (the default), ``"memory"`` (nothing survives a restart) or
            ``"redis"``.
        path: the SQLite file (``None`` unless ``kind`` is ``"sqlite"``).
        url: the Redis URL (``None`` unless ``kind`` is ``"redis"``).
        retention: seconds delivered events are kept before compaction removes them.
        max_size: a cap on the SQLite file's size in bytes (``None``: the disk is the limit);
            past it the ingest answers 503 and accepts nothing, as on a full disk. For the
            memory store: the bytes of event JSON held at once (``None``:
            :data:`MEMORY_MAX_BYTES`).
        window: events of each endpoint's backlog kept in memory (the rest stays on disk).
        max_events: memory store only: events held at once (``None``:
            :data:`MEMORY_MAX_EVENTS`; 0: no cap on the count).
    """

    kind: StoreKind = "sqlite"
    path: str | None = "rxsinks.db"
    url: str | None = None
    retention: float = 0.0
    max_size: int | None = None
    window: int = 1024
    max_events: int | None = None

    @property
    def memory_max_events(self) -> int | None:
        """The memory store's bound on events held (``None``: no bound)."""
        if self.max_events is None:
            return MEMORY_MAX_EVENTS
        return self.max_events or None

    @property
    def memory_max_bytes(self) -> int:
        """The memory store's bound on bytes of event JSON held."""
        return MEMORY_MAX_BYTES if self.max_size is None else self.max_size

    def __repr__(self) -> str:
        return _safe_repr(self)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data, with the URL's user info and query values hidden."""
        memory = self.kind == "memory"
        return {
            "kind": self.kind,
            "path": self.path,
            "url": None if self.url is None else _redact_url(self.url),
            "retention": self.retention,
            "max_size": self.memory_max_bytes if memory else self.max_size,
            "window": self.window,
            "max_events": self.memory_max_events if memory else None,
        }


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging of the relay process.

    Attributes:
        level: a :mod:`logging` level name in lower case (the registry's ``warn``, ``fatal``,
            ``panic`` and ``trace`` are mapped to their nearest Python level).
        format: ``"text"`` or ``"json"`` (the registry's ``formatter: logstash`` reads as json).
    """

    level: LogLevel = "info"
    format: LogFormat = "text"

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data (nothing here is secret)."""
        return {"level": self.level, "format": self.format}


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One webhook endpoint of the file, as the option objects an :class:`~rxsinks.Endpoint`
    takes (built, so validated, by :func:`parse_config`), with the registry's defaults applied.

    Attributes:
        name: unique name, used in metrics, logs and the store.
        url: where events are POSTed (http or https).
        disabled: the endpoint is kept in the configuration but never built (its TLS files
            are not read).
        webhook: ``headers``, ``secretheaders``, ``timeout``, ``contenttype``, ``secret``,
            ``tls``, ``redirects``, ``permanentstatuses``, ``retryaftercap``.
        retry: ``threshold`` and ``backoff`` (the registry's breaker), ``retry.maxattempts``
            and ``retry.maxage`` (tenacity stop strategies), ``retry.exponential`` (an
            :func:`~rxsinks.exponential_wait`).
        queue: ``queue.maxevents`` (0: unbounded) and ``queue.overflow``.
        batch: ``batch.maxevents`` and ``batch.maxdelay``.
        delivery: ``concurrency``, ``orderby`` and ``delay``.
        ignore: the registry's ``ignoredmediatypes``, ``ignore.mediatypes`` (merged) and
            ``ignore.actions``.
        filter: ``match`` (``None`` when not configured).
    """

    name: str
    url: str
    disabled: bool = False
    webhook: WebhookOptions = field(default_factory=WebhookOptions)
    retry: RetryWithBreaker = field(default_factory=RetryWithBreaker)
    queue: Queue[Any] = field(default_factory=Queue)
    batch: Batching = field(default_factory=Batching)
    delivery: Delivery = field(default_factory=Delivery)
    ignore: EventFilter = field(default_factory=EventFilter)
    filter: EventFilter | None = None

    def __repr__(self) -> str:
        return _safe_repr(self)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, safe to print.

        The secret and the values of Authorization and secret headers are replaced by
        ``"<redacted>"``; the URL's user info and query values by ``***``.
        """
        webhook = self.webhook
        tls = webhook.tls
        match = self.filter
        return {
            "name": self.name,
            "url": _redact_url(self.url),
            "disabled": self.disabled,
            "headers": webhook.headers.redacted(),
            "secret_headers": sorted(webhook.headers.secret_names - ALWAYS_SECRET_HEADERS),
            "timeout": webhook.timeout,
            "threshold": self.retry.threshold,
            "backoff": self.retry.backoff,
            "ignore_media_types": sorted(self.ignore.ignore_media_types),
            "ignore_actions": sorted(self.ignore.ignore_actions),
            "secret": None if webhook.secret is None else REDACTED,
            "content_type": webhook.content_type,
            "redirects": webhook.redirects,
            "permanent_statuses": sorted(webhook.permanent_statuses),
            "retry_after_cap": webhook.retry_after_cap,
            "tls": {
                "ca_file": tls.ca_file,
                "cert_file": tls.cert_file,
                "key_file": tls.key_file,
                "verify": tls.verify,
            },
            "batch": {"max_events": self.batch.max_events, "max_delay": self.batch.max_delay},
            "delivery": {
                "concurrency": self.delivery.concurrency,
                "order_by": self.delivery.order_by,
                "delay": self.delivery.delay,
            },
            "retry": _retry_view(self.retry),
            "queue": {"max_events": self.queue.max_events, "overflow": self.queue.overflow},
            "match": None
            if match is None
            else {
                "actions": _sorted(match.actions),
                "media_types": _sorted(match.media_types),
                "repositories": _sorted(match.repositories),
                "exclude_repositories": sorted(match.exclude_repositories),
            },
        }


def _sorted(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def _retry_view(retry: RetryWithBreaker) -> dict[str, Any]:
    """The file's retry keys, read back from the strategies :func:`_read_retry` made."""
    stops: list[object] = []
    if isinstance(retry.stop, stop_any):
        stops.extend(retry.stop.stops)
    elif retry.stop is not None:
        stops.append(retry.stop)
    view: dict[str, Any] = {"max_attempts": 0, "max_age": 0.0, "exponential": None}
    for stop in stops:
        if isinstance(stop, stop_after_attempt):
            view["max_attempts"] = stop.max_attempt_number
        elif isinstance(stop, stop_after_delay):
            view["max_age"] = stop.max_delay
    if isinstance(retry.wait, ExponentialWait):
        wait = retry.wait
        view["exponential"] = {"base": wait.base, "factor": wait.factor, "max": wait.maximum}
    return view


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything ``rxsinks serve`` needs.

    Attributes:
        ingest: the ingest server.
        store: the durable store.
        endpoints: every configured endpoint in file order, disabled ones included.
        include_references: the registry's ``notifications.events.includereferences``.
        log: logging settings.
        notes: things worth knowing that are not errors (ignored registry sections, no enabled
            endpoint ...), also logged at INFO level by :func:`parse_config`.
    """

    ingest: IngestConfig = field(default_factory=IngestConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    endpoints: tuple[EndpointConfig, ...] = ()
    include_references: bool = False
    log: LogConfig = field(default_factory=LogConfig)
    notes: tuple[str, ...] = ()

    @property
    def enabled_endpoints(self) -> tuple[EndpointConfig, ...]:
        """The endpoints to build: those not marked ``disabled``."""
        return tuple(endpoint for endpoint in self.endpoints if not endpoint.disabled)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data for ``rxsinks check-config``.

        Tokens, secrets and the values of Authorization and secret headers are replaced by
        ``"<redacted>"``; the user info and query values of URLs by ``***``.
        """
        return {
            "ingest": self.ingest.redacted(),
            "store": self.store.redacted(),
            "endpoints": [endpoint.redacted() for endpoint in self.endpoints],
            "include_references": self.include_references,
            "log": self.log.redacted(),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- reading


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _present(value: object, keys: Sequence[str]) -> list[str]:
    """Which of ``keys`` a mapping has (case-insensitively), sorted, in lower case."""
    if not isinstance(value, Mapping):
        return []
    return sorted({key.lower() for key in value if isinstance(key, str) and key.lower() in keys})


def _describe(value: object) -> str:
    """Name a wrong value in a message, briefly."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


class _Reader:
    """Reads values at key paths, interpolating variables and collecting every problem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[ConfigError] = []
        self.notes: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ConfigError(path, message))

    def mapping(
        self,
        path: str,
        value: object,
        known: Sequence[str],
        *,
        ignored: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Return a mapping with lower-cased keys, reporting unknown and clashing keys.

        ``ignored`` keys are accepted and left out of the result (the caller notes them).
        """
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a mapping of {', '.join(known)}, got {_describe(value)}")
            return {}
        result: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.problem(path, f"keys must be names, got {_describe(key)}")
                continue
            lowered = key.lower()
            where = _join(path, lowered)
            if lowered in spelled:
                self.problem(where, f"duplicate key (written {spelled[lowered]!r} and {key!r})")
                continue
            spelled[lowered] = key
            if lowered in known:
                result[lowered] = item
            elif lowered not in ignored:
                message = f"unknown key; expected one of {', '.join(sorted(known))}"
                close = difflib.get_close_matches(lowered, known, n=1)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
                self.problem(where, message)
        return result

    def option(
        self,
        path: str,
        keys: Mapping[str, str],
        build: Callable[_P, _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T | None:
        """Build an option object; on a wrong value report its message at the key path.

        ``keys`` maps the object's argument names (:attr:`OptionError.argument`) to the file's
        keys under ``path``; an error of another argument is reported at ``path`` itself.
        ``None`` when the object refused its values.
        """
        try:
            return build(*args, **kwargs)
        except OptionError as exc:
            key = keys.get(exc.argument)
            self.problem(path if key is None else _join(path, key), exc.reason)
        except (ValueError, TypeError) as exc:
            self.problem(path, str(exc))
        return None

    def interpolate(self, path: str, text: str) -> str | None:
        """Expand ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a dollar. ``None`` on a problem."""
        if "$" not in text:
            return text
        out: list[str] = []
        ok = True
        i, n = 0, len(text)
        while i < n:
            dollar = text.find("$", i)
            if dollar < 0:
                out.append(text[i:])
                break
            out.append(text[i:dollar])
            after = text[dollar + 1 : dollar + 2]
            if after == "$":
                out.append("$")
                i = dollar + 2
                continue
            if after != "{":
                # a lone $ stays literal, so prices and regexes need no escaping
                out.append("$")
                i = dollar + 1
                continue
            end = text.find("}", dollar + 2)
            if end < 0:
                self.problem(path, "unterminated ${...}; write $$ for a literal $")
                return None
            body = text[dollar + 2 : end]
            name, has_default, default = body.partition(":-")
            if not _VARIABLE.fullmatch(name):
                self.problem(
                    path,
                    f"invalid variable reference ${{{body}}}; use ${{VAR}} or "
                    "${VAR:-default} (write $$ for a literal $)",
                )
                ok = False
            elif has_default:
                out.append(self.environ.get(name) or default)
            elif name in self.environ:
                out.append(self.environ[name])
            else:
                self.problem(
                    path,
                    f"environment variable {name} is not set "
                    f"(give a default with ${{{name}:-default}})",
                )
                ok = False
            i = end + 1
        return "".join(out) if ok else None

    def text(self, path: str, value: object, *, required: bool = False) -> str | None:
        """A string (numbers and dates are taken as written, like Go's YAML decoder does)."""
        if value is None:
            if required:
                self.problem(path, "required")
            return None
        if isinstance(value, str):
            return self.interpolate(path, value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | datetime.date):
            return str(value)
        self.problem(path, f"expected a string, got {_describe(value)}")
        return None

    def scalar(self, path: str, value: object) -> object:
        """The value, with variables expanded when it is a string (``None`` on a problem)."""
        return self.interpolate(path, value) if isinstance(value, str) else value

    def flag(self, path: str, value: object) -> bool | None:
        value = self.scalar(path, value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0", ""):
                return False
        self.problem(path, f"expected true or false, got {_describe(value)}")
        return None

    def integer(
        self, path: str, value: object, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self.scalar(path, value)
        if value is None:
            return None
        integral_float = isinstance(value, float) and value.is_integer()
        digits = isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value) is not None
        if isinstance(value, float | str) and (integral_float or digits):
            value = int(value)
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if number is None:
            self.problem(path, f"expected an integer, got {_describe(value)}")
            return None
        if minimum is not None and number < minimum:
            self.problem(path, f"expected an integer >= {minimum}, got {number}")
            return None
        if maximum is not None and number > maximum:
            self.problem(path, f"expected an integer <= {maximum}, got {number}")
            return None
        return number

    def duration(self, path: str, value: object, *, minimum: float | None = 0.0) -> float | None:
        """A Go duration in seconds; ``minimum=None`` lets negative values through."""
        value = self.scalar(path, value)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None
        if minimum is not None and seconds < minimum:
            self.problem(path, f"expected a duration >= {minimum:g}s, got {_describe(value)}")
            return None
        return seconds

    def size(self, path: str, value: object) -> int | None:
        value = self.scalar(path, value)
        if value is None:
            return None
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None
        if size < 1:
            self.problem(path, f"expected a size of at least 1 byte, got {_describe(value)}")
            return None
        return size

    def strings(self, path: str, value: object) -> tuple[str, ...]:
        """A list of strings without duplicates, in order; a single string counts as one."""
        if value is None:
            return ()
        items = value if isinstance(value, list | tuple) else [value]
        result: list[str] = []
        for index, item in enumerate(items):
            where = f"{path}[{index}]" if items is value else path
            if isinstance(item, Mapping | list | tuple):
                self.problem(where, f"expected a string, got {_describe(item)}")
                continue
            text = self.text(where, item)
            if text is None:
                if item is None:
                    self.problem(where, "expected a string, got nothing (null)")
                continue
            if text == "":
                self.problem(where, "must not be empty")
            elif text not in result:
                result.append(text)
        return tuple(result)

    def choice(self, path: str, value: object, choices: Mapping[str, _T]) -> _T | None:
        """One of ``choices`` (keys compared case-insensitively)."""
        text = self.text(path, value)
        if text is None:
            return None
        chosen = choices.get(text.strip().lower())
        if chosen is None:
            # list the canonical values, not every accepted spelling
            names = sorted({str(value) for value in choices.values()})
            self.problem(path, f"expected one of {', '.join(names)}, got {_describe(text)}")
        return chosen

    def readable_file(self, path: str, value: object) -> str | None:
        text = self.text(path, value)
        if not text:
            return None
        expanded = os.path.expanduser(text)
        if not os.path.exists(expanded):
            self.problem(path, f"file not found: {text!r}")
        elif not os.path.isfile(expanded):
            self.problem(path, f"not a file: {text!r}")
        elif not os.access(expanded, os.R_OK):
            self.problem(path, f"file not readable: {text!r}")
        return expanded


def _split_addr(text: str) -> tuple[str, int] | str:
    """``host:port`` -> ``(host, port)``, or a message saying what is wrong."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return "an IPv6 address is written [::1]:5056"
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            return "missing :port"
        if ":" in host:
            return "an IPv6 address needs brackets, like [::1]:5056"
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        return f"the port must be a number from 0 to 65535, got {port_text!r}"
    return host, int(port_text)


def _read_ingest(r: _Reader, path: str, value: object) -> IngestConfig:
    raw = r.mapping(
        path,
        value,
        (
            "addr",
            "grace",
            "max_body",
            "token",
            "insecure",
            "open_metrics",
            "header_timeout",
            "body_timeout",
            "idle_timeout",
            "max_connections",
        ),
    )
    defaults = IngestConfig()
    host, port = defaults.host, defaults.port
    addr = r.text(_join(path, "addr"), raw.get("addr"))
    if addr is not None:
        split = _split_addr(addr.strip())
        if isinstance(split, str):
            r.problem(
                _join(path, "addr"),
                f"expected host:port like 127.0.0.1:5056, got {_describe(addr)} ({split})",
            )
        else:
            host, port = split
    token = r.text(_join(path, "token"), raw.get("token"))
    if token is not None and not token.strip():
        # an empty token would mean no token: an open relay by accident (a variable that is
        # set but empty); no token at all is written by leaving the key out
        r.problem(
            _join(path, "token"),
            "is empty (a variable set to an empty string?); set a token, or remove the key "
            "to run without one (loopback only, unless insecure: true)",
        )
    elif token is not None and (token != token.strip() or any(c < " " for c in token)):
        r.problem(
            _join(path, "token"),
            "must not start or end with white space nor hold control characters (not shown)",
        )
    max_body = r.size(_join(path, "max_body"), raw.get("max_body"))
    grace = r.duration(_join(path, "grace"), raw.get("grace"))
    insecure = r.flag(_join(path, "insecure"), raw.get("insecure"))
    open_metrics = r.flag(_join(path, "open_metrics"), raw.get("open_metrics"))
    timeouts: dict[str, float] = {}
    for key in ("header_timeout", "body_timeout", "idle_timeout"):
        seconds = r.duration(_join(path, key), raw.get(key))
        if seconds is not None and seconds <= 0:
            r.problem(_join(path, key), f"expected a duration > 0s, got {_describe(raw[key])}")
            seconds = None
        timeouts[key] = getattr(defaults, key) if seconds is None else seconds
    max_connections = r.integer(
        _join(path, "max_connections"), raw.get("max_connections"), minimum=1
    )
    if insecure and token:
        r.notes.append(f"{_join(path, 'insecure')}: has no effect with a token")
    return IngestConfig(
        host=host,
        port=port,
        token=token or None,
        max_body=defaults.max_body if max_body is None else max_body,
        grace=defaults.grace if grace is None else grace,
        insecure=bool(insecure),
        open_metrics=bool(open_metrics),
        max_connections=defaults.max_connections if max_connections is None else max_connections,
        **timeouts,
    )


def _loopback(host: str, port: int) -> bool:
    """Whether listening on ``host`` is reachable from this machine only.

    The host is resolved the way the server binds it (``AI_PASSIVE``: ``""`` is every
    interface); a name that does not resolve counts as loopback here, since binding it fails
    with its own clear error.
    """
    if host in ("", "*"):
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return True
    for info in infos:
        address = str(info[4][0]).partition("%")[0]  # an IPv6 scope (fe80::1%eth0)
        try:
            if not ipaddress.ip_address(address).is_loopback:
                return False
        except ValueError:
            return False
    return True


def exposure_problems(ingest: IngestConfig) -> list[ConfigError]:
    """What makes the ingest an open relay: it listens beyond loopback with no token.

    Anyone who can reach such an ingest can post events that every endpoint delivers and
    signs. That is refused unless the configuration says so (``ingest.insecure: true``); the
    relay then logs a WARNING at start. ``rxsinks serve`` and ``check-config`` call this; so
    does :meth:`~rxsinks._service.relay.Relay.start`.

    Returns:
        One :class:`~rxsinks.ConfigError` (path ``ingest.addr``), or none.
    """
    if ingest.token is not None or ingest.insecure or _loopback(ingest.host, ingest.port):
        return []
    where = ingest.addr if ingest.host else f"every interface ({ingest.addr})"
    return [
        ConfigError(
            "ingest.addr",
            f"listens on {where}, beyond loopback, without ingest.token: anyone who can reach "
            "it could post events for every endpoint to deliver and sign; set ingest.token "
            "(the registry sends it as a bearer token), listen on 127.0.0.1, or set "
            "ingest.insecure: true to run open anyway",
        )
    ]


def listens_beyond_loopback(ingest: IngestConfig) -> bool:
    """Whether the ingest's address is reachable from other machines."""
    return not _loopback(ingest.host, ingest.port)


def _read_store(r: _Reader, path: str, value: object) -> StoreConfig:
    raw = r.mapping(
        path, value, ("kind", "path", "url", "retention", "maxsize", "window", "maxevents")
    )
    retention = r.duration(_join(path, "retention"), raw.get("retention"))
    max_size = r.size(_join(path, "maxsize"), raw.get("maxsize"))
    window = r.integer(_join(path, "window"), raw.get("window"))
    max_events = r.integer(_join(path, "maxevents"), raw.get("maxevents"), minimum=0)
    extras: dict[str, Any] = {
        "retention": retention or 0.0,
        "max_size": max_size or None,
        "window": window if window and window > 0 else 1024,
    }
    kind = r.choice(_join(path, "kind"), raw.get("kind"), _STORE_KINDS)
    url = r.text(_join(path, "url"), raw.get("url")) or None
    file = r.text(_join(path, "path"), raw.get("path")) or None
    if url is not None:
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in ("redis", "rediss", "unix"):
            r.problem(
                _join(path, "url"),
                f"expected a Redis URL like redis://127.0.0.1:6379/0, got {_redact_url(url)!r}",
            )
        if kind is None and raw.get("kind") is None:
            kind = "redis"
        elif kind is not None and kind != "redis":
            r.problem(_join(path, "url"), f"a url means kind redis, but store.kind is {kind!r}")
    if kind is None:
        kind = "sqlite"
    if max_events is not None and kind != "memory":
        r.notes.append("store.maxevents is ignored: it bounds the memory store only")
    if kind == "redis":
        if url is None and raw.get("url") is None:
            r.problem(_join(path, "url"), "required when store.kind is redis")
        if file is not None:
            r.notes.append("store.path is ignored: the store is Redis")
        return StoreConfig(kind="redis", path=None, url=url, **extras)
    if kind == "memory":
        if file is not None:
            r.notes.append("store.path is ignored: the store is in memory")
        return StoreConfig(kind="memory", path=None, url=None, max_events=max_events, **extras)
    file = os.path.expanduser(file or "rxsinks.db")
    directory = os.path.dirname(file) or "."
    if not os.path.isdir(directory):
        r.problem(_join(path, "path"), f"directory not found: {directory!r}")
    return StoreConfig(kind="sqlite", path=file, url=None, **extras)


def _read_log(r: _Reader, path: str, value: object) -> LogConfig:
    # the registry's own log section shares this name: its extra keys are accepted and ignored
    registry_only = ("accesslog", "fields", "hooks", "reportcaller")
    raw = r.mapping(path, value, ("format", "formatter", "level"), ignored=registry_only)
    skipped = _present(value, registry_only)
    if skipped:
        r.notes.append(f"ignored registry log settings: {', '.join(skipped)}")
    level = r.choice(_join(path, "level"), raw.get("level"), _LOG_LEVELS)
    key = "format" if raw.get("format") is not None else "formatter"
    fmt = r.choice(_join(path, key), raw.get(key), _LOG_FORMATS)
    if isinstance(raw.get(key), str) and raw[key].strip().lower() == "logstash":
        r.notes.append(f"{_join(path, key)}: logstash is written as json")
    return LogConfig(level=level or "info", format=fmt or "text")


def _read_headers(r: _Reader, path: str, value: object) -> dict[str, tuple[str, ...]]:
    """The ``headers`` mapping as name -> values (what a header may be is
    :class:`~rxsinks.Headers`' to say)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        r.problem(
            path, f"expected a mapping of header names to lists of values, got {_describe(value)}"
        )
        return {}
    headers: dict[str, tuple[str, ...]] = {}
    for name, values in value.items():
        if not isinstance(name, str):
            r.problem(path, f"expected a header name, got {_describe(name)}")
            continue
        headers[name] = r.strings(f"{path}.{name}", values) if values is not None else ()
    return headers


def _check_actions(r: _Reader, path: str, actions: Sequence[str], *, strict: bool) -> None:
    for index, action in enumerate(actions):
        if action not in _ACTIONS:
            message = f"unknown action {action!r}; the registry sends {', '.join(_ACTIONS)}"
            if strict:
                r.problem(f"{path}[{index}]", message)
            else:
                r.notes.append(f"{path}[{index}]: {message} (it will never match)")


# the option objects' argument names -> the file's keys under the endpoint
_WEBHOOK_KEYS: Final = {
    "headers": "headers",
    "secret_headers": "secretheaders",
    "timeout": "timeout",
    "content_type": "contenttype",
    "secret": "secret",
    "redirects": "redirects",
    "permanent_statuses": "permanentstatuses",
    "retry_after_cap": "retryaftercap",
    "url": "url",
}
_TLS_KEYS: Final = {
    "ca_file": "cafile",
    "cert_file": "certfile",
    "key_file": "keyfile",
    "verify": "insecureskipverify",
}
_BATCH_KEYS: Final = {"max_events": "maxevents", "max_delay": "maxdelay"}
_DELIVERY_KEYS: Final = {"concurrency": "concurrency", "order_by": "orderby", "delay": "delay"}
_EXPONENTIAL_KEYS: Final = {"base": "base", "factor": "factor", "max": "max"}


def _read_endpoint(
    r: _Reader, path: str, value: object
) -> tuple[str | None, EndpointConfig | None]:
    """Read one endpoint; returns its name (if readable) and the endpoint (if valid).

    The reader turns YAML values into the option objects; the objects say what a valid value
    is, and their errors are reported at the key path they name.
    """
    if not isinstance(value, Mapping):
        r.problem(
            path, f"expected an endpoint (a mapping with name and url), got {_describe(value)}"
        )
        return None, None
    before = len(r.problems)
    raw = r.mapping(path, value, _ENDPOINT_KEYS)

    def at(*keys: str) -> str:
        return ".".join((path, *keys))

    name = r.text(at("name"), raw.get("name"), required=True)
    if name is not None and not name.strip():
        r.problem(at("name"), "must not be empty")
    url = r.text(at("url"), raw.get("url"), required=True)
    if url is not None and r.option(path, _WEBHOOK_KEYS, check_url, url) is None:
        url = None
    disabled = bool(r.flag(at("disabled"), raw.get("disabled")))

    # the registry's rule: a missing, zero or negative value means the default
    timeout = r.duration(at("timeout"), raw.get("timeout"), minimum=None)
    threshold = r.integer(at("threshold"), raw.get("threshold"))
    backoff = r.duration(at("backoff"), raw.get("backoff"), minimum=None)

    ignore = r.mapping(at("ignore"), raw.get("ignore"), ("actions", "mediatypes"))
    ignore_media = r.strings(at("ignoredmediatypes"), raw.get("ignoredmediatypes"))
    ignore_media += r.strings(at("ignore", "mediatypes"), ignore.get("mediatypes"))
    ignore_actions = r.strings(at("ignore", "actions"), ignore.get("actions"))
    _check_actions(r, at("ignore", "actions"), ignore_actions, strict=False)

    headers = r.option(
        path,
        _WEBHOOK_KEYS,
        Headers,
        _read_headers(r, at("headers"), raw.get("headers")),
        secret=r.strings(at("secretheaders"), raw.get("secretheaders")),
    )
    secret_text = r.text(at("secret"), raw.get("secret")) or None
    secret = None if secret_text is None else r.option(path, _WEBHOOK_KEYS, Secret, secret_text)
    tls = _read_tls(r, at("tls"), raw.get("tls"), disabled=disabled)
    if tls is not None and tls.configured and url is not None and url.lower().startswith("http:"):
        r.notes.append(f"{at('tls')}: has no effect on an http:// URL")
    statuses = raw.get("permanentstatuses")
    listed = statuses if isinstance(statuses, list) else [] if statuses is None else [statuses]
    permanent = [
        r.integer(f"{at('permanentstatuses')}[{index}]" if listed is statuses else path, item)
        for index, item in enumerate(listed)
    ]
    webhook_values: dict[str, Any] = {
        "timeout": registry_default(timeout, DEFAULT_TIMEOUT),
        "content_type": r.text(at("contenttype"), raw.get("contenttype")),
        "redirects": r.text(at("redirects"), raw.get("redirects")),
        "retry_after_cap": r.duration(at("retryaftercap"), raw.get("retryaftercap"), minimum=None),
    }
    webhook = None
    if headers is not None and tls is not None and (secret is not None or secret_text is None):
        webhook = r.option(
            path,
            _WEBHOOK_KEYS,
            WebhookOptions,
            headers=headers,
            secret=secret,
            tls=tls,
            permanent_statuses=frozenset(status for status in permanent if status is not None),
            **{key: value for key, value in webhook_values.items() if value is not None},
        )
    if url is not None and headers is not None:
        r.option(path, _WEBHOOK_KEYS, check_url, url, headers)  # (credentials given twice?)

    batch = r.mapping(at("batch"), raw.get("batch"), ("maxdelay", "maxevents"))
    batching = r.option(
        at("batch"),
        _BATCH_KEYS,
        Batching,
        **_given(
            max_events=r.integer(at("batch", "maxevents"), batch.get("maxevents")),
            max_delay=r.duration(at("batch", "maxdelay"), batch.get("maxdelay"), minimum=None),
        ),
    )
    delivery = r.option(
        path,
        _DELIVERY_KEYS,
        Delivery,
        **_given(
            concurrency=r.integer(at("concurrency"), raw.get("concurrency")),
            order_by=r.text(at("orderby"), raw.get("orderby")),
            delay=r.duration(at("delay"), raw.get("delay"), minimum=None),
        ),
    )
    retry = _read_retry(
        r,
        at("retry"),
        raw.get("retry"),
        threshold=int(registry_default(threshold, DEFAULT_THRESHOLD)),
        backoff=registry_default(backoff, DEFAULT_BACKOFF),
    )

    queue = r.mapping(at("queue"), raw.get("queue"), ("maxevents", "overflow"))
    queue_max_events = r.integer(at("queue", "maxevents"), queue.get("maxevents"), minimum=0)
    overflow = r.choice(at("queue", "overflow"), queue.get("overflow"), _OVERFLOWS)
    buffer: Queue[Any] | None = r.option(
        at("queue"),
        {},
        Queue,
        max_events=queue_max_events or None,  # 0: unbounded, as the registry's queue
        overflow=overflow or "drop_oldest",
    )

    match = r.mapping(
        at("match"),
        raw.get("match"),
        ("actions", "excluderepositories", "mediatypes", "repositories"),
    )
    match_actions = r.strings(at("match", "actions"), match.get("actions"))
    _check_actions(r, at("match", "actions"), match_actions, strict=True)
    allowed: dict[str, Any] = {
        # an empty allow-list means "not configured" in the file, but "nothing" to EventFilter
        "actions": match_actions or None,
        "media_types": r.strings(at("match", "mediatypes"), match.get("mediatypes")) or None,
        "repositories": r.strings(at("match", "repositories"), match.get("repositories")) or None,
        "exclude_repositories": r.strings(
            at("match", "excluderepositories"), match.get("excluderepositories")
        )
        or None,
    }
    event_filter = (
        r.option(at("match"), {}, EventFilter, **allowed) if any(allowed.values()) else None
    )
    ignore_filter = r.option(
        at("ignore"),
        {},
        EventFilter,
        ignore_media_types=tuple(dict.fromkeys(ignore_media)),
        ignore_actions=ignore_actions,
    )

    if len(r.problems) > before or name is None or url is None:
        return name, None
    assert webhook is not None and batching is not None and delivery is not None
    assert retry is not None and buffer is not None and ignore_filter is not None
    return name, EndpointConfig(
        name=name,
        url=url,
        disabled=disabled,
        webhook=webhook,
        retry=retry,
        queue=buffer,
        batch=batching,
        delivery=delivery,
        ignore=ignore_filter,
        filter=event_filter,
    )


def _given(**values: Any) -> dict[str, Any]:
    """The values the file gives (the object's defaults apply to the others)."""
    return {key: value for key, value in values.items() if value is not None}


def _read_tls(r: _Reader, path: str, value: object, *, disabled: bool) -> TLS | None:
    raw = r.mapping(path, value, ("cafile", "certfile", "insecureskipverify", "keyfile"))
    files = {key: r.text(_join(path, key), raw.get(key)) or None for key in _TLS_FILE_KEYS}
    skip_verify = r.flag(_join(path, "insecureskipverify"), raw.get("insecureskipverify"))
    if disabled:
        # a disabled endpoint is never built: its files may legitimately be missing
        return TLS()
    return r.option(
        path,
        _TLS_KEYS,
        TLS,
        ca_file=files["cafile"],
        cert_file=files["certfile"],
        key_file=files["keyfile"],
        verify=not skip_verify,
    )


_TLS_FILE_KEYS: Final = ("cafile", "certfile", "keyfile")


def _read_retry(
    r: _Reader, path: str, value: object, *, threshold: int, backoff: float
) -> RetryWithBreaker | None:
    """The registry's breaker plus the ``retry`` section as tenacity strategies: ``maxattempts``
    a ``stop_after_attempt``, ``maxage`` a ``stop_after_delay`` (both: whichever comes first; 0
    means not set), ``exponential`` an :func:`~rxsinks.exponential_wait`."""
    raw = r.mapping(path, value, ("exponential", "maxage", "maxattempts"))
    max_attempts = r.integer(_join(path, "maxattempts"), raw.get("maxattempts"), minimum=0)
    max_age = r.duration(_join(path, "maxage"), raw.get("maxage"))
    stops: list[Any] = []
    if max_attempts:
        stops.append(stop_after_attempt(max_attempts))
    if max_age:
        stops.append(stop_after_delay(max_age))
    stop = None if not stops else stops[0] if len(stops) == 1 else stop_any(*stops)
    wait = _read_exponential(r, _join(path, "exponential"), raw.get("exponential"))
    return r.option(path, {}, RetryWithBreaker, threshold, backoff, stop=stop, wait=wait)


def _read_exponential(r: _Reader, path: str, value: object) -> ExponentialWait | None:
    """go-events' ExponentialBackoffConfig; ``true`` or ``{}`` means its defaults (1s, 1s, 20s)."""
    value = r.scalar(path, value)
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", ""):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on")):
        return exponential_wait()
    raw = r.mapping(path, value, ("base", "factor", "max"))
    if not isinstance(value, Mapping):
        return None
    return r.option(
        path,
        _EXPONENTIAL_KEYS,
        exponential_wait,
        **_given(
            base=r.duration(_join(path, "base"), raw.get("base"), minimum=None),
            factor=r.duration(_join(path, "factor"), raw.get("factor"), minimum=None),
            maximum=r.duration(_join(path, "max"), raw.get("max"), minimum=None),
        ),
    )


def _read_notifications(
    r: _Reader, path: str, value: object
) -> tuple[bool, tuple[EndpointConfig, ...]]:
    raw = r.mapping(path, value, ("endpoints", "events"))
    events = r.mapping(_join(path, "events"), raw.get("events"), ("includereferences",))
    include_references = bool(
        r.flag(_join(path, "events.includereferences"), events.get("includereferences"))
    )
    listed = raw.get("endpoints")
    endpoints_path = _join(path, "endpoints")
    if listed is None:
        listed = []
    elif not isinstance(listed, list):
        r.problem(endpoints_path, f"expected a list of endpoints, got {_describe(listed)}")
        listed = []
    endpoints: list[EndpointConfig] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(listed):
        where = f"{endpoints_path}[{index}]"
        name, endpoint = _read_endpoint(r, where, item)
        if name is not None:
            if name in first_index:
                r.problem(
                    f"{where}.name",
                    f"duplicate endpoint name {name!r} (also endpoints[{first_index[name]}])",
                )
            else:
                first_index[name] = index
        if endpoint is not None:
            endpoints.append(endpoint)
    return include_references, tuple(endpoints)


def parse_config(
    data: Mapping[str, Any] | None,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] = os.environ,
) -> RelayConfig:
    """Validate configuration data (as loaded from YAML) and apply every default.

    Args:
        data: the top-level mapping; a registry configuration with a ``notifications:`` section
            works as it is. ``None`` (an empty file) means all defaults.
        source: the name to show in error messages, usually the file name.
        environ: where ``${VAR}`` references are looked up.

    Returns:
        The validated configuration.

    Raises:
        ConfigErrors: with every problem found, each naming its key path.

    Example:
        >>> config = parse_config({"notifications": {"endpoints": [
        ...     {"name": "a", "url": "http://127.0.0.1:9000/hook", "timeout": "500ms"}]}})
        >>> config.endpoints[0].timeout, config.endpoints[0].threshold
        (0.5, 10)
    """
    r = _Reader(environ)
    if data is None:
        r.notes.append("the configuration is empty: every default applies")
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigErrors(
            [
                ConfigError(
                    "",
                    "expected a mapping of sections (ingest, store, notifications, log) at the "
                    f"top level, got {_describe(data)}",
                )
            ],
            source=source,
        )
    top = r.mapping("", data, _TOP_KEYS, ignored=_REGISTRY_SECTIONS)
    skipped = _present(data, _REGISTRY_SECTIONS)
    if skipped:
        r.notes.append(
            f"ignored registry sections: {', '.join(skipped)} "
            "(rxsinks reads ingest, store, notifications and log)"
        )
    ingest = _read_ingest(r, "ingest", top.get("ingest"))
    store = _read_store(r, "store", top.get("store"))
    include_references, endpoints = _read_notifications(
        r, "notifications", top.get("notifications")
    )
    log_config = _read_log(r, "log", top.get("log"))
    if r.problems:
        raise ConfigErrors(r.problems, source=source)
    if not any(not endpoint.disabled for endpoint in endpoints):
        r.notes.append("no enabled endpoint: events are accepted but delivered nowhere")
    for note in r.notes:
        log.info("%s: %s", source, note)
    return RelayConfig(
        ingest=ingest,
        store=store,
        endpoints=endpoints,
        include_references=include_references,
        log=log_config,
        notes=tuple(r.notes),
    )


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (PyYAML keeps the last one silently).

    Within the registry's own sections, which rxsinks ignores, a duplicate is the registry's
    business (its documentation's full example has one), so they are not checked there.
    """

    _unchecked: set[int]

    def construct_document(self, node: yaml.Node) -> Any:
        self._unchecked = set()
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if (
                    isinstance(key_node, yaml.ScalarNode)
                    and isinstance(key_node.value, str)
                    and key_node.value.lower() in _REGISTRY_SECTIONS
                ):
                    self._unchecked.update(_mappings_in(value_node))
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if id(node) in self._unchecked:
            return super().construct_mapping(node, deep=deep)
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            # merge keys (<<) may repeat and may be overridden: only plain scalar keys count
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            identity = (key_node.tag, key_node.value)
            if identity in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(identity)
        return super().construct_mapping(node, deep=deep)


def _mappings_in(node: yaml.Node) -> list[int]:
    """The ids of every mapping node in ``node`` (itself included)."""
    found: list[int] = []
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, yaml.MappingNode):
            found.append(id(current))
            pending.extend(item for pair in current.value for item in pair)
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)
    return found


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] = os.environ
) -> RelayConfig:
    """Read, parse and validate a configuration file.

    Args:
        path: the YAML file (a registry ``config.yml`` works as it is).
        environ: where ``${VAR}`` references are looked up.

    Returns:
        The validated configuration.

    Raises:
        ConfigErrors: the file is missing or unreadable, is not valid YAML (the message gives
            the line and column), or has problems (each names its key path).
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("", f"{source}: file not found")], source=source) from None
    except UnicodeDecodeError as exc:
        message = f"{source}: not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigErrors([ConfigError("", message)], source=source) from None
    except OSError as exc:
        message = f"{source}: cannot read: {exc.strerror or exc}"
        raise ConfigErrors([ConfigError("", message)], source=source) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        context = f" ({exc.context})" if exc.context else ""
        message = f"{where}: invalid YAML: {exc.problem}{context}"
        raise ConfigErrors([ConfigError("", message)], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors(
            [ConfigError("", f"{source}: invalid YAML: {exc}")], source=source
        ) from None
    return parse_config(data, source=source, environ=environ)
