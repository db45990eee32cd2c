"""Tests of rxsinks._filter: the registry's ignore table, allow-lists, globs and the operators."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import Observable
from reactivex import operators as ops
from reactivex.notification import OnError
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

import rxsinks
from rxsinks._event import Event
from rxsinks._filter import EventFilter, filter_events, ignore, match

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error

Operator = Callable[[Observable[Event]], Observable[Event]]


def make_event(
    action: str = "push",
    media_type: str = "",
    repository: str = "",
    event_id: str = "evt-1",
) -> Event:
    """An event shaped like the registry's, with only the fields the filters read."""
    target: dict[str, Any] = {}
    if media_type:
        target["mediaType"] = media_type
    if repository:
        target["repository"] = repository
    return Event.from_dict({"id": event_id, "action": action, "target": target})


def run(operator: Operator, *events: Event) -> list[Event]:
    """Push ``events`` through ``operator`` synchronously and return what came out."""
    out: list[Event] = []
    completed: list[bool] = []
    reactivex.from_iterable(events).pipe(operator).subscribe(
        out.append, on_completed=lambda: completed.append(True)
    )
    assert completed == [True]
    return out


# --- the registry's reference ignore table (REFERENCE.md section 6) -------------------------

EVENT_A = ("push", "blob")
EVENT_B = ("pull", "manifest")

# (event, ignored media types, ignored actions, delivered?); None stands for the Go test's
# unset `{}`, [] for an empty list: both mean "nothing configured".
REFERENCE_TABLE: list[tuple[str, list[str] | None, list[str] | None, bool]] = [
    ("A", None, None, True),
    ("A", ["other"], ["other"], True),
    ("A", ["blob", "manifest"], ["other"], False),
    ("A", ["other"], ["pull"], True),
    ("A", ["other"], ["pull", "push"], False),
    ("A", [], ["pull"], True),
    ("A", [], ["push"], False),
    ("A", [], ["mount", "delete"], True),
    ("B", None, None, True),
    ("B", ["other"], ["other"], True),
    ("B", ["blob"], ["other"], True),
    ("B", ["blob", "manifest"], ["other"], False),
    ("B", ["other"], ["push"], True),
    ("B", ["other"], ["pull", "push"], False),
    ("B", [], ["push"], True),
    ("B", [], ["pull"], False),
    ("B", [], ["mount", "delete"], True),
]


def _reference_event(name: str) -> Event:
    action, media_type = EVENT_A if name == "A" else EVENT_B
    return make_event(action, media_type)


def _case_id(case: tuple[str, list[str] | None, list[str] | None, bool]) -> str:
    name, media, actions, delivered = case
    shown = ["{}" if v is None else "[" + ",".join(v) + "]" for v in (media, actions)]
    return f"{name}:{shown[0]}/{shown[1]}->{'yes' if delivered else 'no'}"


@pytest.mark.parametrize("case", REFERENCE_TABLE, ids=[_case_id(c) for c in REFERENCE_TABLE])
def test_reference_ignore_table_event_filter(
    case: tuple[str, list[str] | None, list[str] | None, bool],
) -> None:
    name, media, actions, delivered = case
    keep = EventFilter(ignore_media_types=media, ignore_actions=actions)
    assert keep(_reference_event(name)) is delivered


@pytest.mark.parametrize("case", REFERENCE_TABLE, ids=[_case_id(c) for c in REFERENCE_TABLE])
def test_reference_ignore_table_operator(
    case: tuple[str, list[str] | None, list[str] | None, bool],
) -> None:
    name, media, actions, delivered = case
    event = _reference_event(name)
    out = run(ignore(media_types=media or (), actions=actions or ()), event)
    assert out == ([event] if delivered else [])


@pytest.mark.parametrize("case", REFERENCE_TABLE, ids=[_case_id(c) for c in REFERENCE_TABLE])
def test_reference_ignore_table_from_registry(
    case: tuple[str, list[str] | None, list[str] | None, bool],
) -> None:
    name, media, actions, delivered = case
    # the registry merges both media-type keys: split the list across them
    media = media or []
    keep = EventFilter.from_registry(
        ignoredmediatypes=media[:1], ignore_mediatypes=media[1:], ignore_actions=actions
    )
    assert keep(_reference_event(name)) is delivered


# --- the ignore filter beyond the table -------------------------------------------------------


def test_action_only_filter_works_without_media_types() -> None:
    # registry bug #4729: an empty media-type list disabled the action list
    none: list[Iterable[str] | None] = [None, [], ()]
    for media_types in none:
        keep = EventFilter(ignore_media_types=media_types, ignore_actions=["pull"])
        assert keep(make_event("pull", "application/vnd.oci.image.manifest.v1+json")) is False
        assert keep(make_event("pull")) is False
        assert keep(make_event("push", "application/vnd.oci.image.manifest.v1+json")) is True


def test_action_only_operator() -> None:
    pull, push = make_event("pull", event_id="1"), make_event("push", event_id="2")
    assert run(ignore(actions={"pull"}), pull, push) == [push]


def test_media_type_only_filter() -> None:
    octet = make_event("push", "application/octet-stream")
    manifest = make_event("push", "application/vnd.oci.image.manifest.v1+json")
    keep = EventFilter(ignore_media_types=["application/octet-stream"])
    assert (keep(octet), keep(manifest)) == (False, True)


def test_ignore_is_exact_and_case_sensitive() -> None:
    keep = EventFilter(
        ignore_media_types=["application/vnd.oci.image.manifest.v1+json"], ignore_actions=["Pull"]
    )
    assert keep(make_event("pull")) is True
    assert keep(make_event("PULL")) is True
    assert keep(make_event("push", "application/vnd.oci.image.manifest.v1+json")) is False
    assert keep(make_event("push", "application/vnd.oci.image.manifest.v1+JSON")) is True
    assert keep(make_event("push", "application/vnd.oci.image.manifest")) is True


def test_from_registry_merges_both_media_type_lists() -> None:
    keep = EventFilter.from_registry(
        ignoredmediatypes=["application/octet-stream"],
        ignore_mediatypes=["application/vnd.docker.image.rootfs.diff.tar.gzip"],
        ignore_actions=["delete"],
    )
    assert keep.ignore_media_types == {
        "application/octet-stream",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
    assert keep(make_event("push", "application/octet-stream")) is False
    assert keep(make_event("push", "application/vnd.docker.image.rootfs.diff.tar.gzip")) is False
    assert keep(make_event("delete")) is False
    assert keep(make_event("push", "application/vnd.oci.image.manifest.v1+json")) is True


def test_from_registry_accepts_missing_keys() -> None:
    keep = EventFilter.from_registry(None, None, None)
    assert keep == EventFilter()
    assert keep(make_event("pull", "blob")) is True


# --- allow-lists ------------------------------------------------------------------------------


def test_action_allow_list() -> None:
    keep = EventFilter(actions=["push", "delete"])
    assert [keep(make_event(a)) for a in ("push", "delete", "pull", "mount", "")] == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_media_type_allow_list() -> None:
    manifest = "application/vnd.oci.image.manifest.v1+json"
    keep = EventFilter(media_types=[manifest])
    assert keep(make_event("push", manifest)) is True
    assert keep(make_event("push", "application/octet-stream")) is False
    assert keep(make_event("push")) is False  # no media type: not in the list


def test_allow_lists_combine_with_and_and_ignore_wins() -> None:
    keep = EventFilter(actions=["push", "pull"], media_types=["m"], ignore_actions=["pull"])
    assert keep(make_event("push", "m")) is True
    assert keep(make_event("push", "other")) is False
    assert keep(make_event("mount", "m")) is False
    assert keep(make_event("pull", "m")) is False


def test_match_operator_allow_lists() -> None:
    a = make_event("push", "m", "library/alpine", "a")
    b = make_event("pull", "m", "library/alpine", "b")
    c = make_event("push", "x", "library/alpine", "c")
    d = make_event("push", "m", "team/app", "d")
    out = run(match(actions=["push"], media_types=["m"], repositories=["library/*"]), a, b, c, d)
    assert out == [a]


# --- repository globs -------------------------------------------------------------------------

GLOB_TABLE: list[tuple[str, str, bool]] = [
    ("library/*", "library/alpine", True),
    ("library/*", "library/a/b", False),
    ("library/*", "library", False),
    ("library/*", "other/alpine", False),
    ("library/*", "", False),
    ("*", "alpine", True),
    ("*", "a/b", False),
    ("team-?/**", "team-a/x", True),
    ("team-?/**", "team-a/x/y", True),
    ("team-?/**", "team-a", False),
    ("team-?/**", "team-ab/x", False),
    ("team-?/**", "team-/x", False),
    ("**/base", "base", True),
    ("**/base", "a/base", True),
    ("**/base", "a/b/base", True),
    ("**/base", "a/xbase", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/xb", False),
    ("a/**/b", "b", False),
    ("**", "any/thing/at/all", True),
    ("**", "x", True),
    ("lib?", "libs", True),
    ("lib?", "lib/", False),
    ("lib?", "lib", False),
    ("[a-c]*/x", "bravo/x", True),
    ("[a-c]*/x", "delta/x", False),
    ("[!a]*", "b", True),
    ("[!a]*", "a", False),
    ("[!a]*", "/x", False),
    ("[]]x", "]x", True),
    ("[^]x", "^x", True),
    ("[^]x", "ax", False),
    ("demo/hello", "demo/hello", True),
    ("demo/hello", "demo/hello2", False),
    ("demo/hello", "Demo/hello", False),
    ("a.b/c+d", "a.b/c+d", True),
    ("a.b/c+d", "axb/c+d", False),
    ("a.b/*", "a.b/q", True),
    ("a.b/*", "axb/q", False),
    ("Library/*", "library/alpine", False),
]


@pytest.mark.parametrize(("pattern", "repository", "expected"), GLOB_TABLE)
def test_repository_glob(pattern: str, repository: str, expected: bool) -> None:
    keep = EventFilter(repositories=[pattern])
    assert keep(make_event("push", repository=repository)) is expected


@pytest.mark.parametrize(("pattern", "repository", "expected"), GLOB_TABLE)
def test_repository_exclusion_glob(pattern: str, repository: str, expected: bool) -> None:
    keep = EventFilter(exclude_repositories=[pattern])
    assert keep(make_event("push", repository=repository)) is (not expected)


def test_several_patterns_are_alternatives() -> None:
    keep = EventFilter(repositories=["library/*", "team/**", "demo/hello"])
    repos = ["library/a", "team/x/y", "demo/hello", "demo/other", "lib/a"]
    assert [keep(make_event(repository=r)) for r in repos] == [True, True, True, False, False]


def test_exclusions_win_over_inclusions() -> None:
    keep = EventFilter(repositories=["library/**"], exclude_repositories=["library/tmp-*", "**/ci"])
    repos = ["library/alpine", "library/tmp-1", "library/x/ci", "library/x/cid"]
    assert [keep(make_event(repository=r)) for r in repos] == [True, False, False, True]


def test_match_operator_exclusions() -> None:
    keep = make_event(repository="team/app", event_id="k")
    drop = make_event(repository="team/scratch", event_id="d")
    assert run(match(exclude_repositories=["*/scratch"]), keep, drop) == [keep]


# --- predicate --------------------------------------------------------------------------------


def test_predicate_decides_last() -> None:
    seen: list[str] = []

    def tagged(event: Event) -> bool:
        seen.append(event.id)
        return event.action == "push"

    keep = EventFilter(ignore_actions=["delete"], predicate=tagged)
    assert keep(make_event("push", event_id="1")) is True
    assert keep(make_event("pull", event_id="2")) is False
    assert keep(make_event("delete", event_id="3")) is False
    # an event already dropped by a cheaper part never reaches the predicate
    assert seen == ["1", "2"]


def test_match_operator_predicate() -> None:
    a, b = make_event(repository="x/a", event_id="a"), make_event(repository="x/b", event_id="b")
    assert run(match(predicate=lambda e: e.target.repository.endswith("b")), a, b) == [b]


def _explode(event: Event) -> bool:
    if event.id == "bad":
        raise RuntimeError("boom")
    return True


def test_raising_predicate_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    keep = EventFilter(predicate=_explode)
    with caplog.at_level(logging.ERROR, logger="rxsinks.filter"):
        assert keep(make_event(event_id="bad")) is False
    [record] = caplog.records
    assert record.name == "rxsinks.filter"
    assert record.levelno == logging.ERROR
    assert "bad" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_raising_predicate_does_not_end_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    a, bad, c = (make_event(event_id=i) for i in ("a", "bad", "c"))
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, a), on_next(220, bad), on_next(230, c), on_completed(250)
    )
    with caplog.at_level(logging.ERROR, logger="rxsinks.filter"):
        results = scheduler.start(lambda: xs.pipe(match(predicate=_explode)))
    assert results.messages == [on_next(210, a), on_next(230, c), on_completed(250)]
    assert [r.getMessage() for r in caplog.records if "id=bad" in r.getMessage()] != []
    assert len(caplog.records) == 1


# --- marble tests: completion and errors pass through ----------------------------------------


def _marble_events() -> tuple[Event, Event, Event]:
    return (
        make_event("push", "m", "library/a", "a"),
        make_event("pull", "m", "library/b", "b"),
        make_event("push", "m", "other/c", "c"),
    )


def test_ignore_marble_completion_passes() -> None:
    a, b, c = _marble_events()
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(150, b), on_next(210, a), on_next(220, b), on_next(230, c), on_completed(250)
    )
    results = scheduler.start(lambda: xs.pipe(ignore(actions={"pull"})))
    assert results.messages == [on_next(210, a), on_next(230, c), on_completed(250)]
    assert xs.subscriptions == [ReactiveTest.subscribe(200, 250)]


def test_ignore_marble_completion_passes_when_everything_is_dropped() -> None:
    # the registry's filter swallowed Close: ours must complete even if nothing got through
    _, b, _ = _marble_events()
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, b), on_next(220, b), on_completed(300))
    results = scheduler.start(lambda: xs.pipe(ignore(actions={"pull"})))
    assert results.messages == [on_completed(300)]


def test_match_marble_error_passes() -> None:
    a, b, c = _marble_events()
    failure = RuntimeError("upstream broke")
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, a), on_next(220, c), on_next(230, b), on_error(240, failure)
    )
    results = scheduler.start(lambda: xs.pipe(match(repositories=["library/*"])))
    assert results.messages == [on_next(210, a), on_next(230, b), on_error(240, failure)]
    last = results.messages[-1].value
    assert isinstance(last, OnError)
    assert last.exception is failure


def test_filter_events_marble_shared_filter() -> None:
    a, b, c = _marble_events()
    shared = EventFilter(ignore_actions={"pull"})
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, a), on_next(220, b), on_next(230, c), on_completed(250)
    )
    ys = scheduler.create_hot_observable(on_next(215, b), on_next(225, c), on_completed(260))
    first = scheduler.create_observer()
    second = scheduler.create_observer()
    xs.pipe(filter_events(shared)).subscribe(first)
    ys.pipe(filter_events(shared)).subscribe(second)
    scheduler.start()
    assert first.messages == [on_next(210, a), on_next(230, c), on_completed(250)]
    assert second.messages == [on_next(225, c), on_completed(260)]


def test_equal_filters_on_many_endpoints_decide_each_event_alike() -> None:
    # equal pure filters share one verdict per event: endpoints must still see exactly their
    # events, whatever order the stages run in and however events repeat
    subject: Subject[Event] = Subject()
    received: list[list[str]] = [[], [], []]
    for index in range(3):
        subject.pipe(ignore(actions={"pull"})).subscribe(
            lambda event, index=index: received[index].append(event.id)
        )
    events = [make_event("pull" if n % 3 == 0 else "push", event_id=str(n)) for n in range(30)]
    for event in events + events[::-1]:
        subject.on_next(event)
    expected = [e.id for e in events + events[::-1] if e.action != "pull"]
    assert received == [expected, expected, expected]


def test_equal_filters_in_threads_never_mix_verdicts() -> None:
    # stages on other threads share the verdict too: an event must never be judged with
    # another event's verdict
    events = [make_event("pull" if n % 2 else "push", event_id=str(n)) for n in range(4_000)]
    results: list[list[str]] = [[] for _ in range(4)]

    def writer(index: int) -> None:
        subject: Subject[Event] = Subject()
        subject.pipe(ignore(actions={"pull"})).subscribe(lambda e: results[index].append(e.id))
        for event in events:
            subject.on_next(event)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = [e.id for e in events if e.action == "push"]
    assert results == [expected] * 4


def test_a_predicate_is_asked_once_per_event_and_endpoint() -> None:
    # a predicate may count, sample or change its mind: its answer is never reused
    calls: list[str] = []

    def every_other(event: Event) -> bool:
        calls.append(event.id)
        return len(calls) % 2 == 1

    keep = EventFilter(predicate=every_other)
    subject: Subject[Event] = Subject()
    received: list[list[str]] = [[], []]
    for index in range(2):
        subject.pipe(filter_events(keep)).subscribe(
            lambda event, index=index: received[index].append(event.id)
        )
    subject.on_next(make_event(event_id="a"))
    subject.on_next(make_event(event_id="b"))
    assert calls == ["a", "a", "b", "b"]
    assert received == [["a", "b"], []]


async def test_a_filter_before_a_delivery_stage_keeps_dropped_events_out_of_it() -> None:
    # ignored events are never buffered, counted nor delivered by the stage below
    subject: Subject[Event] = Subject()
    counted = rxsinks.queue()
    delivered: list[Event] = []
    outcomes = subject.pipe(
        ignore(actions={"pull"}), rxsinks.deliver(delivered.append, queue=counted)
    )
    results: list[int] = []
    outcomes.pipe(ops.count()).subscribe(results.append)
    pull, push = make_event("pull", event_id="1"), make_event("push", event_id="2")
    subject.on_next(pull)
    subject.on_next(push)
    assert counted.pending == 1  # only the push
    subject.on_completed()
    for _ in range(100):
        if results:
            break
        await asyncio.sleep(0.01)
    assert delivered == [push]
    assert results == [1]


# --- bad arguments ----------------------------------------------------------------------------


def kwargs(name: str, value: Any) -> dict[str, Any]:
    """One keyword argument, typed loosely on purpose: these tests pass wrong types."""
    return {name: value}


FILTER_COLLECTIONS = [
    "ignore_media_types",
    "ignore_actions",
    "actions",
    "media_types",
    "repositories",
    "exclude_repositories",
]


@pytest.mark.parametrize("name", FILTER_COLLECTIONS)
def test_bare_string_is_refused_with_its_name(name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a collection of str.*\['pull'\]"):
        EventFilter(**kwargs(name, "pull"))


@pytest.mark.parametrize("name", FILTER_COLLECTIONS)
@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (["push", 1], "found int"),
        ([None], "found NoneType"),
        ([b"push"], "found bytes"),
        (b"push", "not a single bytes"),
        (5, "not int"),
        ({"push": True}, "not a mapping"),
    ],
)
def test_non_strings_are_refused_with_their_name(name: str, value: Any, detail: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} .*{detail}"):
        EventFilter(**kwargs(name, value))


@pytest.mark.parametrize("name", ["actions", "media_types", "repositories"])
def test_empty_allow_list_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} is empty"):
        EventFilter(**kwargs(name, []))


def test_empty_ignore_lists_are_fine() -> None:
    keep = EventFilter(ignore_media_types=[], ignore_actions=(), exclude_repositories=set())
    assert keep == EventFilter()
    assert keep(make_event("pull", "blob", "a/b")) is True


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ("", "empty pattern"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
        ("/a", "empty path segment"),
        ("team**", "'\\*\\*' must be a whole path segment"),
        ("a/***", "'\\*\\*' must be a whole path segment"),
        ("a[bc", "unterminated"),
        ("a[!", "unterminated"),
        ("a[/]", "unterminated"),
        ("[z-a]", "invalid pattern"),
    ],
)
@pytest.mark.parametrize("name", ["repositories", "exclude_repositories"])
def test_invalid_patterns_are_refused(name: str, pattern: str, detail: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: .*{detail}"):
        EventFilter(**kwargs(name, ["ok/*", pattern]))


def test_non_callable_predicate_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^predicate must be callable"):
        EventFilter(predicate="push")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["ignoredmediatypes", "ignore_mediatypes", "ignore_actions"])
def test_from_registry_names_the_registry_key(name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a collection of str"):
        EventFilter.from_registry(**kwargs(name, "application/octet-stream"))


@pytest.mark.parametrize("name", ["media_types", "actions"])
def test_ignore_names_its_own_arguments(name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a collection of str"):
        ignore(**kwargs(name, "pull"))


def test_match_names_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"^repositories must be a collection of str"):
        match(repositories="library/*")
    with pytest.raises(ValueError, match=r"^exclude_repositories: .*empty path segment"):
        match(exclude_repositories=["library/"])


def test_filter_events_wants_an_event_filter() -> None:
    with pytest.raises(TypeError, match=r"^event_filter must be an EventFilter, not function"):
        filter_events(lambda e: True)  # type: ignore[arg-type]


# --- value behaviour --------------------------------------------------------------------------


def test_repr_shows_only_configured_parts() -> None:
    assert repr(EventFilter()) == "EventFilter()"
    assert repr(EventFilter(ignore_actions=["pull", "delete"], ignore_media_types=[])) == (
        "EventFilter(ignore_actions={'delete', 'pull'})"
    )
    text = repr(
        EventFilter(
            ignore_media_types=["b"],
            actions=["push"],
            media_types=["m"],
            repositories=["library/*"],
            exclude_repositories=["*/tmp"],
            predicate=_explode,
        )
    )
    assert text.startswith(
        "EventFilter(ignore_media_types={'b'}, actions={'push'}, media_types={'m'}, "
        "repositories={'library/*'}, exclude_repositories={'*/tmp'}, predicate=<function _explode"
    )


def test_is_immutable() -> None:
    keep = EventFilter(ignore_actions=["pull"])
    with pytest.raises(AttributeError, match="immutable"):
        keep._ignore_actions = frozenset()
    with pytest.raises(AttributeError, match="immutable"):
        keep.anything = 1
    with pytest.raises(AttributeError, match="immutable"):
        del keep._ignore_actions
    assert keep(make_event("pull")) is False


def test_equality_hash_copy_and_pickle() -> None:
    one = EventFilter(ignore_actions=["pull", "pull"], repositories=("library/*",))
    two = EventFilter(ignore_actions={"pull"}, repositories=["library/*"])
    assert one == two
    assert hash(one) == hash(two)
    assert one != EventFilter(ignore_actions={"pull"})
    assert EventFilter(predicate=_explode) != EventFilter(predicate=lambda e: True)
    restored = pickle.loads(pickle.dumps(one))
    assert restored == one
    assert restored(make_event("pull", repository="library/a")) is False
    assert restored(make_event("push", repository="library/a")) is True
    assert copy.deepcopy(one) == one


def test_accessors_expose_frozen_parts() -> None:
    source = ["push"]
    keep = EventFilter(actions=source, exclude_repositories=["a/*"])
    source.append("pull")  # the filter took a copy
    assert keep.actions == frozenset({"push"})
    assert keep.media_types is None
    assert keep.repositories is None
    assert keep.exclude_repositories == frozenset({"a/*"})
    assert keep.ignore_actions == frozenset()
    assert keep.predicate is None


def test_accepts_generators_once() -> None:
    keep = EventFilter(ignore_actions=(a for a in ["pull", "mount"]))
    assert keep.ignore_actions == {"pull", "mount"}


def test_realistic_registry_event() -> None:
    event = Event.from_dict(
        {
            "id": "45e1b4e6",
            "timestamp": "2026-11-29T17:25:25.226438961Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": 401,
                "digest": "sha256:9641",
                "length": 401,
                "repository": "demo/hello",
                "url": "http://127.0.0.1:5000/v2/demo/hello/manifests/sha256:9641",
                "tag": "v1",
            },
            "request": {"id": "4308abfd", "method": "PUT"},
            "actor": {},
            "source": {"addr": "vm:5000"},
        }
    )
    assert EventFilter(repositories=["demo/*"], actions=["push"])(event) is True
    manifest = "application/vnd.oci.image.manifest.v1+json"
    assert EventFilter(ignore_media_types=[manifest])(event) is False
    assert EventFilter(predicate=lambda e: e.target.tag == "v1")(event) is True


# --- property: the registry's rule, exactly ---------------------------------------------------

_WORDS = st.sampled_from(["push", "pull", "mount", "delete", "", "Push", "blob", "manifest"])


@given(
    action=_WORDS,
    media_type=_WORDS,
    ignored_media=st.frozensets(_WORDS),
    ignored_actions=st.frozensets(_WORDS),
)
def test_ignore_rule_property(
    action: str, media_type: str, ignored_media: frozenset[str], ignored_actions: frozenset[str]
) -> None:
    event = make_event(action, media_type)
    keep = EventFilter(ignore_media_types=ignored_media, ignore_actions=ignored_actions)
    assert event.action == action and event.target.media_type == media_type
    expected = not (media_type in ignored_media or action in ignored_actions)
    assert keep(event) is expected


def _as_list(values: Iterable[str]) -> list[str]:
    return sorted(values)


@given(
    action=_WORDS,
    media_type=_WORDS,
    ignored_media=st.frozensets(_WORDS),
    ignored_actions=st.frozensets(_WORDS),
)
def test_ignore_operator_agrees_with_event_filter(
    action: str, media_type: str, ignored_media: frozenset[str], ignored_actions: frozenset[str]
) -> None:
    event = make_event(action, media_type)
    out = run(ignore(media_types=_as_list(ignored_media), actions=_as_list(ignored_actions)), event)
    keep = EventFilter(ignore_media_types=ignored_media, ignore_actions=ignored_actions)
    assert out == ([event] if keep(event) else [])
