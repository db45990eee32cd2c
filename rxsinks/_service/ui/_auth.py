"""Who may see the operator's page and use its API, and the defences of its one write (replay).

With ``ingest.token`` configured, a request is let in when it carries the token as
``Authorization: Bearer <token>`` (the ingest's own check, in constant time: what scripts
send) or the session cookie the login form sets. The cookie is not the token: it is
``<expiry>.<nonce>.<mac>``, the MAC an HMAC-SHA256 under a key derived from the token, so it
is checked without any state on the server, is valid on every instance sharing the token and
across restarts, and stops working when the token changes. It is ``HttpOnly`` (no script reads
it) and ``SameSite=Strict`` (no other site's page sends it).

A POST authenticated by the cookie also needs the session's CSRF token in the
``X-CSRF-Token`` header (an HMAC of the cookie, given to the page it served), a JSON body, and
no foreign ``Origin`` or ``Sec-Fetch-Site: cross-site``: a custom header and a JSON content
type are what an HTML form cannot send, and what a script of another origin cannot send
without a CORS preflight, which is never granted.

Without a token (an ingest on loopback only; beyond loopback the relay refuses to start unless
``ingest.insecure``), the page and its read-only API are open to loopback peers that address
the relay by a loopback name (``127.0.0.1``, ``[::1]``, ``localhost``): a DNS-rebinding page
of another site, whose requests carry its own host name, is refused. What the admin routes
guard (dead letters, which hold event payloads, and replay) needs a token even then, as at
``/dead-letters``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable

from aiohttp import web

__all__ = ["COOKIE", "CSRF_HEADER", "SESSION_SECONDS", "Access", "Auth"]

COOKIE = "rxsinks_session"
"""The session cookie's name."""
CSRF_HEADER = "X-CSRF-Token"
"""The header a cookie-authenticated POST carries its CSRF token in."""
SESSION_SECONDS = 12 * 3600
"""How long a login lasts."""

_KEY_LABEL = b"rxsinks operator page session v1"


class Access(enum.Enum):
    """How a request was let in."""

    BEARER = "bearer"
    """It carried the token (a script)."""
    SESSION = "session"
    """It carried a valid session cookie (a browser that logged in)."""
    OPEN = "open"
    """No token is configured and it came over loopback."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name or address."""
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host[1:]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _loopback_peer(request: web.Request) -> bool:
    remote = request.remote or ""
    try:
        return ipaddress.ip_address(remote.partition("%")[0]).is_loopback
    except ValueError:
        return False


class Auth:
    """The checks (see the module docstring).

    Args:
        token: the ingest token (``None``: none configured).
        bearer: the ingest's check of ``Authorization: Bearer <token>`` (constant time).
        clock: unix time.
    """

    def __init__(
        self,
        token: str | None,
        bearer: Callable[[web.Request], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = None if token is None else token.encode("utf-8", "surrogateescape")
        self._bearer = bearer
        self._clock = clock
        self._key = (
            None
            if self._token is None
            else hmac.new(self._token, _KEY_LABEL, hashlib.sha256).digest()
        )

    @property
    def open(self) -> bool:
        """Whether no token is configured (the page is open on loopback)."""
        return self._token is None

    def check(self, request: web.Request) -> Access | None:
        """How ``request`` is let in, or ``None`` when it is not."""
        if self._token is None:
            if _loopback_peer(request) and _loopback_host(request.host):
                return Access.OPEN
            return None
        if "Authorization" in request.headers:
            return Access.BEARER if self._bearer(request) else None
        if self.session(request) is not None:
            return Access.SESSION
        return None

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time; ``False`` without a token)."""
        if self._token is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)

    def new_session(self) -> str:
        """A fresh session cookie value, valid for :data:`SESSION_SECONDS`."""
        expires = int(self._clock()) + SESSION_SECONDS
        payload = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac(b'session.' + payload.encode('ascii'))}"

    def session(self, request: web.Request) -> str | None:
        """The request's valid, unexpired session cookie value, or ``None``."""
        value = request.cookies.get(COOKIE)
        if not value or self._key is None or len(value) > 200:
            return None
        payload, _, mac = value.rpartition(".")
        expires, _, _ = payload.partition(".")
        try:
            expiry = int(expires)
            expected = self._mac(b"session." + payload.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode("ascii")):
            return None
        return value if expiry > self._clock() else None

    def csrf(self, session: str) -> str:
        """The CSRF token bound to a session cookie value."""
        return self._mac(b"csrf." + session.encode("ascii"))

    def write_refusal(self, request: web.Request, access: Access) -> str | None:
        """Why a POST is refused as a possible cross-site request, or ``None``.

        Every POST: a JSON body, and no other site's ``Origin`` or ``Sec-Fetch-Site``; one
        authenticated by the session cookie: the session's CSRF token in ``X-CSRF-Token``.
        """
        cross = same_origin_problem(request)
        if cross is not None:
            return cross
        if request.content_type != "application/json":
            return "send a JSON body with Content-Type: application/json"
        if access is Access.SESSION:
            session = self.session(request)
            given = request.headers.get(CSRF_HEADER, "")
            if session is None or not hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), self.csrf(session).encode("ascii")
            ):
                return f"missing or wrong {CSRF_HEADER} header (reload the page)"
        return None

    def _mac(self, message: bytes) -> str:
        assert self._key is not None
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())


def same_origin_problem(request: web.Request) -> str | None:
    """Why a browser request comes from another site, or ``None`` when it does not seem to.

    Browsers send ``Origin`` with every POST and ``Sec-Fetch-Site`` with every request; scripts
    usually send neither, and are judged by their credentials alone.
    """
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "refused: a request from another site"
    origin = request.headers.get("Origin")
    if origin is not None:
        # the host and port only: a proxy terminating TLS makes the schemes differ
        _, _, where = origin.partition("://")
        if where.lower() != request.host.lower():
            return "refused: a request from another origin"
    return None
