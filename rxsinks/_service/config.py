"""The relay's configuration: the YAML file of ``rxsinks serve``, parsed and validated.

The ``notifications:`` section is the Docker registry's own, so a registry ``config.yml`` loads
unchanged (its other sections, ``version``, ``storage``, ``http`` ..., are ignored with a note).
rxsinks adds its own sections and optional per-endpoint keys::

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
          retry: {maxattempts: 0, maxage: 0s, exponential: {base: 1s, factor: 1s, max: 20s}}
          permanentstatuses: [400, 404, 422]
          retryaftercap: 5m
          redirects: safe         # safe | none
          tls: {cafile: ca.pem, certfile: c.pem, keyfile: k.pem, insecureskipverify: false}
          queue: {maxevents: 0, overflow: dropoldest}   # dropoldest | dropnewest | error
          match: {actions: [push], repositories: ["library/*"], excluderepositories: []}
    log: {level: info, format: text}

Keys are matched case-insensitively (the registry's Go YAML decoder does the same) and reported
by their lowercase path. Durations use Go syntax (:func:`~rxsinks._service.units.parse_duration`: a
bare number means nanoseconds). String values may use ``${VAR}`` and ``${VAR:-default}``; ``$$`` is
a
literal dollar. Every problem in a file is collected before anything is raised: one
:class:`ConfigErrors` lists them all, each a :class:`~rxsinks.ConfigError` with the key path
(``notifications.endpoints[1].timeout``) and what was expected.

Relative file paths (store, TLS files) are relative to the working directory, as in the registry.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import difflib
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import yaml

from .._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2
from .._exceptions import ConfigError, ConfigErrors
from .._redact import redact_text, redact_url
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
Overflow = Literal["drop_oldest", "drop_newest", "error"]
Redirects = Literal["safe", "none"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]

_T = TypeVar("_T")

_ACTIONS = ("delete", "mount", "pull", "push")
# the same set the webhook sink always redacts
_ALWAYS_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

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
    "contenttype",
    "match",
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
_REDIRECTS: Final[dict[str, Redirects]] = {"safe": "safe", "none": "none"}
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
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(?:\s*;.*)?")


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
    """One webhook endpoint, with the registry's defaults applied.

    Instances built by :func:`parse_config` are validated; durations are seconds.

    Attributes:
        name: unique name, used in metrics, logs and the store.
        url: where events are POSTed (http or https).
        headers: extra request headers; values are appended, as the registry does.
        timeout: whole-request timeout (registry default 1 s when missing or <= 0).
        threshold: failures in a row before the breaker opens (registry default 10).
        backoff: seconds between attempts while the breaker is open (registry default 1 s).
        ignore_media_types: ``ignoredmediatypes`` and ``ignore.mediatypes`` merged, in order,
            without duplicates; events whose ``target.mediaType`` is listed are not sent.
        ignore_actions: events with these actions are not sent.
        disabled: the endpoint is kept in the configuration but never built.
        secret: Standard Webhooks signing secret (``whsec_...``), or ``None`` for no signature.
        secret_headers: header names whose values are hidden in logs, besides Authorization.
        content_type: the request's media type.
        batch_max_events: most events in one POST (1 = one event per POST, as the registry).
        batch_max_delay: seconds a partial batch may wait for more events.
        retry_max_attempts: attempts per block before it is dead-lettered (0 = never give up).
        retry_max_age: seconds after the first attempt before a block is dead-lettered (0 = never).
        retry_exponential: ``(base, factor, max)`` of go-events' exponential backoff, or ``None``
            for the registry's breaker only.
        permanent_statuses: statuses that are never retried (the block is dead-lettered at once).
        retry_after_cap: the longest ``Retry-After`` wait honoured, in seconds.
        redirects: ``"safe"`` lets the sink follow redirects, ``"none"`` never follows any.
        tls_ca_file: CA bundle to verify the receiver with, instead of the system's.
        tls_cert_file: client certificate (may hold the key too).
        tls_key_file: client certificate's private key.
        tls_verify: ``False`` when ``insecureskipverify`` is set.
        queue_max_events: most events buffered in memory (0 = unbounded, as the registry).
        queue_overflow: what a full queue does: ``"drop_oldest"``, ``"drop_newest"`` or ``"error"``.
        match_actions: when not empty, only these actions are sent.
        match_media_types: when not empty, only these target media types are sent.
        match_repositories: when not empty, only repositories matching one of these
            shell-style patterns (``library/*``) are sent.
        exclude_repositories: repositories matching one of these patterns are never sent.
    """

    name: str
    url: str
    headers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    timeout: float = 1.0
    threshold: int = 10
    backoff: float = 1.0
    ignore_media_types: tuple[str, ...] = ()
    ignore_actions: tuple[str, ...] = ()
    disabled: bool = False
    secret: str | None = None
    secret_headers: tuple[str, ...] = ()
    content_type: str = MEDIA_TYPE_V1
    batch_max_events: int = 1
    batch_max_delay: float = 0.0
    retry_max_attempts: int = 0
    retry_max_age: float = 0.0
    retry_exponential: tuple[float, float, float] | None = None
    permanent_statuses: tuple[int, ...] = ()
    retry_after_cap: float = 300.0
    redirects: Redirects = "safe"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    queue_max_events: int = 0
    queue_overflow: Overflow = "drop_oldest"
    match_actions: tuple[str, ...] = ()
    match_media_types: tuple[str, ...] = ()
    match_repositories: tuple[str, ...] = ()
    exclude_repositories: tuple[str, ...] = ()

    def is_secret_header(self, name: str) -> bool:
        """Whether a header's value must be hidden (Authorization, Cookie, or a secret header).

        Header names compare case-insensitively.
        """
        lowered = name.lower()
        return lowered in _ALWAYS_SECRET_HEADERS or any(
            lowered == secret.lower() for secret in self.secret_headers
        )

    def __repr__(self) -> str:
        return _safe_repr(self)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, safe to print.

        The secret and the values of Authorization and secret headers are replaced by
        ``"<redacted>"``; the URL's user info and query values by ``***``.
        """
        data: dict[str, Any] = {
            item.name: _plain(getattr(self, item.name)) for item in dataclasses.fields(self)
        }
        data["url"] = _redact_url(self.url)
        data["headers"] = {
            name: [REDACTED] * len(values) if self.is_secret_header(name) else list(values)
            for name, values in self.headers.items()
        }
        if self.secret is not None:
            data["secret"] = REDACTED
        if self.retry_exponential is not None:
            base, factor, maximum = self.retry_exponential
            data["retry_exponential"] = {"base": base, "factor": factor, "max": maximum}
        return data


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


def _check_url(r: _Reader, path: str, url: str) -> None:
    expected = "expected an http:// or https:// URL"
    shown = _redact_url(url)
    if any(char.isspace() for char in url):
        r.problem(path, f"{expected}, got {shown!r} (it contains white space)")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it is what validates the port
    except ValueError as exc:
        # the parser's message may quote the netloc, password included
        reason = redact_text(str(exc)) if "@" not in str(exc) else "malformed host or port"
        r.problem(path, f"{expected}, got {shown!r} ({reason})")
        return
    if parts.scheme.lower() not in ("http", "https"):
        r.problem(path, f"{expected}, got {shown!r}")
    elif not parts.hostname:
        r.problem(path, f"{expected} with a host, got {shown!r}")


def _check_secret(r: _Reader, path: str, secret: str) -> None:
    # the value itself never appears in a message: it is a secret even when malformed
    expected = "expected a Standard Webhooks secret: whsec_ followed by base64 (value not shown)"
    if not secret.startswith("whsec_"):
        r.problem(path, expected)
        return
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        r.problem(path, expected)
        return
    if not key:
        r.problem(path, expected)


def _read_headers(r: _Reader, path: str, value: object) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        r.problem(
            path, f"expected a mapping of header names to lists of values, got {_describe(value)}"
        )
        return {}
    headers: dict[str, tuple[str, ...]] = {}
    for name, values in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            r.problem(path, f"expected a header name, got {_describe(name)}")
            continue
        where = f"{path}.{name}"
        items = r.strings(where, values) if values is not None else ()
        for index, item in enumerate(items):
            if any(char in item for char in "\r\n\0"):
                r.problem(f"{where}[{index}]", "a header value must not contain line breaks")
        headers[name] = items
    return headers


def _check_actions(r: _Reader, path: str, actions: Sequence[str], *, strict: bool) -> None:
    for index, action in enumerate(actions):
        if action not in _ACTIONS:
            message = f"unknown action {action!r}; the registry sends {', '.join(_ACTIONS)}"
            if strict:
                r.problem(f"{path}[{index}]", message)
            else:
                r.notes.append(f"{path}[{index}]: {message} (it will never match)")


def _read_endpoint(
    r: _Reader, path: str, value: object
) -> tuple[str | None, EndpointConfig | None]:
    """Read one endpoint; returns its name (if readable) and the endpoint (if valid)."""
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
    if url is not None:
        _check_url(r, at("url"), url)
    disabled = bool(r.flag(at("disabled"), raw.get("disabled")))
    headers = _read_headers(r, at("headers"), raw.get("headers"))

    # the registry's rule: a missing, zero or negative value means the default
    timeout = r.duration(at("timeout"), raw.get("timeout"), minimum=None)
    threshold = r.integer(at("threshold"), raw.get("threshold"))
    backoff = r.duration(at("backoff"), raw.get("backoff"), minimum=None)

    ignore = r.mapping(at("ignore"), raw.get("ignore"), ("actions", "mediatypes"))
    ignore_media = r.strings(at("ignoredmediatypes"), raw.get("ignoredmediatypes"))
    ignore_media += r.strings(at("ignore", "mediatypes"), ignore.get("mediatypes"))
    ignore_actions = r.strings(at("ignore", "actions"), ignore.get("actions"))
    _check_actions(r, at("ignore", "actions"), ignore_actions, strict=False)

    secret = r.text(at("secret"), raw.get("secret")) or None
    if secret is not None:
        _check_secret(r, at("secret"), secret)
    secret_headers = r.strings(at("secretheaders"), raw.get("secretheaders"))
    for index, header in enumerate(secret_headers):
        if not _HEADER_NAME.fullmatch(header):
            r.problem(f"{at('secretheaders')}[{index}]", f"expected a header name, got {header!r}")

    content_type = MEDIA_TYPE_V1
    given_type = r.text(at("contenttype"), raw.get("contenttype"))
    if given_type is not None:
        shorthand = {"v1": MEDIA_TYPE_V1, "v2": MEDIA_TYPE_V2}.get(given_type.strip().lower())
        if shorthand is not None:
            content_type = shorthand
        elif _MEDIA_TYPE.fullmatch(given_type.strip()):
            content_type = given_type.strip()
        else:
            r.problem(
                at("contenttype"),
                f"expected v1, v2 or a media type like application/json, got "
                f"{_describe(given_type)}",
            )

    batch = r.mapping(at("batch"), raw.get("batch"), ("maxdelay", "maxevents"))
    batch_max_events = r.integer(at("batch", "maxevents"), batch.get("maxevents"), minimum=1)
    batch_max_delay = r.duration(at("batch", "maxdelay"), batch.get("maxdelay"))

    retry = r.mapping(at("retry"), raw.get("retry"), ("exponential", "maxage", "maxattempts"))
    max_attempts = r.integer(at("retry", "maxattempts"), retry.get("maxattempts"), minimum=0)
    max_age = r.duration(at("retry", "maxage"), retry.get("maxage"))
    exponential = _read_exponential(r, at("retry", "exponential"), retry.get("exponential"))

    statuses: list[int] = []
    raw_statuses = raw.get("permanentstatuses")
    if raw_statuses is not None:
        listed = raw_statuses if isinstance(raw_statuses, list) else [raw_statuses]
        for index, item in enumerate(listed):
            where = (
                f"{at('permanentstatuses')}[{index}]"
                if listed is raw_statuses
                else at("permanentstatuses")
            )
            status = r.integer(where, item)
            if status is None:
                continue
            if not 400 <= status <= 599:
                r.problem(
                    where,
                    f"expected an HTTP status from 400 to 599, got {status} "
                    "(2xx and 3xx are successes)",
                )
            elif status not in statuses:
                statuses.append(status)
    retry_after_cap = r.duration(at("retryaftercap"), raw.get("retryaftercap"))
    redirects = r.choice(at("redirects"), raw.get("redirects"), _REDIRECTS)

    tls = r.mapping(
        at("tls"), raw.get("tls"), ("cafile", "certfile", "insecureskipverify", "keyfile")
    )
    tls_files: dict[str, str | None] = {}
    for key in ("cafile", "certfile", "keyfile"):
        if disabled:
            # a disabled endpoint is never built: its files may legitimately be missing
            tls_files[key] = r.text(at("tls", key), tls.get(key)) or None
        else:
            tls_files[key] = r.readable_file(at("tls", key), tls.get(key))
    if tls_files["keyfile"] and not tls_files["certfile"] and tls.get("certfile") is None:
        r.problem(at("tls", "certfile"), "required when tls.keyfile is set")
    skip_verify = r.flag(at("tls", "insecureskipverify"), tls.get("insecureskipverify"))
    if tls and url is not None and url.lower().startswith("http://"):
        r.notes.append(f"{at('tls')}: has no effect on an http:// URL")

    queue = r.mapping(at("queue"), raw.get("queue"), ("maxevents", "overflow"))
    queue_max_events = r.integer(at("queue", "maxevents"), queue.get("maxevents"), minimum=0)
    overflow = r.choice(at("queue", "overflow"), queue.get("overflow"), _OVERFLOWS)

    match = r.mapping(
        at("match"),
        raw.get("match"),
        ("actions", "excluderepositories", "mediatypes", "repositories"),
    )
    match_actions = r.strings(at("match", "actions"), match.get("actions"))
    _check_actions(r, at("match", "actions"), match_actions, strict=True)
    match_media_types = r.strings(at("match", "mediatypes"), match.get("mediatypes"))
    match_repositories = r.strings(at("match", "repositories"), match.get("repositories"))
    exclude = r.strings(at("match", "excluderepositories"), match.get("excluderepositories"))

    if len(r.problems) > before or name is None or url is None:
        return name, None
    return name, EndpointConfig(
        name=name,
        url=url,
        headers=headers,
        timeout=timeout if timeout is not None and timeout > 0 else 1.0,
        threshold=threshold if threshold is not None and threshold > 0 else 10,
        backoff=backoff if backoff is not None and backoff > 0 else 1.0,
        ignore_media_types=tuple(dict.fromkeys(ignore_media)),
        ignore_actions=ignore_actions,
        disabled=disabled,
        secret=secret,
        secret_headers=secret_headers,
        content_type=content_type,
        batch_max_events=1 if batch_max_events is None else batch_max_events,
        batch_max_delay=batch_max_delay or 0.0,
        retry_max_attempts=max_attempts or 0,
        retry_max_age=max_age or 0.0,
        retry_exponential=exponential,
        permanent_statuses=tuple(statuses),
        retry_after_cap=300.0 if retry_after_cap is None else retry_after_cap,
        redirects=redirects or "safe",
        tls_ca_file=tls_files["cafile"],
        tls_cert_file=tls_files["certfile"],
        tls_key_file=tls_files["keyfile"],
        tls_verify=not skip_verify,
        queue_max_events=queue_max_events or 0,
        queue_overflow=overflow or "drop_oldest",
        match_actions=match_actions,
        match_media_types=match_media_types,
        match_repositories=match_repositories,
        exclude_repositories=exclude,
    )


def _read_exponential(r: _Reader, path: str, value: object) -> tuple[float, float, float] | None:
    """go-events' ExponentialBackoffConfig; ``true`` or ``{}`` means its defaults (1s, 1s, 20s)."""
    value = r.scalar(path, value)
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", ""):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on")):
        return (1.0, 1.0, 20.0)
    raw = r.mapping(path, value, ("base", "factor", "max"))
    if not isinstance(value, Mapping):
        return None
    base = r.duration(_join(path, "base"), raw.get("base"))
    factor = r.duration(_join(path, "factor"), raw.get("factor"))
    maximum = r.duration(_join(path, "max"), raw.get("max"))
    base = 1.0 if base is None else base
    factor = 1.0 if factor is None else factor
    maximum = 20.0 if maximum is None else maximum
    if maximum <= 0:
        r.problem(_join(path, "max"), "expected a duration > 0s")
    elif maximum < base:
        r.problem(_join(path, "max"), f"must be at least base ({base:g}s), got {maximum:g}s")
    return (base, factor, maximum)


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
    """``yaml.SafeLoader`` that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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
