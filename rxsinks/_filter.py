"""Event filters: the registry's ignore filter, allow-lists, repository globs, and their operators.

:class:`EventFilter` is one immutable predicate that answers "deliver this event?" for an
endpoint. It is built once (every collection frozen, every repository pattern compiled) and is
then called per event, so its ``__call__`` does only set look-ups and at most two regex matches.

An event is delivered when **all** of these hold (each part that is not configured is skipped):

1. the registry's ignore filter (v3): its ``action`` is not in ``ignore_actions`` **and** its
   ``target.mediaType`` is not in ``ignore_media_types``. Either list works without the other
   (the registry disabled action-only filters when the media-type list was empty, #4729);
2. allow-lists: its ``action`` is in ``actions`` and its media type is in ``media_types``;
3. its ``target.repository`` matches one of ``repositories`` and none of
   ``exclude_repositories``;
4. ``predicate(event)`` is true.

Every comparison is exact and case-sensitive, as in the registry.

Repository patterns are globs over ``/``-separated repository names (``fnmatch.fnmatchcase``
extended with a path-aware ``**``):

=============  ==============================================================================
``*``          any run of characters inside one path segment (never ``/``)
``?``          one character other than ``/``
``[seq]``      one character in *seq* (ranges like ``a-z`` allowed); ``[!seq]``: one not in
               *seq* and not ``/``
``**``         a whole segment only: ``team/**`` matches everything under ``team/`` (not
               ``team`` itself), ``**/base`` matches ``base`` and ``x/y/base``,
               ``a/**/b`` matches ``a/b`` and ``a/x/y/b``, ``**`` alone matches everything
=============  ==============================================================================

A pattern with an empty segment (``"a//b"``, ``"a/"``), an unterminated ``[``, or ``**`` glued
to other characters (``"team**"``) is refused when the filter is built.

The operators :func:`ignore`, :func:`match` and :func:`filter_events` put a filter in a
pipeline. They behave as ``reactivex.operators.filter`` with the filter as predicate: completion
and errors pass through unchanged (the registry's filter swallowed ``Close``, and filtered
endpoints were never flushed on shutdown), and dropped events are never seen by the stages below:
a delivery stage after the filter neither buffers nor counts them.

A raising ``predicate`` does not end the stream: one malformed event must not stop an endpoint's
deliveries for good. The exception is logged at ``ERROR`` on the ``rxsinks.filter`` logger, with
the event's id and the traceback, and that event is dropped.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reactivex import Observable, abc

from ._deliver import direct_on_next
from ._event import Event

__all__ = ["EventFilter", "filter_events", "ignore", "match"]

_log = logging.getLogger("rxsinks.filter")

EventPredicate = Callable[[Event], bool]
"""A user test on one event: true to deliver it."""

_GLOB_CHARS = frozenset("*?[")


def _strings(value: Iterable[str] | None, name: str) -> frozenset[str] | None:
    """Freeze a collection of strings, naming ``name`` in the error when it is not one."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        # the classic YAML slip: `actions: pull` instead of `actions: [pull]`
        raise TypeError(
            f"{name} must be a collection of str, not a single {type(value).__name__} "
            f"({value!r}); write [{value!r}]"
        )
    if isinstance(value, Mapping):
        raise TypeError(f"{name} must be a collection of str, not a mapping ({value!r})")
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a collection of str, not {type(value).__name__} ({value!r})"
        ) from None
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name} must contain only str, found {type(item).__name__} ({item!r})")
    return frozenset(items)


def _allow_list(value: Iterable[str] | None, name: str) -> frozenset[str] | None:
    """Freeze an allow-list; an empty one would drop every event, so it is refused."""
    allowed = _strings(value, name)
    if allowed is not None and not allowed:
        raise ValueError(f"{name} is empty, so no event could pass; pass None for no restriction")
    return allowed


def _translate_segment(segment: str, pattern: str, name: str) -> str:
    """Translate one path segment of a glob (without ``**``) to a regular expression."""
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            j = i
            negate = j < n and segment[j] == "!"
            if negate:
                j += 1
            if j < n and segment[j] == "]":
                j += 1  # a "]" first in the class is a member, as in fnmatch
            end = segment.find("]", j)
            if end < 0:
                raise ValueError(f"{name}: pattern {pattern!r} has an unterminated '['")
            body = segment[i + 1 if negate else i : end]
            # escape everything but "-" so ranges keep working and "^", "\\", "&&" stay literal
            members = "".join(c if c == "-" else re.escape(c) for c in body)
            out.append(f"[^{members}/]" if negate else f"[{members}]")
            i = end + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _translate(pattern: str, name: str) -> str:
    """Translate a repository glob to a regular expression (see the module docstring)."""
    if not pattern:
        raise ValueError(f"{name}: empty pattern")
    segments = pattern.split("/")
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == last:
                # alone it matches every name; after "prefix/" it needs at least one character
                out.append(".*" if index == 0 else ".+")
            else:
                out.append("(?:.*/)?")  # zero or more whole segments, with their "/"
            continue
        if not segment:
            raise ValueError(f"{name}: pattern {pattern!r} has an empty path segment")
        if "**" in segment:
            raise ValueError(
                f"{name}: pattern {pattern!r}: '**' must be a whole path segment "
                f"(like 'team/**'); use '*' inside a segment"
            )
        out.append(_translate_segment(segment, pattern, name))
        if index != last:
            out.append("/")
    regex = "".join(out)
    try:
        re.compile(regex)
    except re.error as exc:  # e.g. a reversed range "[z-a]"
        raise ValueError(f"{name}: invalid pattern {pattern!r}: {exc}") from None
    return regex


class _Globs:
    """A set of repository globs compiled once: literal names in a set, the rest in one regex."""

    __slots__ = ("_fullmatch", "_literals", "patterns")

    def __init__(self, patterns: frozenset[str], name: str) -> None:
        self.patterns = patterns
        self._literals = frozenset(p for p in patterns if _GLOB_CHARS.isdisjoint(p))
        wild = sorted(patterns - self._literals)
        # literals are validated too, so "a//b" is refused whatever its characters
        for pattern in self._literals:
            _translate(pattern, name)
        self._fullmatch: Callable[[str], re.Match[str] | None] | None = None
        if wild:
            regex = "|".join(f"(?:{_translate(p, name)})" for p in wild)
            self._fullmatch = re.compile(regex, re.DOTALL).fullmatch

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches at least one pattern."""
        if name in self._literals:
            return True
        fullmatch = self._fullmatch
        return fullmatch is not None and fullmatch(name) is not None


def _globs(value: Iterable[str] | None, name: str, *, allow: bool) -> _Globs | None:
    patterns = _allow_list(value, name) if allow else _strings(value, name)
    return _Globs(patterns, name) if patterns else None


def _show(values: frozenset[str]) -> str:
    # sorted, so a repr is stable across runs whatever the hash seed
    return "{" + ", ".join(repr(v) for v in sorted(values)) + "}"


class EventFilter:
    """An immutable, reusable predicate deciding which events an endpoint receives.

    Calling it returns ``True`` to deliver the event. See the module docstring for the exact
    rules and the pattern syntax. Instances are immutable, hashable, safe to share between
    endpoints and threads, and compare equal when built from the same parts (the predicate
    is compared by identity).

    Args:
        ignore_media_types: drop events whose ``target.mediaType`` is one of these.
        ignore_actions: drop events whose ``action`` is one of these.
        actions: when given, deliver only events whose ``action`` is one of these.
        media_types: when given, deliver only events whose ``target.mediaType`` is one of these.
        repositories: when given, deliver only events whose ``target.repository`` matches one
            of these globs.
        exclude_repositories: drop events whose ``target.repository`` matches one of these
            globs.
        predicate: when given, deliver only events for which it returns true. If it raises,
            the error is logged on ``rxsinks.filter`` and the event is dropped.

    ``None`` means "not configured" for every argument. An allow-list that is given must not be
    empty (it would drop everything).

    Raises:
        TypeError: an argument is a bare string (write ``["pull"]``, not ``"pull"``), holds
            something other than strings, or ``predicate`` is not callable.
        ValueError: an allow-list is empty, or a repository pattern is invalid.

    Example:
        >>> keep = EventFilter(ignore_actions={"pull"}, repositories=["library/*"])
        >>> keep(Event.new("push", target={"repository": "library/alpine"}))
        True
    """

    __slots__ = (
        "_actions",
        "_check_media_type",
        "_check_repository",
        "_exclude",
        "_ignore_actions",
        "_ignore_media_types",
        "_media_types",
        "_predicate",
        "_repositories",
    )

    _ignore_media_types: frozenset[str]
    _ignore_actions: frozenset[str]
    _actions: frozenset[str] | None
    _media_types: frozenset[str] | None
    _repositories: _Globs | None
    _exclude: _Globs | None
    _predicate: EventPredicate | None
    _check_media_type: bool
    _check_repository: bool

    def __init__(
        self,
        *,
        ignore_media_types: Iterable[str] | None = None,
        ignore_actions: Iterable[str] | None = None,
        actions: Iterable[str] | None = None,
        media_types: Iterable[str] | None = None,
        repositories: Iterable[str] | None = None,
        exclude_repositories: Iterable[str] | None = None,
        predicate: EventPredicate | None = None,
    ) -> None:
        if predicate is not None and not callable(predicate):
            raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")
        ignored_media_types = _strings(ignore_media_types, "ignore_media_types") or frozenset()
        allowed_media_types = _allow_list(media_types, "media_types")
        exclude = _globs(exclude_repositories, "exclude_repositories", allow=False)
        repos = _globs(repositories, "repositories", allow=True)
        setattr_ = object.__setattr__  # the instance refuses plain assignment
        setattr_(self, "_ignore_media_types", ignored_media_types)
        setattr_(self, "_ignore_actions", _strings(ignore_actions, "ignore_actions") or frozenset())
        setattr_(self, "_actions", _allow_list(actions, "actions"))
        setattr_(self, "_media_types", allowed_media_types)
        setattr_(self, "_repositories", repos)
        setattr_(self, "_exclude", exclude)
        setattr_(self, "_predicate", predicate)
        # read target fields only when a part needs them: the hot path stays a set look-up
        setattr_(self, "_check_media_type", bool(ignored_media_types) or bool(allowed_media_types))
        setattr_(self, "_check_repository", repos is not None or exclude is not None)

    @classmethod
    def from_registry(
        cls,
        ignoredmediatypes: Iterable[str] | None = (),
        ignore_mediatypes: Iterable[str] | None = (),
        ignore_actions: Iterable[str] | None = (),
    ) -> EventFilter:
        """Build the registry's ignore filter from an endpoint's configuration lists.

        The registry's ``ignoredmediatypes`` and ``ignore.mediatypes`` are merged, as the
        registry does; ``ignore.actions`` is ``ignore_actions``.

        Example:
            >>> EventFilter.from_registry(["application/octet-stream"], ignore_actions=["pull"])
            EventFilter(ignore_media_types={'application/octet-stream'}, ignore_actions={'pull'})
        """
        legacy = _strings(ignoredmediatypes, "ignoredmediatypes") or frozenset()
        current = _strings(ignore_mediatypes, "ignore_mediatypes") or frozenset()
        return cls(ignore_media_types=legacy | current, ignore_actions=ignore_actions)

    def __call__(self, event: Event) -> bool:
        """Return ``True`` when ``event`` is to be delivered."""
        action = event.action
        if action in self._ignore_actions:
            return False
        allowed = self._actions
        if allowed is not None and action not in allowed:
            return False
        check_media_type = self._check_media_type
        check_repository = self._check_repository
        if check_media_type or check_repository:
            target = event.target  # a new view per access: read it once
            if check_media_type:
                media_type = target.media_type
                if media_type in self._ignore_media_types:
                    return False
                allowed = self._media_types
                if allowed is not None and media_type not in allowed:
                    return False
            if check_repository:
                repository = target.repository
                if self._repositories is not None and not self._repositories.matches(repository):
                    return False
                if self._exclude is not None and self._exclude.matches(repository):
                    return False
        predicate = self._predicate
        if predicate is None:
            return True
        try:
            return bool(predicate(event))
        except Exception:
            # dropping one event beats ending the endpoint's stream for every later event
            _log.exception(
                "event filter predicate %r raised on event id=%s; the event is dropped",
                predicate,
                event.id,
            )
            return False

    @property
    def ignore_media_types(self) -> frozenset[str]:
        """Media types whose events are dropped (empty: none)."""
        return self._ignore_media_types

    @property
    def ignore_actions(self) -> frozenset[str]:
        """Actions whose events are dropped (empty: none)."""
        return self._ignore_actions

    @property
    def actions(self) -> frozenset[str] | None:
        """The only actions delivered, or ``None`` for any."""
        return self._actions

    @property
    def media_types(self) -> frozenset[str] | None:
        """The only media types delivered, or ``None`` for any."""
        return self._media_types

    @property
    def repositories(self) -> frozenset[str] | None:
        """Globs a repository must match, or ``None`` for any."""
        return None if self._repositories is None else self._repositories.patterns

    @property
    def exclude_repositories(self) -> frozenset[str]:
        """Globs whose repositories are dropped (empty: none)."""
        return frozenset() if self._exclude is None else self._exclude.patterns

    @property
    def predicate(self) -> EventPredicate | None:
        """The user predicate, or ``None``."""
        return self._predicate

    def _parts(self) -> dict[str, Any]:
        return {
            "ignore_media_types": self.ignore_media_types,
            "ignore_actions": self.ignore_actions,
            "actions": self.actions,
            "media_types": self.media_types,
            "repositories": self.repositories,
            "exclude_repositories": self.exclude_repositories,
            "predicate": self.predicate,
        }

    def __repr__(self) -> str:
        shown = []
        for key, value in self._parts().items():
            if not value:
                continue
            text = _show(value) if isinstance(value, frozenset) else repr(value)
            shown.append(f"{key}={text}")
        return f"EventFilter({', '.join(shown)})"

    def _key(self) -> tuple[Any, ...]:
        parts = self._parts()
        parts["predicate"] = id(self._predicate)  # callables need not be hashable
        return tuple(parts.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventFilter):
            return NotImplemented
        return self._key() == other._key() and self._predicate is other._predicate

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"EventFilter is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"EventFilter is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuild through __init__: the default slot-state protocol would assign attributes
        return (_rebuild, (self._parts(),))


def _rebuild(parts: dict[str, Any]) -> EventFilter:
    return EventFilter(**parts)


def filter_events(event_filter: EventFilter) -> Callable[[Observable[Event]], Observable[Event]]:
    """Deliver only the events ``event_filter`` accepts.

    Completion and errors pass through unchanged. A filter's raising predicate drops that event
    (logged on ``rxsinks.filter``) and the stream goes on.

    A filter stage sits anywhere in a pipeline, beside plain reactivex operators, usually before
    :func:`~rxsinks.batch` and :func:`~rxsinks.deliver` (whose sink returns when a block was
    delivered and raises when the attempt failed).

    Marble diagram (``b`` is a pull)::

        --a--b--c--|
        [ filter_events(EventFilter(ignore_actions={"pull"})) ]
        --a-----c--|

    Example:
        >>> from reactivex import from_iterable, operators as ops
        >>> events = [Event.new("push", target={"repository": "a/b"}), Event.new("pull")]
        >>> keep = EventFilter.from_registry(ignore_actions=["pull"])
        >>> _ = from_iterable(events).pipe(
        ...     filter_events(keep),
        ...     ops.map(lambda event: event.action),  # a plain reactivex operator
        ... ).subscribe(print)
        push

    Args:
        event_filter: the filter to apply; it may be shared by several pipelines.

    Returns:
        An operator function from an observable of events to the observable of the events that
        pass.

    Raises:
        TypeError: ``event_filter`` is not an :class:`EventFilter`.
    """
    if not isinstance(event_filter, EventFilter):
        raise TypeError(
            f"event_filter must be an EventFilter, not {type(event_filter).__name__}; "
            "use reactivex.operators.filter for a plain function"
        )

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return source.subscribe(_FilterStage(event_filter, observer), scheduler=scheduler)

        return Observable(subscribe)

    return operator


class _Verdict:
    """The last decision of a pure filter, shared by every stage built on an equal filter.

    Endpoints usually share their ignore rules (every endpoint of a relay ignoring pulls, say):
    the event is classified once and the other endpoints' stages only compare identities. The
    pair is one attribute, read and replaced whole, so stages on other threads never see an
    event with another event's verdict.
    """

    __slots__ = ("__weakref__", "last")

    def __init__(self) -> None:
        self.last: tuple[Event | None, bool] = (None, False)


# equal pure filters -> their shared verdict (held by the stages, dropped with the last one)
_verdicts: weakref.WeakValueDictionary[EventFilter, _Verdict] = weakref.WeakValueDictionary()
_verdicts_lock = threading.Lock()


def _verdict_for(keep: EventFilter) -> _Verdict | None:
    if keep._predicate is not None:
        return None  # a predicate may have effects or change its mind: ask it every time
    with _verdicts_lock:
        verdict = _verdicts.get(keep)
        if verdict is None:
            verdict = _verdicts[keep] = _Verdict()
        return verdict


class _FilterStage(abc.ObserverBase[Event]):
    """``reactivex.operators.filter`` for events, written out: the filter sits on the hottest
    path of every endpoint (once per event and endpoint), so equal pure filters share their
    verdict, and a delivery stage below is called directly."""

    def __init__(self, keep: EventFilter, observer: abc.ObserverBase[Event]) -> None:
        self._keep = keep
        self._verdict = _verdict_for(keep)
        self._observer = observer
        self._next = direct_on_next(observer)

    def on_next(self, value: Event) -> None:
        verdict = self._verdict
        if verdict is not None:
            last, kept = verdict.last
            if last is not value:
                kept = self._keep(value)
                verdict.last = (value, kept)
        else:
            kept = self._keep(value)
        if kept:
            self._next(value)

    def on_error(self, error: Exception) -> None:
        self._observer.on_error(error)

    def on_completed(self) -> None:
        self._observer.on_completed()


def ignore(
    *, media_types: Iterable[str] = (), actions: Iterable[str] = ()
) -> Callable[[Observable[Event]], Observable[Event]]:
    """Drop events the way the registry's ignore filter does.

    An event is dropped when its ``target.mediaType`` is in ``media_types`` **or** its
    ``action`` is in ``actions`` (exact, case-sensitive). Either list may be empty: an
    action-only filter works (unlike the registry before its fix #4729). Completion and errors
    pass through.

    A filter stage sits anywhere in a pipeline, beside plain reactivex operators, usually before
    :func:`~rxsinks.batch` and :func:`~rxsinks.deliver` (whose sink returns when a block was
    delivered and raises when the attempt failed).

    Marble diagram (``b`` is a pull)::

        --a--b--c--|
        [ ignore(actions={"pull"}) ]
        --a-----c--|

    Example:
        >>> from reactivex import from_iterable, operators as ops
        >>> events = [Event.new("push", target={"repository": "a/b"}), Event.new("pull")]
        >>> _ = from_iterable(events).pipe(
        ...     ignore(actions=["pull"]),
        ...     ops.map(lambda event: event.action),  # a plain reactivex operator
        ... ).subscribe(print)
        push
        >>> op = ignore(media_types=["application/octet-stream"], actions=["pull"])

    Args:
        media_types: media types whose events are dropped.
        actions: actions whose events are dropped.

    Returns:
        An operator function from an observable of events to the events not ignored.

    Raises:
        TypeError: an argument is a bare string or holds something other than strings.
    """
    return filter_events(
        EventFilter(
            ignore_media_types=_strings(media_types, "media_types"),
            ignore_actions=_strings(actions, "actions"),
        )
    )


def match(
    *,
    actions: Iterable[str] | None = None,
    media_types: Iterable[str] | None = None,
    repositories: Iterable[str] | None = None,
    exclude_repositories: Iterable[str] | None = None,
    predicate: EventPredicate | None = None,
) -> Callable[[Observable[Event]], Observable[Event]]:
    """Deliver only the events that match every given condition.

    ``actions`` and ``media_types`` are allow-lists, ``repositories`` and
    ``exclude_repositories`` are globs (``*`` inside a segment, ``**`` across segments; see
    the module docstring), and ``predicate`` is any test on the event. Conditions left at
    ``None`` are not checked. A raising ``predicate`` drops that event, logs the error on
    ``rxsinks.filter`` with the event id, and the stream goes on. Completion and errors pass
    through.

    A filter stage sits anywhere in a pipeline, beside plain reactivex operators, usually before
    :func:`~rxsinks.batch` and :func:`~rxsinks.deliver` (whose sink returns when a block was
    delivered and raises when the attempt failed).

    Marble diagram (``a`` is outside ``library/``)::

        --a--b--c--|
        [ match(repositories=["library/*"]) ]
        -----b--c--|

    Example:
        >>> from reactivex import from_iterable, operators as ops
        >>> events = [Event.new("push", target={"repository": r}) for r in ("library/a", "b")]
        >>> _ = from_iterable(events).pipe(
        ...     ops.filter(lambda event: event.action == "push"),  # a plain reactivex operator
        ...     match(repositories=["library/*"]),
        ...     ops.map(lambda event: event.target.repository),
        ... ).subscribe(print)
        library/a
        >>> op = match(actions=["push"], repositories=["team-?/**"], exclude_repositories=["*/tmp"])

    Args:
        actions: the only actions delivered.
        media_types: the only media types delivered.
        repositories: globs a repository must match (at least one).
        exclude_repositories: globs whose repositories are dropped.
        predicate: a test on each event; true to deliver.

    Returns:
        An operator function from an observable of events to the events that match.

    Raises:
        TypeError: an argument is a bare string, holds something other than strings, or
            ``predicate`` is not callable.
        ValueError: an allow-list is empty or a pattern is invalid.
    """
    return filter_events(
        EventFilter(
            actions=actions,
            media_types=media_types,
            repositories=repositories,
            exclude_repositories=exclude_repositories,
            predicate=predicate,
        )
    )
