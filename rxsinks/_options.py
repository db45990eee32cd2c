"""An endpoint's options as small immutable value objects, each validated once, when it is built.

The configuration reader, :class:`~rxsinks.Endpoint` and :class:`~rxsinks.WebhookSink` take the
same objects, so every rule is written here once: a header name, the headers that are always
secret, what a Standard Webhooks secret looks like, which statuses may be made permanent, the
registry's defaults. A wrong value raises :class:`OptionError` (a :class:`ValueError`; the
:class:`TypeError` flavour for a wrong type) whose ``argument`` names the option, so a reader of
a file can put its own key path in front of the message.

    >>> options = WebhookOptions(
    ...     headers={"Authorization": "Bearer s3cr3t"},
    ...     timeout=2.0,
    ...     secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ... )
    >>> options.headers
    Headers({'Authorization': '<redacted>'})
    >>> options.secret
    Secret(<redacted>)

The retry policy and the buffer are not here: they are :func:`~rxsinks.retry_with_breaker` and
:func:`~rxsinks.queue`, the delivery stage's own option objects.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import ssl
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn
from urllib.parse import urlsplit

import tenacity

from ._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event
from ._exceptions import OptionError, OptionTypeError
from ._redact import redact_text, redact_url

__all__ = [
    "ALWAYS_SECRET_HEADERS",
    "DEFAULT_BACKOFF",
    "DEFAULT_RETRY_AFTER_CAP",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TIMEOUT",
    "MIN_KEY_BYTES",
    "SECRET_PREFIX",
    "SIGNATURE_HEADERS",
    "TLS",
    "Batching",
    "Delivery",
    "ExponentialWait",
    "Headers",
    "OptionError",
    "OptionTypeError",
    "RedirectPolicy",
    "Secret",
    "WebhookOptions",
    "check_header_name",
    "check_url",
    "exponential_wait",
    "registry_default",
]

# the registry's defaults, applied when a value is missing or <= 0 (see registry_default)
DEFAULT_TIMEOUT: Final = 1.0
"""Seconds for a whole request (the registry's default)."""
DEFAULT_THRESHOLD: Final = 10
"""Failures in a row before the breaker opens (the registry's default)."""
DEFAULT_BACKOFF: Final = 1.0
"""Seconds between attempts while the breaker is open (the registry's default)."""
DEFAULT_RETRY_AFTER_CAP: Final = 300.0
"""The longest ``Retry-After`` a receiver may ask for, in seconds."""

SECRET_PREFIX: Final = "whsec_"
"""The prefix of a Standard Webhooks secret."""
MIN_KEY_BYTES: Final = 16
"""The shortest key accepted (the spec recommends 24 to 64 bytes; shorter keys are guessable)."""

ALWAYS_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Headers whose values are credentials whatever the configuration says (lower case)."""
SIGNATURE_HEADERS: Final = ("webhook-id", "webhook-timestamp", "webhook-signature")
"""The Standard Webhooks headers a secret adds to each request."""
# set by the sink itself: a configured value would clash with the body it sends
_RESERVED_HEADERS: Final = frozenset({"content-type", "content-length", "transfer-encoding"})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token (RFC 9110)
# control characters other than tab: aiohttp refuses CR, LF and NUL (header injection), and
# the others make a request that no retry can fix
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(?:\s*;.*)?")
_CONTENT_TYPES: Final = {"v1": MEDIA_TYPE_V1, "v2": MEDIA_TYPE_V2}
_REDACTED: Final = "<redacted>"

PathArg = str | os.PathLike[str]
"""A file path argument."""

RedirectPolicy = Literal["safe", "none"]
"""How a webhook treats 3xx answers: ``"safe"`` follows 307/308, ``"none"`` follows nothing."""
_REDIRECTS: Final[tuple[RedirectPolicy, ...]] = ("safe", "none")

OrderBy = str
"""``"repository"``, ``"none"``, or a JSON pointer into the event (``"/target/digest"``)."""


def registry_default(value: float | None, default: float) -> float:
    """The registry's rule for ``timeout``, ``threshold`` and ``backoff``: a missing, zero or
    negative value means the default.

    Example:
        >>> registry_default(0, DEFAULT_TIMEOUT), registry_default(2.5, DEFAULT_TIMEOUT)
        (1.0, 2.5)
    """
    return value if value is not None and value > 0 else default


# --------------------------------------------------------------------------- checks


def _seconds(argument: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionTypeError(argument, f"expected a number of seconds, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise OptionError(argument, f"expected a finite number of seconds {bound}, got {value!r}")
    return number


def _count(argument: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionTypeError(argument, f"expected an int, got {_kind(value)}")
    if value < minimum:
        raise OptionError(argument, f"expected an int >= {minimum}, got {value}")
    return value


def _kind(value: object) -> str:
    return type(value).__name__


def _names(argument: str, value: object) -> tuple[str, ...]:
    """A collection of strings (a bare string counts as one)."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable) or isinstance(value, bytes | Mapping):
        raise OptionTypeError(argument, f"expected a collection of str, got {_kind(value)}")
    return tuple(value)


def check_header_name(argument: str, name: object) -> str:
    """A valid HTTP header name, or :class:`OptionError`."""
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise OptionError(argument, f"{name!r} is not a valid header name")
    return name


def check_url(url: object, headers: Headers | None = None) -> str:
    """An endpoint URL: ``http://`` or ``https://`` with a host; with ``headers``, not carrying
    credentials (user info) as well as an ``Authorization`` header.

    Messages show the URL redacted (:func:`~rxsinks._redact.redact_url`): user info and query
    values may be credentials.

    Raises:
        OptionTypeError: ``url`` is not a str.
        OptionError: anything else (``argument`` is ``"url"``).
    """
    if not isinstance(url, str):
        raise OptionTypeError("url", f"expected a str, got {_kind(url)}")
    expected = "expected an http:// or https:// URL"
    shown = redact_url(url)
    if any(char.isspace() for char in url):
        raise OptionError("url", f"{expected}, got {shown!r} (it contains white space)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it is what validates the port
    except ValueError as exc:
        # the parser's message may quote the netloc, password included
        reason = redact_text(str(exc)) if "@" not in str(exc) else "malformed host or port"
        raise OptionError("url", f"{expected}, got {shown!r} ({reason})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise OptionError("url", f"{expected}, got {shown!r}")
    if not parts.hostname:
        raise OptionError("url", f"{expected} with a host, got {shown!r}")
    if (
        headers is not None
        and (parts.username or parts.password)
        and headers.values("Authorization")
    ):
        raise OptionError(
            "url", "carries credentials (user info) and headers has Authorization: keep one"
        )
    return url


# --------------------------------------------------------------------------- Secret


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A Standard Webhooks signing secret: ``whsec_`` followed by the base64 of the key.

    Its ``repr`` and ``str`` never show it, and neither does any error about it. Padding after
    the base64 text is optional (some providers strip it).

    Args:
        text: ``"whsec_<base64>"``; the key must be at least :data:`MIN_KEY_BYTES` long.

    Raises:
        OptionTypeError: ``text`` is not a str.
        OptionError: the prefix is missing, the rest is not base64, or the key is too short.

    Example:
        >>> Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").key[:4]
        b'1\\xf2\\x90\\xf6'
        >>> Secret("whsec_c2hvcnQ=")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rxsinks._exceptions.OptionError: secret: the key is 5 bytes; ...
    """

    text: str
    key: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _decode_secret(self.text))

    def __repr__(self) -> str:
        return f"Secret({_REDACTED})"

    def __str__(self) -> str:
        return _REDACTED


def _decode_secret(text: object) -> bytes:
    # the secret itself stays out of every message: messages end up in logs
    if not isinstance(text, str):
        raise OptionTypeError("secret", f"expected a str like 'whsec_<base64>', got {_kind(text)}")
    if not text.startswith(SECRET_PREFIX):
        raise OptionError(
            "secret", "expected whsec_ followed by the base64 of the key (value not shown)"
        )
    encoded = text[len(SECRET_PREFIX) :].rstrip("=")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise OptionError(
            "secret", "the text after 'whsec_' is not valid base64 (value not shown)"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise OptionError(
            "secret",
            f"the key is {len(key)} bytes; Standard Webhooks keys are 24 to 64 bytes "
            f"(at least {MIN_KEY_BYTES} accepted)",
        )
    return key


# --------------------------------------------------------------------------- Headers


HeaderValues = str | Iterable[str]
"""One header value, or several (each sent as its own header line, as the registry does)."""


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Headers:
    """Extra request headers, and which of them are credentials.

    Values of ``Authorization``, ``Proxy-Authorization`` and ``Cookie``
    (:data:`ALWAYS_SECRET_HEADERS`) and of the headers named in ``secret`` are credentials: they
    are redacted in ``repr()``, logs, errors and ``check-config``, and never forwarded to
    another origin on a redirect.

    Args:
        headers: ``{"Authorization": ["Bearer x"]}`` or plain strings; every value is sent
            (appended, as the registry does), in order.
        secret: more header names whose values are credentials.

    Raises:
        OptionError: a name is not an HTTP token, a header is one the sink sets itself
            (``Content-Type``, ``Content-Length``, ``Transfer-Encoding``), or a value holds a
            control character (``argument`` is ``"headers"`` or ``"secret_headers"``).
        OptionTypeError: a value is not a str.

    Example:
        >>> Headers({"X-Api-Key": ["k1", "k2"], "X-Plain": "one"}, secret=["x-api-key"])
        Headers({'X-Api-Key': ['<redacted>', '<redacted>'], 'X-Plain': 'one'})
    """

    items: tuple[tuple[str, str], ...]
    """``(name, value)`` pairs in order, one per header line."""
    secret_names: frozenset[str]
    """Lower-case names whose values are credentials (the always-secret ones included)."""

    def __init__(
        self,
        headers: Mapping[str, HeaderValues] | None = None,
        *,
        secret: Iterable[str] = (),
    ) -> None:
        items: list[tuple[str, str]] = []
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise OptionTypeError(
                    "headers",
                    f"expected a mapping of name -> value or list of values, got {_kind(headers)}",
                )
            for name, values in headers.items():
                check_header_name("headers", name)
                if name.lower() in _RESERVED_HEADERS:
                    hint = " (use content_type)" if name.lower() == "content-type" else ""
                    raise OptionError("headers", f"{name!r} is set by the sink itself{hint}")
                if isinstance(values, str):
                    values = (values,)
                elif not isinstance(values, Iterable):
                    raise OptionTypeError(
                        "headers", f"{name!r}: expected a str or a list of str, got {_kind(values)}"
                    )
                for value in values:
                    items.append((name, _header_value(name, value)))
        names = set(ALWAYS_SECRET_HEADERS)
        names.update(
            check_header_name("secret_headers", name).lower()
            for name in _names("secret_headers", secret)
        )
        object.__setattr__(self, "items", tuple(items))
        object.__setattr__(self, "secret_names", frozenset(names))

    def is_secret(self, name: str) -> bool:
        """Whether a header's value is a credential (names compare case-insensitively)."""
        return name.lower() in self.secret_names

    def names(self) -> list[str]:
        """The header names, each once, in order."""
        return list(dict.fromkeys(name for name, _ in self.items))

    def values(self, name: str) -> list[str]:
        """Every value of one header, in order (names compare case-insensitively)."""
        lowered = name.lower()
        return [value for key, value in self.items if key.lower() == lowered]

    def redacted(self) -> dict[str, list[str]]:
        """Name -> values as they may be shown: credentials as ``"<redacted>"``."""
        return {
            name: [_REDACTED] * len(values) if self.is_secret(name) else values
            for name, values in ((name, self.values(name)) for name in self.names())
        }

    def __bool__(self) -> bool:
        return bool(self.items)

    def __repr__(self) -> str:
        shown = {
            name: values[0] if len(values) == 1 else values
            for name, values in self.redacted().items()
        }
        return f"Headers({shown!r})"


def _header_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        secret = name.lower() in ALWAYS_SECRET_HEADERS
        shown = f"{_kind(value)} (redacted, in case it is a credential)" if secret else repr(value)
        raise OptionTypeError("headers", f"{name!r}: values must be str, got {shown}")
    if _BAD_VALUE_CHARS.search(value):
        raise OptionError(
            "headers", f"{name!r}: a header value may not contain line breaks or control characters"
        )
    return value


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True, init=False)
class TLS:
    """Which servers an endpoint trusts and which client certificate it shows.

    Every file is read when the object is built, so a wrong path fails at start-up with the file
    named, not at the first delivery; the resulting :attr:`context` is built once.

    Args:
        ca_file: PEM bundle of the certificate authorities to trust. It *replaces* the system's
            trust store for this endpoint (pin a private CA).
        cert_file: PEM client certificate (mutual TLS) and its chain; may also hold the key.
        key_file: PEM private key of the client certificate, when it is not in ``cert_file``.
            Must not be encrypted.
        verify: ``False`` skips verification of the server's certificate and host name.

    Raises:
        OptionTypeError: a path is not a str or path-like, or ``verify`` is not a bool.
        OptionError: a file is missing, unreadable or not valid PEM (the message names it),
            ``key_file`` without ``cert_file``, a key that does not match the certificate,
            or ``ca_file`` with ``verify=False``.
    """

    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    verify: bool
    context: ssl.SSLContext | bool = field(compare=False, repr=False)
    """The ``ssl`` argument for aiohttp: ``True`` when nothing is configured (aiohttp's default
    verifying context), ``False`` for ``verify=False`` alone, else an :class:`ssl.SSLContext`."""

    def __init__(
        self,
        ca_file: PathArg | None = None,
        cert_file: PathArg | None = None,
        key_file: PathArg | None = None,
        verify: bool = True,
    ) -> None:
        if not isinstance(verify, bool):
            raise OptionTypeError("verify", f"expected a bool, got {_kind(verify)}")
        ca = _readable("ca_file", ca_file)
        cert = _readable("cert_file", cert_file)
        key = _readable("key_file", key_file)
        if key is not None and cert is None:
            raise OptionError("key_file", "given without cert_file: give the certificate too")
        if ca is not None and not verify:
            raise OptionError("ca_file", "has no effect without verification: drop one of them")
        object.__setattr__(self, "ca_file", ca)
        object.__setattr__(self, "cert_file", cert)
        object.__setattr__(self, "key_file", key)
        object.__setattr__(self, "verify", verify)
        object.__setattr__(self, "context", _ssl_context(ca, cert, key, verify))

    @property
    def configured(self) -> bool:
        """Whether anything differs from the defaults."""
        return self != TLS()


def _readable(argument: str, path: object) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise OptionTypeError(argument, f"expected a path (str or os.PathLike), got {_kind(path)}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise OptionError(argument, "expected a non-empty file path")
    text = os.path.expanduser(text)
    if not os.path.exists(text):
        raise OptionError(argument, f"{text!r}: no such file")
    if not os.path.isfile(text):
        raise OptionError(argument, f"{text!r}: not a regular file")
    if not os.access(text, os.R_OK):
        raise OptionError(argument, f"{text!r}: not readable (permission denied)")
    return text


def _encrypted_key() -> NoReturn:
    # without a callback OpenSSL would prompt for a pass phrase on the terminal and block
    raise ValueError("the private key is encrypted; give an unencrypted key_file")


def _ssl_context(
    ca: str | None, cert: str | None, key: str | None, verify: bool
) -> ssl.SSLContext | bool:
    if cert is None and ca is None:
        return verify
    if verify:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        except ssl.SSLError as exc:
            raise OptionError("ca_file", f"{ca!r}: not a PEM certificate bundle ({exc})") from exc
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        try:
            context.load_cert_chain(cert, key, password=_encrypted_key)
        except ssl.SSLError as exc:
            files = f"{cert!r}" + ("" if key is None else f" / key_file {key!r}")
            raise OptionError(
                "cert_file",
                f"{files}: cannot load the client certificate and key ({exc.reason or exc}); "
                "expected PEM, with the private key in cert_file or key_file, matching the "
                "certificate",
            ) from exc
        except ValueError as exc:
            raise OptionError("key_file", f"{key or cert!r}: {exc}") from exc
    return context


# --------------------------------------------------------------------------- WebhookOptions


@dataclass(frozen=True, slots=True, init=False)
class WebhookOptions:
    """How a webhook POSTs a block: everything but its URL.

    Args:
        headers: a :class:`Headers`, or a mapping that becomes one (no secret headers beyond
            the always-secret ones).
        timeout: seconds for a whole attempt: connect, send, redirects, read the answer (> 0).
        content_type: the request's ``Content-Type``: ``"v1"`` (registry 2.x's, the default),
            ``"v2"`` (registry 3's), or any media type.
        secret: a :class:`Secret` or its ``whsec_...`` text: each request then carries
            ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` over the body.
        tls: the :class:`TLS` options (by default the system's trust store).
        redirects: ``"safe"`` (follow 307/308, see :class:`~rxsinks.WebhookSink`) or ``"none"``.
        permanent_statuses: statuses (300..599) that fail with
            :class:`~rxsinks.PermanentDeliveryError`: never retried, the block is dead-lettered.
        retry_after_cap: the longest ``Retry-After`` honoured, in seconds.

    Raises:
        OptionError: a wrong value (``argument`` names it; for ``headers`` and ``tls`` the name
            inside them, e.g. ``"ca_file"``); also a header the signature sets while a secret
            is given.
        OptionTypeError: a wrong type.

    Example:
        >>> WebhookOptions(content_type="v2", permanent_statuses=[422, 400]).permanent_statuses
        frozenset({400, 422})
    """

    headers: Headers
    timeout: float
    content_type: str
    secret: Secret | None
    tls: TLS
    redirects: RedirectPolicy
    permanent_statuses: frozenset[int]
    retry_after_cap: float

    def __init__(
        self,
        *,
        headers: Headers | Mapping[str, HeaderValues] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        content_type: str = MEDIA_TYPE_V1,
        secret: Secret | str | None = None,
        tls: TLS | None = None,
        redirects: str = "safe",
        permanent_statuses: Iterable[int] = (),
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
    ) -> None:
        set_ = object.__setattr__  # (frozen: each value is set once, here)
        if headers is None or isinstance(headers, Mapping):
            headers = Headers(headers)
        if not isinstance(headers, Headers):
            raise OptionTypeError(
                "headers", f"expected rxsinks.Headers or a mapping, got {_kind(headers)}"
            )
        set_(self, "headers", headers)
        set_(self, "timeout", _seconds("timeout", timeout, positive=True))
        set_(self, "content_type", _content_type(content_type))
        if isinstance(secret, str):
            secret = Secret(secret)
        elif secret is not None and not isinstance(secret, Secret):
            raise OptionTypeError(
                "secret", f"expected a str or rxsinks.Secret, got {_kind(secret)}"
            )
        set_(self, "secret", secret)
        if secret is not None:
            clash = [name for name in headers.names() if name.lower() in SIGNATURE_HEADERS]
            if clash:
                raise OptionError("headers", f"{clash[0]!r} is set by the signature (secret)")
        if tls is None:
            tls = TLS()
        if not isinstance(tls, TLS):
            raise OptionTypeError("tls", f"expected rxsinks.TLS, got {_kind(tls)}")
        set_(self, "tls", tls)
        policy = redirects.lower() if isinstance(redirects, str) else redirects
        if policy not in _REDIRECTS:
            raise OptionError("redirects", f"expected 'safe' or 'none', got {redirects!r}")
        set_(self, "redirects", policy)
        set_(self, "permanent_statuses", _statuses(permanent_statuses))
        set_(self, "retry_after_cap", _seconds("retry_after_cap", retry_after_cap))


def _content_type(value: object) -> str:
    if not isinstance(value, str):
        raise OptionTypeError("content_type", f"expected a str, got {_kind(value)}")
    text = value.strip()
    shorthand = _CONTENT_TYPES.get(text.lower())
    if shorthand is not None:
        return shorthand
    if not _MEDIA_TYPE.fullmatch(text) or _BAD_VALUE_CHARS.search(text):
        raise OptionError(
            "content_type", f"expected v1, v2 or a media type like application/json, got {value!r}"
        )
    return text


def _statuses(value: object) -> frozenset[int]:
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        raise OptionTypeError(
            "permanent_statuses", f"expected a collection of ints, got {_kind(value)}"
        )
    result = set()
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int):
            raise OptionTypeError("permanent_statuses", f"{status!r} is not an int")
        if not 300 <= status <= 599:
            raise OptionError(
                "permanent_statuses",
                f"{status} is not a failure status (expected 300..599; 200..299 always succeed)",
            )
        result.add(status)
    return frozenset(result)


# --------------------------------------------------------------------------- Batching


@dataclass(frozen=True, slots=True)
class Batching:
    """How many events go in one POST.

    Args:
        max_events: events per block (1: the registry's one event per POST).
        max_delay: seconds a partial block may wait for more events (0: it goes at the end of
            the loop turn).

    Raises:
        OptionError, OptionTypeError: ``max_events`` < 1, a negative or infinite delay.
    """

    max_events: int = 1
    max_delay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_events", _count("max_events", self.max_events, 1))
        object.__setattr__(self, "max_delay", _seconds("max_delay", self.max_delay))


# --------------------------------------------------------------------------- Delivery


@dataclass(frozen=True, slots=True)
class Delivery:
    """How many blocks an endpoint has in flight, in which order, and how late they may go.

    Args:
        concurrency: blocks in flight at once (1: the registry's single ordered lane).
        order_by: with ``concurrency > 1``, which blocks keep their order: ``"repository"``
            (the default: events of one repository in order, other repositories in parallel;
            a block's key is its first event's repository), ``"none"`` (no order), or a JSON
            pointer into the event (RFC 6901), like ``"/target/digest"``: one block per value
            in flight (events without the value share one key).
        delay: seconds an event waits before it is delivered, counted from its ``timestamp``
            (its arrival when it has none): for receivers that pull the tag a push names, which
            the registry may not serve yet.

    Raises:
        OptionError, OptionTypeError: ``concurrency`` < 1, an ``order_by`` that is neither
            keyword nor a JSON pointer, a negative or infinite delay.

    Example:
        >>> events = (Event.new("push", target={"repository": "a", "digest": "sha256:1"}),)
        >>> Delivery(4).key()(events), Delivery(4, "/target/digest").key()(events)
        ('a', 'sha256:1')
        >>> Delivery().key() is None  # one block at a time: nothing to order by
        True
    """

    concurrency: int = 1
    order_by: OrderBy = "repository"
    delay: float = 0.0
    _pointer: tuple[str, ...] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", _count("concurrency", self.concurrency, 1))
        object.__setattr__(self, "delay", _seconds("delay", self.delay))
        order_by: object = self.order_by
        if not isinstance(order_by, str):
            raise OptionTypeError("order_by", f"expected a str, got {_kind(order_by)}")
        keyword = order_by.strip().lower()
        if keyword in ("repository", "none"):
            object.__setattr__(self, "order_by", keyword)
            object.__setattr__(self, "_pointer", None)
            return
        object.__setattr__(self, "_pointer", _json_pointer(order_by))

    def key(self) -> Callable[[Sequence[Event]], Hashable] | None:
        """The ``key`` function for :func:`~rxsinks.deliver`: ``None`` when nothing is ordered
        by key (one block in flight, or ``order_by="none"``)."""
        if self.concurrency == 1 or self.order_by == "none":
            return None
        pointer = self._pointer
        if pointer is None:
            return _repository_key
        return lambda block: _pointed(block, pointer)


def _repository_key(block: Sequence[Event]) -> Hashable:
    return block[0].target.repository if block else ""


def _json_pointer(text: str) -> tuple[str, ...]:
    if not text.startswith("/"):
        raise OptionError(
            "order_by",
            f"expected repository, none or a JSON pointer like /target/digest, got {text!r}",
        )
    tokens = text[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise OptionError(
                "order_by", f"{text!r}: in a JSON pointer '~' is written ~0 and '/' ~1"
            )
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def _pointed(block: Sequence[Event], pointer: tuple[str, ...]) -> Hashable:
    """The value at ``pointer`` in the block's first event (``None`` when it has none)."""
    if not block:
        return None
    value: Any = block[0].raw
    for token in pointer:
        if isinstance(value, Mapping):
            value = value.get(token)
        elif isinstance(value, list | tuple) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    # an object or a list: its JSON text (equal values, equal keys)
    return json.dumps(value, sort_keys=True, default=str)


# --------------------------------------------------------------------------- retry waits


class ExponentialWait(tenacity.wait.wait_base):
    """go-events' exponential backoff as a tenacity wait strategy (see :func:`exponential_wait`).

    Attributes:
        base: seconds added to every wait.
        factor: seconds multiplied by ``2**(n-1)`` after the n-th failed attempt.
        maximum: the cap.
    """

    def __init__(self, base: float, factor: float, maximum: float) -> None:
        self.base = _seconds("base", base)
        self.factor = _seconds("factor", factor)
        self.maximum = _seconds("max", maximum)
        if self.maximum < self.base:
            raise OptionError("max", f"must be at least base ({base:g}s), got {maximum:g}s")

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        try:
            grown = self.factor * float(2 ** (retry_state.attempt_number - 1))
        except OverflowError:  # (after about a thousand attempts)
            return self.maximum
        return min(self.maximum, self.base + grown)

    def __repr__(self) -> str:
        return f"exponential_wait({self.base:g}, {self.factor:g}, {self.maximum:g})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExponentialWait):
            return NotImplemented
        return (self.base, self.factor, self.maximum) == (other.base, other.factor, other.maximum)

    def __hash__(self) -> int:
        return hash((self.base, self.factor, self.maximum))


def exponential_wait(
    base: float = 1.0, factor: float = 1.0, maximum: float = 20.0
) -> ExponentialWait:
    """go-events' exponential backoff bound as a tenacity wait strategy.

    After the n-th failed attempt of a block, it waits ``base + factor * 2**(n-1)`` seconds,
    capped at ``maximum``: with ``(1, 1, 20)`` (go-events' defaults) that is 2, 3, 5, 9, 17, 20,
    20 ... seconds. go-events draws the actual wait uniformly from ``[0, bound)``; rxsinks waits
    the bound, so waits are reproducible and never shorter than go-events' longest.

    Example:
        >>> policy = retry_with_breaker(wait=exponential_wait(1, 1, 20))  # doctest: +SKIP

    Raises:
        OptionError: a negative or infinite value, or ``maximum < base``.
    """
    return ExponentialWait(base, factor, maximum)
