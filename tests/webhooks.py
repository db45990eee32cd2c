"""Building webhook sinks in tests from flat keywords, the way the tests read best."""

from __future__ import annotations

import gc
from typing import Any

import aiohttp

from rxsinks._http.sink import WebhookSink
from rxsinks._options import TLS, Headers, WebhookOptions

_SINK_KEYWORDS = ("name", "on_attempt", "connections")
_TLS_KEYWORDS = {"ca_file": "ca_file", "cert_file": "cert_file", "key_file": "key_file"}


def webhook_sink(url: Any, **keywords: Any) -> WebhookSink:
    """``WebhookSink(url, WebhookOptions(...))`` from one set of keywords: the sink's own
    (``name``, ``on_attempt``, ``connections``), :class:`~rxsinks.TLS`'s (``ca_file``,
    ``cert_file``, ``key_file``, ``verify_tls``), ``secret_headers`` (into
    :class:`~rxsinks.Headers`) and :class:`~rxsinks.WebhookOptions`' (the rest)."""
    sink = {key: keywords.pop(key) for key in _SINK_KEYWORDS if key in keywords}
    tls = {_TLS_KEYWORDS[key]: keywords.pop(key) for key in list(keywords) if key in _TLS_KEYWORDS}
    if "verify_tls" in keywords:
        tls["verify"] = keywords.pop("verify_tls")
    if "secret_headers" in keywords:
        keywords["headers"] = Headers(
            keywords.pop("headers", None), secret=keywords.pop("secret_headers")
        )
    options = WebhookOptions(tls=TLS(**tls) if tls else None, **keywords)
    return WebhookSink(url, options, **sink)


def open_sessions() -> set[int]:
    """Ids of the aiohttp client sessions alive and not closed (every endpoint has its own)."""
    gc.collect()
    return {
        id(obj)
        for obj in gc.get_objects()
        if isinstance(obj, aiohttp.ClientSession) and not obj.closed
    }
