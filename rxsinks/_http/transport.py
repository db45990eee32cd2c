"""Sending one request: a webhook's own connection pool, one POST, at most so much of its answer.

This is the only module of rxsinks that imports aiohttp's client. A :class:`Transport` belongs
to one webhook endpoint and owns its :class:`aiohttp.ClientSession` and connector: keep-alive
connections reused from one POST to the next, at most ``connections`` of them open, never shared
with another endpoint. So a slow receiver holds only its own endpoint's connections: another
endpoint never waits in a shared pool, and time spent waiting for a pooled connection (there is
none while the endpoint's requests in flight stay within its pool) never eats into another
endpoint's request timeout.

What it does not do: follow redirects (:mod:`rxsinks._http.redirects`) or decide what an answer
means (:class:`~rxsinks.WebhookSink`). :meth:`Transport.post` returns the :class:`Answer`, or
the :class:`NoAnswer` that says why none came.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from rxsinks._metrics import status_phrase
from rxsinks._redact import redact_text

__all__ = ["MAX_RESPONSE_BYTES", "Answer", "NoAnswer", "Transport"]

# The most bytes read from one response body: a receiver answers with a status, not a download.
# Past it the connection is closed instead of drained (a pool connection is cheaper than reading
# a hostile or runaway body to its end).
MAX_RESPONSE_BYTES: Final = 1024 * 1024
# The start of a failed response's body goes into the error's notes, to show why it failed.
_BODY_NOTE_BYTES: Final = 200
_READ_CHUNK: Final = 65536

try:
    _USER_AGENT = f"rxsinks/{importlib.metadata.version('rxsinks')}"
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _USER_AGENT = "rxsinks"


@dataclass(frozen=True, slots=True)
class Answer:
    """The response to one request (one hop: redirects are followed by the caller)."""

    status: int
    reason: str
    url: URL
    location: str | None
    retry_after: str | None
    body: bytes
    """The start of the body (only of a failure: a success's body is read, not kept)."""
    problem: str | None = None
    """Why a 3xx answer is a failure (a redirect that was not followed); set by the caller."""


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A request that got no response: DNS, connect, TLS, reset, timeout.

    Attributes:
        url: what was requested.
        cause: in words a person can act on (URLs in it redacted).
        error: aiohttp's exception (or the ``TimeoutError``).
        unbuildable: the request itself could not be built (a value aiohttp refuses): the same
            block fails the same way on every attempt.
    """

    url: URL
    cause: str
    error: BaseException
    unbuildable: bool


class Transport:
    """One endpoint's HTTP client: its own pool of keep-alive connections.

    The session is made on first use, on the running event loop, and serves that loop only.

    Args:
        ssl: the ``ssl`` argument for https requests (see :attr:`rxsinks.TLS.context`).
        connections: connections open at most (``None``: no limit); size it to the requests
            the endpoint has in flight at once, so none waits for a connection.
    """

    def __init__(self, ssl: ssl.SSLContext | bool = True, connections: int | None = None) -> None:
        if connections is not None and (
            isinstance(connections, bool) or not isinstance(connections, int) or connections < 1
        ):
            raise ValueError(f"connections must be an int >= 1 or None, got {connections!r}")
        self._ssl = ssl
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections(self) -> int | None:
        """Connections open at most (``None``: no limit)."""
        return self._connections

    @property
    def open(self) -> bool:
        """Whether the session exists and is not closed."""
        return self._session is not None and not self._session.closed

    def _client(self, name: str) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None:
            self._loop = loop
            connector = aiohttp.TCPConnector(
                limit=self._connections or 0,  # 0: aiohttp's "no limit"
                # (an idle connection stays for aiohttp's keep-alive time, 15 s: a receiver that
                # closes its idle ones sooner is seen closing them, and they are not reused)
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # no cookie travels from one request to the next: a receiver's Set-Cookie is not
                # a credential the endpoint was given
                cookie_jar=aiohttp.DummyCookieJar(),
                # no compressed answers: a small gzip body can inflate to gigabytes, and a
                # receiver has nothing to say that needs compressing (what a receiver sends
                # compressed anyway is read as it came, and bounded: MAX_RESPONSE_BYTES)
                headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
                auto_decompress=False,
                raise_for_status=False,
                # the environment's proxies are not for webhooks: an endpoint is reached directly
                trust_env=False,
            )
        elif loop is not self._loop:
            raise RuntimeError(f"webhook {name}: used on two event loops; create one sink per loop")
        return self._session

    async def post(
        self,
        name: str,
        target: URL,
        body: bytes,
        headers: CIMultiDict[str] | Mapping[str, str],
        remaining: float,
        timeout: float,
    ) -> Answer | NoAnswer:
        """POST once; read the body up to :data:`MAX_RESPONSE_BYTES`, keep its start only when
        the status is not 2xx.

        Args:
            name: the endpoint's name (for the two-loops error).
            target: the URL.
            body: the request body.
            headers: the request headers.
            remaining: seconds left for this request (it fails at once when <= 0).
            timeout: the endpoint's whole timeout, for the message of a timeout.
        """
        session = self._client(name)
        try:
            if remaining <= 0:
                raise TimeoutError
            async with session.post(
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                ssl=self._ssl if target.scheme == "https" else True,
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as response:
                keep = 0 if 200 <= response.status < 300 else _BODY_NOTE_BYTES
                start = await _read_bounded(response, keep)
                return Answer(
                    status=response.status,
                    reason=status_phrase(response.status) or response.reason or "",
                    url=target,
                    location=response.headers.get("Location"),
                    retry_after=response.headers.get("Retry-After"),
                    body=start,
                )
        except Exception as exc:
            return NoAnswer(target, describe_error(exc, timeout), exc, _unbuildable(exc))

    async def aclose(self) -> None:
        """Close the pool (its connections). Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_bounded(response: aiohttp.ClientResponse, keep: int) -> bytes:
    """Read the body (the connection returns to the pool only then), but never more of it than
    :data:`MAX_RESPONSE_BYTES`; return its first ``keep`` bytes."""
    length = response.content_length
    if length is not None and length <= _READ_CHUNK:
        start = (await response.read())[:keep]  # small (the usual): at once
    else:
        start = b""
        read = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            if len(start) < keep:
                start += chunk[: keep - len(start)]
            read += len(chunk)
            if read >= MAX_RESPONSE_BYTES:
                response.close()  # the rest is not read: this connection goes
                break
    if keep and response.headers.get("Content-Encoding", "identity") != "identity":
        # compressed although identity was asked for: the bytes say nothing legible
        return b""
    return start


def _unbuildable(exc: BaseException) -> bool:
    """Whether aiohttp refused to build the request itself (a value it cannot encode or that
    fails its header checks), as opposed to a network failure."""
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return False
    return isinstance(exc, ValueError | TypeError)  # UnicodeEncodeError is a ValueError


def describe_error(exc: BaseException, timeout: float) -> str:
    """Name the cause of a request that got no response, in words a person can act on.

    Texts taken from an exception go through :func:`~rxsinks._redact.redact_text`: aiohttp
    quotes URLs in some of its messages.
    """
    return redact_text(_cause(exc, timeout))


def _cause(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {exc.host!r}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    if isinstance(exc, TimeoutError):
        return f"no response within the {timeout:g} s timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer was cut short: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"connection error ({type(exc).__name__}): {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _os_reason(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    # asyncio words a refused connect "Connect call failed (addr)"; the errno says why
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return str(error)
