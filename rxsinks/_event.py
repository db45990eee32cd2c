"""The event and envelope model: registry notification events, kept exactly as received.

An :class:`Event` wraps one JSON object of a registry notification (the Docker registry's
``notifications`` schema) and never rewrites it: a relay must forward every field it does not
know, so the stored object is the source of truth and the typed properties (:attr:`Event.action`,
:attr:`Event.target` and so on) are read-only views over it. An object missing any field is
accepted: the registry itself sends ``"actor": {}``, and a relay forwards whatever it gets.

Envelopes are the HTTP bodies the registry POSTs: ``{"events": [...]}`` with the content type
:data:`MEDIA_TYPE_V1` (registry 2.x) or :data:`MEDIA_TYPE_V2` (registry 3).
:func:`encode_envelope` writes compact UTF-8 JSON; :func:`decode_envelope` reads one back and
raises :class:`~rxsinks.EnvelopeError` naming what is wrong.

What survives a decode/encode round trip unchanged: unknown fields at any depth, key order,
strings (timestamps with nanoseconds stay the strings the registry sent), integers of any size up
to Python's limit of ``sys.get_int_max_str_digits()`` decimal digits (4300 by default), ``true``,
``false`` and ``null``. What JSON decoding in Python cannot preserve byte for byte:

* an object with a duplicate key keeps only the last value;
* numbers with a fraction or an exponent become floats and re-print in Python's shortest repr
  (``1.10`` becomes ``1.1``, ``1e5`` becomes ``100000.0``); the value is the same double. Keeping
  the original digits would need the pure-Python encoder, far too slow for the delivery path, and
  the registry itself sends no floats;
* ``-0`` (an integer) re-prints as ``0``;
* whitespace and ``\\u`` escapes of printable characters are normalised (the output is compact and
  escapes only what JSON requires);
* a string holding a lone surrogate (decoded from an escape such as ``"\\ud800"``) has no UTF-8
  form, so an envelope containing one is written with every non-ASCII character escaped; a
  surrogate *pair* held as two code points (only a Python caller can build one) reads back as
  the one character it encodes;
* members of the envelope other than ``"events"`` are not kept (there are none in practice).

Numbers that have no JSON form once parsed (``NaN``, ``Infinity``, a float literal that overflows
a double such as ``1e400``) are rejected instead of forwarded as invalid JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from types import MappingProxyType
from typing import Any, ClassVar, NoReturn, final

from rxsinks._exceptions import EnvelopeError

__all__ = [
    "ENVELOPE_MEDIA_TYPES",
    "MEDIA_TYPE_V1",
    "MEDIA_TYPE_V2",
    "Actor",
    "Event",
    "Request",
    "Source",
    "Target",
    "block_time",
    "decode_envelope",
    "decode_ndjson",
    "encode_envelope",
    "encode_event",
    "sample_events",
]

MEDIA_TYPE_V1 = "application/vnd.docker.distribution.events.v1+json"
"""Content type of envelopes sent by registry 2.x."""

MEDIA_TYPE_V2 = "application/vnd.docker.distribution.events.v2+json"
"""Content type of envelopes sent by registry 3."""

ENVELOPE_MEDIA_TYPES = frozenset({MEDIA_TYPE_V1, MEDIA_TYPE_V2})
"""Every content type a registry envelope is sent with."""

_SAMPLE_RESOURCE = "data/registry-events.ndjson"

# One encoder object for every call: json.dumps() with non-default options builds a new
# JSONEncoder on each call, which is measurable on the delivery path. Stored data is a tree by
# construction (copied or freshly parsed), so the cycle check (about 10% of the time) is skipped.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
)
# Fallback for strings holding lone surrogates (from "\ud800" escapes in a received body): they
# have no UTF-8 form, so the body is re-encoded with every non-ASCII character escaped instead.
_ASCII_ENCODER = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), allow_nan=False, check_circular=False
)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))"
)


# --------------------------------------------------------------------------- JSON helpers


def _json_type(value: object) -> str:
    """Name the JSON type of a value, or its Python type when it has none."""
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return f"{type(value).__name__} (not a JSON value)"


def _render_path(parts: list[str | int]) -> str:
    text = "event"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}"
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text


class _InvalidValue(Exception):
    """A value that is not JSON, raised deep inside :func:`_checked_copy`.

    The path is built while the exception unwinds, so valid data pays nothing for it.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str | int] = []


def _checked_copy(value: object) -> Any:
    """Deep-copy a Python value into plain JSON types, rejecting what has no JSON form.

    Subclasses of ``str``/``int``/``float`` (enums, for example) are copied as the base type, so
    what is stored is exactly what the encoder will write.
    """
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        number = value if type(value) is int else int.__int__(value)
        limit = sys.get_int_max_str_digits()
        # bit_length is a cheap pre-check: 10**limit has about 3.32 * limit bits
        if limit and number.bit_length() > 3 * limit and abs(number) >= 10**limit:
            raise _InvalidValue(
                f"integer with more than {limit} digits cannot be written as JSON "
                "(sys.get_int_max_str_digits())"
            )
        return number
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _InvalidValue(f"float {value!r} has no JSON form")
        return value if type(value) is float else float.__float__(value)
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _InvalidValue(
                    f"key {key!r} ({type(key).__name__}) is not a string; "
                    "JSON object keys must be strings"
                )
            if type(key) is not str:
                key = str.__str__(key)
            try:
                copied[key] = _checked_copy(item)
            except _InvalidValue as exc:
                exc.path.insert(0, key)
                raise
        return copied
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_checked_copy(item))
            except _InvalidValue as exc:
                exc.path.insert(0, index)
                raise
        return items
    raise _InvalidValue(f"{type(value).__name__} is not a JSON value")


def _checked_object(data: object, what: str) -> dict[str, Any]:
    """Validate and deep-copy an event object; raise :class:`EnvelopeError` naming the problem."""
    if not isinstance(data, Mapping):
        raise EnvelopeError(f"{what} must be a JSON object (a mapping), got {_json_type(data)}")
    try:
        copied: dict[str, Any] = _checked_copy(data)
    except _InvalidValue as exc:
        raise EnvelopeError(f"{_render_path(exc.path)}: {exc.problem}") from None
    return copied


def _copy_json(value: Any) -> Any:
    """Deep-copy already valid JSON data (faster than ``copy.deepcopy``: no memo, no dispatch)."""
    if type(value) is dict:
        return {key: _copy_json(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy_json(item) for item in value]
    return value


def _parse_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _InvalidValue(f"number {text} is out of the range of a double")
    return number


def _reject_constant(name: str) -> NoReturn:
    raise _InvalidValue(f"{name} is not a JSON number")


def _loads(text: str) -> Any:
    """Parse JSON text, rejecting numbers that could not be written back as JSON.

    Raises:
        json.JSONDecodeError: the text is not JSON.
        _InvalidValue: a number has no JSON form once parsed.
        ValueError: an integer exceeds Python's digit limit.
    """
    return json.loads(text, parse_float=_parse_float, parse_constant=_reject_constant)


# --------------------------------------------------------------------------- typed views


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _integer(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


class _Section:
    """A read-only view over one nested object of an event (``target``, ``request``...).

    A section that is absent, or is not a JSON object, reads as empty. Get views from an
    event's properties: a view shares the event's stored object and copies nothing.
    """

    __slots__ = ("_data",)

    _data: Mapping[str, Any]
    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __init__(self, data: object) -> None:
        object.__setattr__(self, "_data", data if isinstance(data, dict) else _NO_FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def get(self, key: str, default: Any = None) -> Any:
        """Return the field ``key`` as received (objects and arrays are deep copies).

        Use it for fields without a property, for example ``target.get("platform")``.
        """
        if key not in self._data:
            return default
        return _copy_json(self._data[key])

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy of the section's fields (empty when the section is absent)."""
        return {key: _copy_json(item) for key, item in self._data.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Section) or type(other) is not type(self):
            return NotImplemented
        return self._data == other._data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self._data)!r})"


@final
class Target(_Section):
    """What an event is about: a manifest, a blob, a tag or a repository.

    String fields that are absent (or not strings) read as ``""``; ``size`` and ``length`` read
    as ``None`` when absent or not integers.
    """

    __slots__ = ()

    @property
    def media_type(self) -> str:
        """``mediaType``: the media type of the manifest or blob."""
        return _string(self._data, "mediaType")

    @property
    def digest(self) -> str:
        """``digest``: the content digest, e.g. ``sha256:...``."""
        return _string(self._data, "digest")

    @property
    def size(self) -> int | None:
        """``size``: the content size in bytes."""
        return _integer(self._data, "size")

    @property
    def length(self) -> int | None:
        """``length``: the content length in bytes (the registry repeats ``size``)."""
        return _integer(self._data, "length")

    @property
    def repository(self) -> str:
        """``repository``: the repository name, e.g. ``library/alpine``."""
        return _string(self._data, "repository")

    @property
    def tag(self) -> str:
        """``tag``: the tag, when the operation named one."""
        return _string(self._data, "tag")

    @property
    def url(self) -> str:
        """``url``: a direct URL to the content on the registry."""
        return _string(self._data, "url")

    @property
    def urls(self) -> tuple[str, ...]:
        """``urls``: the descriptor's alternate URLs (non-string entries are skipped)."""
        value = self._data.get("urls")
        if not isinstance(value, list):
            return ()
        return tuple(item for item in value if isinstance(item, str))

    @property
    def from_repository(self) -> str:
        """``fromRepository``: the source repository of a ``mount``."""
        return _string(self._data, "fromRepository")

    @property
    def references(self) -> tuple[dict[str, Any], ...]:
        """``references``: descriptors the manifest refers to (deep copies; non-objects skipped).

        The registry sends them with ``notifications.events.includereferences: true``.
        """
        value = self._data.get("references")
        if not isinstance(value, list):
            return ()
        return tuple(_copy_json(item) for item in value if isinstance(item, dict))

    @property
    def annotations(self) -> Mapping[str, str]:
        """``annotations``: the descriptor's annotations, read-only (non-string values skipped)."""
        value = self._data.get("annotations")
        if not isinstance(value, dict):
            return _NO_FIELDS
        return MappingProxyType({k: v for k, v in value.items() if isinstance(v, str)})

    @property
    def artifact_type(self) -> str:
        """``artifactType``: the artifact type of an OCI artifact manifest."""
        return _string(self._data, "artifactType")


@final
class Request(_Section):
    """The HTTP request that caused an event. Absent fields read as ``""``."""

    __slots__ = ()

    @property
    def id(self) -> str:
        """``id``: the registry's request id."""
        return _string(self._data, "id")

    @property
    def addr(self) -> str:
        """``addr``: the client's address (``host:port``)."""
        return _string(self._data, "addr")

    @property
    def host(self) -> str:
        """``host``: the ``Host`` the client asked for."""
        return _string(self._data, "host")

    @property
    def method(self) -> str:
        """``method``: the HTTP method, e.g. ``PUT``."""
        return _string(self._data, "method")

    @property
    def useragent(self) -> str:
        """``useragent``: the client's ``User-Agent``."""
        return _string(self._data, "useragent")


@final
class Actor(_Section):
    """Who caused an event (``{}`` for anonymous access). Absent fields read as ``""``."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """``name``: the authenticated user's name."""
        return _string(self._data, "name")


@final
class Source(_Section):
    """The registry node that emitted an event. Absent fields read as ``""``."""

    __slots__ = ()

    @property
    def addr(self) -> str:
        """``addr``: the registry's address (``host:port``)."""
        return _string(self._data, "addr")

    @property
    def instance_id(self) -> str:
        """``instanceID``: the id of the registry process."""
        return _string(self._data, "instanceID")


# --------------------------------------------------------------------------- the event


@final
class Event:
    """One registry notification event, wrapping its JSON object exactly as received.

    Create one with :meth:`from_dict` (or ``Event(data)``, the same), :meth:`new`, or by decoding
    with :func:`decode_envelope` / :func:`decode_ndjson`. Events are immutable: the properties are
    read-only views, :meth:`to_dict` returns a deep copy, and :attr:`raw` a read-only mapping.

    Absent fields read as ``""`` (strings), ``None`` (:attr:`time`) or an empty section
    (:attr:`target`...), and so do fields of an unexpected JSON type.

    Two events are equal when their JSON objects are equal. Events are unhashable (hashing a
    nested object on every lookup would be costly and its fields are not unique); key them by
    :attr:`id`.

    Example:
        >>> event = Event.from_dict({"id": "e1", "action": "push",
        ...                          "target": {"repository": "demo/hello", "tag": "v1"}})
        >>> event.target.repository, event.to_dict()["target"]["tag"]
        ('demo/hello', 'v1')
    """

    __slots__ = ("_data", "_text")

    _data: dict[str, Any]
    # the compact JSON text of _data when already known (read back from a store): encoding
    # a block then copies it instead of encoding the event again
    _text: str | None
    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __init__(self, data: Mapping[str, Any]) -> None:
        """Validate and deep-copy ``data``; see :meth:`from_dict`."""
        object.__setattr__(self, "_data", _checked_object(data, "an event"))
        object.__setattr__(self, "_text", None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Build an event from a JSON object, keeping every field (known or not) and its order.

        ``data`` is deep-copied, so later changes to it do not reach the event. No field is
        required.

        Raises:
            EnvelopeError: ``data`` is not a mapping, or holds something with no JSON form (a
                non-string key, a NaN, a set...); the message names the path, e.g.
                ``event.target.size: float nan has no JSON form``.
        """
        return cls(data)

    @classmethod
    def _wrap(cls, data: dict[str, Any], text: str | None = None) -> Event:
        # decoded JSON is already valid and owned by nobody else: skip the checked copy.
        # ``text``, when given, must be encode_event()'s output for ``data``.
        event = object.__new__(cls)
        _DATA_SLOT.__set__(event, data)
        _TEXT_SLOT.__set__(event, text)
        return event

    @classmethod
    def _from_text(cls, text: str) -> Event:
        """An event from the JSON text encode_event() wrote (a store's copy)."""
        return cls._wrap(json.loads(text), text)

    @classmethod
    def new(
        cls,
        action: str,
        *,
        target: Mapping[str, Any] | None = None,
        request: Mapping[str, Any] | None = None,
        actor: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> Event:
        """Create a new event with a fresh uuid4 ``id`` and the current UTC ``timestamp``.

        The fields come in the registry's order (``id``, ``timestamp``, ``action``, ``target``,
        ``request``, ``actor``, ``source``, then ``extra`` in call order); absent sections are
        ``{}``, as the registry sends them. The timestamp always has 9 fractional digits, e.g.
        ``2026-11-29T17:44:07.009526683Z`` (Go trims trailing zeros; both parse the same).
        ``extra`` may override ``id`` or ``timestamp``, which keep their place.

        Raises:
            TypeError: ``action`` is not a string.
            EnvelopeError: a value has no JSON form.
        """
        if not isinstance(action, str):
            raise TypeError(f"action must be a str, got {type(action).__name__}")
        data: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "timestamp": _now_timestamp(),
            "action": action,
            "target": {} if target is None else target,
            "request": {} if request is None else request,
            "actor": {} if actor is None else actor,
            "source": {} if source is None else source,
        }
        data.update(extra)
        return cls(data)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Event is immutable; build a new one with Event.from_dict")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Event is immutable; build a new one with Event.from_dict")

    def __reduce__(self) -> tuple[type[Event], tuple[dict[str, Any]]]:
        # the frozen __setattr__ defeats the default slots protocol of pickle and copy
        return (Event, (self._data,))

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy of the JSON object, equal to what was received."""
        return {key: _copy_json(item) for key, item in self._data.items()}

    @property
    def raw(self) -> Mapping[str, Any]:
        """A read-only view of the stored object, for encoding without a copy.

        Only the top level is protected: do not mutate the nested objects it exposes.
        """
        return MappingProxyType(self._data)

    @property
    def id(self) -> str:
        """``id``: the event's unique id (``""`` when absent)."""
        return _string(self._data, "id")

    @property
    def timestamp(self) -> str:
        """``timestamp``: the time string exactly as sent (``""`` when absent)."""
        return _string(self._data, "timestamp")

    @property
    def time(self) -> datetime | None:
        """The timestamp as an aware UTC datetime, or ``None`` when absent or not RFC 3339.

        Nanoseconds are truncated to microseconds (datetime's resolution).
        """
        return _parse_timestamp(_string(self._data, "timestamp"))

    @property
    def action(self) -> str:
        """``action``: ``push``, ``pull``, ``mount`` or ``delete`` (``""`` when absent)."""
        # inlined _string: every filter reads it, once per event and endpoint
        value = self._data.get("action")
        return value if type(value) is str else ""

    @property
    def target(self) -> Target:
        """``target``: what the event is about."""
        return Target(self._data.get("target"))

    @property
    def request(self) -> Request:
        """``request``: the HTTP request that caused the event."""
        return Request(self._data.get("request"))

    @property
    def actor(self) -> Actor:
        """``actor``: who caused the event."""
        return Actor(self._data.get("actor"))

    @property
    def source(self) -> Source:
        """``source``: the registry node that emitted the event."""
        return Source(self._data.get("source"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._data == other._data

    def __repr__(self) -> str:
        target = self.target
        text = f"Event(id={self.id!r}, action={self.action!r}, repository={target.repository!r}"
        tag = target.tag
        return f"{text}, tag={tag!r})" if tag else f"{text})"


_DATA_SLOT = Event.__dict__["_data"]
_TEXT_SLOT = Event.__dict__["_text"]


def _now_timestamp() -> str:
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def block_time(block: Event | Sequence[Event]) -> float | None:
    """When the newest event of a block happened, in seconds since the epoch (``None`` when no
    event has a readable ``timestamp``): the time a delivery ``delay`` counts from.

    Example:
        >>> event = Event.from_dict({"id": "a", "timestamp": "2026-11-29T17:25:25.5Z"})
        >>> block_time((event,))
        1795973125.5
    """
    events = (block,) if isinstance(block, Event) else block
    newest: float | None = None
    for event in events:
        when = event.time
        if when is not None:
            stamp = when.timestamp()
            newest = stamp if newest is None or stamp > newest else newest
    return newest


def _parse_timestamp(text: str) -> datetime | None:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        zone = UTC
        if sign is not None:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            zone = timezone(-offset if sign == "-" else offset)
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, zone
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        # out-of-range fields (month 13, a leap second, an offset of 24h...) or a UTC
        # conversion that leaves datetime's range
        return None


# --------------------------------------------------------------------------- envelopes


def encode_envelope(events: Iterable[Event]) -> bytes:
    """Encode events as a registry envelope: compact UTF-8 JSON ``{"events":[...]}``.

    Each event is written exactly as stored (see the module docstring for what JSON itself
    normalises). An empty block encodes as ``{"events":[]}`` (the Go registry writes ``{}``).

    Raises:
        TypeError: an item is not an :class:`Event`.
    """
    block = events if isinstance(events, list | tuple) else list(events)
    try:
        texts = [event._text for event in block]
        raws = [event._data for event in block]
    except AttributeError:
        for index, item in enumerate(block):
            if not isinstance(item, Event):
                raise TypeError(
                    f"events[{index}] is a {type(item).__name__}, not an Event "
                    "(wrap dicts with Event.from_dict)"
                ) from None
        raise
    if None not in texts:
        # read back from a store: the text it holds is what the encoder would write
        with contextlib.suppress(UnicodeEncodeError):  # lone surrogates: the fallback below
            return f'{{"events":[{",".join(texts)}]}}'.encode()  # type: ignore[arg-type]
    envelope = {"events": raws}
    try:
        return _ENCODER.encode(envelope).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(envelope).encode("ascii")


def encode_event(event: Event) -> str:
    """One event's JSON text, exactly as stored (compact; for logs and durable stores).

    The text is kept on the event: a store encodes an event once, and delivering it later
    reuses the text (see :func:`encode_envelope`).
    """
    text = event._text
    if text is None:
        text = _ENCODER.encode(event._data)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # lone surrogates ("\ud800" escapes in a received body) have no UTF-8 form: a
                # store could not write the text, so they stay escaped
                text = _ASCII_ENCODER.encode(event._data)
        _TEXT_SLOT.__set__(event, text)
    return text


def decode_envelope(body: bytes | bytearray | memoryview | str) -> list[Event]:
    """Decode a registry envelope into events, keeping every field of every event.

    A leading UTF-8 byte order mark is ignored (RFC 8259 allows it). Envelope members other than
    ``"events"`` are ignored.

    Raises:
        EnvelopeError: the body is not valid UTF-8, not valid JSON (the message gives line and
            column), not an object, has no ``"events"`` member, ``"events"`` is not an array, or
            ``events[i]`` is not an object (the message names ``i`` and the JSON type found).
        TypeError: ``body`` is neither bytes nor str.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(
                f"envelope is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
    elif isinstance(body, str):
        text = body
    else:
        raise TypeError(f"decode_envelope() expects bytes or str, got {type(body).__name__}")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise EnvelopeError('envelope is empty: expected a JSON object with an "events" array')
    try:
        envelope = _loads(text)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            f"envelope is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except _InvalidValue as exc:
        raise EnvelopeError(f"envelope is not valid JSON: {exc.problem}") from None
    except ValueError as exc:  # an integer over sys.get_int_max_str_digits()
        raise EnvelopeError(f"envelope cannot be decoded: {exc}") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError(
            f'envelope must be a JSON object with an "events" array, got {_json_type(envelope)}'
        )
    if "events" not in envelope:
        members = ", ".join(json.dumps(key) for key in list(envelope)[:5]) or "none"
        raise EnvelopeError(f'envelope has no "events" member (members: {members})')
    items = envelope["events"]
    if not isinstance(items, list):
        raise EnvelopeError(f'envelope "events" must be an array, got {_json_type(items)}')
    wrap = Event._wrap
    events: list[Event] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise EnvelopeError(
                f"envelope events[{index}] must be an object, got {_json_type(item)}"
            )
        events.append(wrap(item))
    return events


def decode_ndjson(text: str) -> list[Event]:
    """Decode newline-delimited JSON: one event object per line; blank lines are skipped.

    Lines are split on ``\\n`` only (a trailing ``\\r`` is dropped), because U+2028 and other
    Unicode line separators may appear unescaped inside JSON strings.

    Raises:
        EnvelopeError: a line is not valid JSON or not an object; the message names the line
            number (counting from 1, blank lines included).
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"decode_ndjson() expects str, got {type(text).__name__}")
    events: list[Event] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = _loads(line)
        except json.JSONDecodeError as exc:
            raise EnvelopeError(
                f"line {number}: not valid JSON: {exc.msg} at column {exc.colno}"
            ) from None
        except _InvalidValue as exc:
            raise EnvelopeError(f"line {number}: not valid JSON: {exc.problem}") from None
        except ValueError as exc:
            raise EnvelopeError(f"line {number}: cannot be decoded: {exc}") from None
        if not isinstance(item, dict):
            raise EnvelopeError(f"line {number}: expected a JSON object, got {_json_type(item)}")
        events.append(Event._wrap(item))
    return events


def sample_events() -> list[Event]:
    """Load the packaged capture of 16 events from a real registry (Docker Distribution 2.8.2).

    Two images pushed with skopeo, pulled and mounted into a second repository, and one manifest
    deleted: actions ``push``, ``pull``, ``mount`` and ``delete``, in the order sent, with
    ``includereferences: true``. Each call returns new events.
    """
    resource = resources.files("rxsinks").joinpath(_SAMPLE_RESOURCE)
    return decode_ndjson(resource.read_text(encoding="utf-8"))
