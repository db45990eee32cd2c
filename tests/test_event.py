"""Tests of the event and envelope model, against the packaged capture from a real registry."""

from __future__ import annotations

import copy
import enum
import json
import pickle
import re
import uuid
from datetime import UTC, datetime
from importlib import resources
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxsinks._event import (
    ENVELOPE_MEDIA_TYPES,
    MEDIA_TYPE_V1,
    MEDIA_TYPE_V2,
    Actor,
    Event,
    Request,
    Source,
    Target,
    decode_envelope,
    decode_ndjson,
    encode_envelope,
    encode_event,
    sample_events,
)
from rxsinks._exceptions import EnvelopeError, RxSinksError


def _capture_lines() -> list[str]:
    text = resources.files("rxsinks").joinpath("data/registry-events.ndjson").read_text("utf-8")
    return [line for line in text.split("\n") if line.strip()]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _structure(value: Any) -> Any:
    """Value with its types and key order made explicit, so 1 != 1.0 != True and order counts."""
    if isinstance(value, dict):
        return ("object", [(key, _structure(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("array", [_structure(item) for item in value])
    return (type(value).__name__, value)


CAPTURE = _capture_lines()


# --------------------------------------------------------------------------- the real capture


def test_capture_is_packaged_with_sixteen_events() -> None:
    events = sample_events()
    assert len(events) == len(CAPTURE) == 16
    assert sample_events() is not events  # a fresh list each call


@pytest.mark.parametrize("line", CAPTURE, ids=[f"line{n}" for n in range(1, len(CAPTURE) + 1)])
def test_capture_event_round_trips(line: str) -> None:
    original = json.loads(line)
    event = Event.from_dict(original)
    assert _structure(event.to_dict()) == _structure(original)
    (decoded,) = decode_envelope(encode_envelope([event]))
    assert decoded == event
    assert _structure(decoded.to_dict()) == _structure(original)


def test_capture_envelope_bytes_are_each_event_as_received() -> None:
    events = sample_events()
    body = encode_envelope(events)
    expected = '{"events":[' + ",".join(_compact(json.loads(line)) for line in CAPTURE) + "]}"
    assert body == expected.encode("utf-8")
    assert encode_envelope(decode_envelope(body)) == body


def test_capture_has_every_action() -> None:
    actions = [event.action for event in sample_events()]
    assert set(actions) == {"push", "pull", "mount", "delete"}


def test_capture_typed_accessors_on_a_tagged_manifest_push() -> None:
    event = sample_events()[2]
    assert event.id == "a1d95d30-41e0-4d4e-986d-59f722c88c6f"
    assert event.timestamp == "2026-11-29T17:44:07.034204146Z"
    assert event.time == datetime(2026, 11, 29, 17, 44, 7, 34204, tzinfo=UTC)
    assert event.action == "push"
    target = event.target
    assert isinstance(target, Target)
    assert target.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert target.size == target.length == 401
    assert target.digest.startswith("sha256:63a69df3")
    assert target.repository == "library/alpine"
    assert target.tag == "3.20"
    assert target.url.endswith("/v2/library/alpine/manifests/" + target.digest)
    assert [ref["mediaType"] for ref in target.references] == [
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ]
    assert target.references[0]["size"] == 159
    assert target.urls == ()
    assert target.annotations == {}
    assert target.artifact_type == target.from_repository == ""
    request = event.request
    assert isinstance(request, Request)
    assert request.id == "a1808a1f-f6e3-4092-84f7-bc384346c13d"
    assert request.addr == "127.0.0.1:35286"
    assert request.host == "127.0.0.1:5002"
    assert request.method == "PUT"
    assert request.useragent == "skopeo/1.9.3"
    assert isinstance(event.actor, Actor)
    assert event.actor.name == ""
    assert event.actor.to_dict() == {}
    source = event.source
    assert isinstance(source, Source)
    assert source.addr == "vm:5002"
    assert source.instance_id == "f5c81355-0684-4a8e-8b22-13782e200d80"


def test_capture_mount_names_its_source_repository() -> None:
    (mount,) = [event for event in sample_events() if event.action == "mount"]
    assert mount.target.from_repository == "library/alpine"
    assert mount.target.repository == "mirror/alpine"
    assert mount.target.digest == mount.target.url.rsplit("/", 1)[1]


def test_capture_pull_is_a_get_and_delete_targets_lack_most_fields() -> None:
    events = sample_events()
    pulls = [event for event in events if event.action == "pull"]
    assert pulls and all(event.request.method in {"GET", "HEAD"} for event in pulls)
    deletes = [event for event in events if event.action == "delete"]
    assert len(deletes) == 2
    by_digest, by_tag = deletes
    assert by_digest.target.digest.startswith("sha256:")
    assert by_digest.target.media_type == "" and by_digest.target.size is None
    assert by_tag.target.tag and by_tag.target.digest == ""


def test_capture_timestamps_keep_nanoseconds_and_go_trimmed_zeros() -> None:
    events = sample_events()
    assert all(re.fullmatch(r".*T.*\.\d{8,9}Z", event.timestamp) for event in events)
    trimmed = events[4]  # Go's RFC3339Nano trims trailing zeros: 8 digits here
    assert trimmed.timestamp == "2026-11-29T17:44:07.08729934Z"
    assert trimmed.time == datetime(2026, 11, 29, 17, 44, 7, 87299, tzinfo=UTC)
    assert [event.time for event in events] == sorted(event.time for event in events)  # type: ignore[type-var]


def test_repr_is_short() -> None:
    events = sample_events()
    assert repr(events[2]) == (
        "Event(id='a1d95d30-41e0-4d4e-986d-59f722c88c6f', action='push', "
        "repository='library/alpine', tag='3.20')"
    )
    assert repr(events[0]).endswith("repository='library/alpine')")


# --------------------------------------------------------------------------- exactness


def test_unknown_fields_at_every_depth_and_key_order_are_kept() -> None:
    body = (
        '{"events":[{"zz":1,"action":"push","target":{"repository":"r","platform":'
        '{"os":"linux","features":["x",{"deep":[null,true,false]}]},"mediaType":"m"},'
        '"extra":{"nested":{"more":"yes"}},"id":"i"}]}'
    )
    (event,) = decode_envelope(body)
    assert list(event.to_dict()) == ["zz", "action", "target", "extra", "id"]
    assert list(event.to_dict()["target"]) == ["repository", "platform", "mediaType"]
    assert event.target.get("platform") == {
        "os": "linux",
        "features": ["x", {"deep": [None, True, False]}],
    }
    assert event.raw["extra"] == {"nested": {"more": "yes"}}
    assert encode_envelope([event]) == body.encode()


def test_nanosecond_timestamps_are_kept_as_sent() -> None:
    stamp = "2026-11-29T17:44:07.123456789Z"
    event = Event.from_dict({"timestamp": stamp})
    (decoded,) = decode_envelope(encode_envelope([event]))
    assert decoded.timestamp == stamp
    assert decoded.time == datetime(2026, 11, 29, 17, 44, 7, 123456, tzinfo=UTC)


@pytest.mark.parametrize("number", [2**63, 2**64 + 1, -(2**200), 10**30, 10**4299])
def test_big_integers_are_kept_exactly(number: int) -> None:
    body = f'{{"events":[{{"target":{{"size":{number}}},"n":[{number}]}}]}}'.encode()
    (event,) = decode_envelope(body)
    assert event.target.size == number
    assert encode_envelope([event]) == body
    assert Event.from_dict({"n": number}).to_dict() == {"n": number}


def test_what_json_normalises_is_documented_behaviour() -> None:
    # floats keep their value but re-print in Python's repr; duplicate keys keep the last
    (event,) = decode_envelope('{"events":[{"f":1.10,"e":1e5,"d":1,"d":2}]}')
    assert event.to_dict() == {"f": 1.1, "e": 100000.0, "d": 2}
    assert encode_envelope([event]) == b'{"events":[{"f":1.1,"e":100000.0,"d":2}]}'


def test_non_ascii_is_written_as_utf8_and_lone_surrogates_stay_valid_json() -> None:
    event = Event.from_dict({"who": "Zoë 🐳", "sep": "a\u2028b"})
    body = encode_envelope([event])
    assert "Zoë 🐳".encode() in body
    assert decode_envelope(body) == [event]
    # "\ud800" parses to a lone surrogate, which has no UTF-8 form: the body falls back to
    # ASCII escapes and stays valid, equal JSON
    (lone,) = decode_envelope('{"events":[{"s":"\\ud800","t":"é"}]}')
    body = encode_envelope([lone])
    assert body == b'{"events":[{"s":"\\ud800","t":"\\u00e9"}]}'
    assert decode_envelope(body) == [lone]


def test_surrogate_pairs_split_in_python_come_back_joined() -> None:
    # no JSON text decodes to a split pair, but a Python caller can build one; JSON cannot tell
    # the two apart, so it reads back as the character the pair encodes (documented)
    event = Event.from_dict({"s": "\ud83d\udc33"})
    (decoded,) = decode_envelope(encode_envelope([event]))
    assert decoded.to_dict() == {"s": "🐳"}


def test_envelope_order_and_empty_block() -> None:
    events = [Event.new("push"), Event.new("pull"), Event.new("delete")]
    assert decode_envelope(encode_envelope(events)) == events
    assert decode_envelope(encode_envelope(iter(events))) == events
    assert encode_envelope([]) == b'{"events":[]}'
    assert decode_envelope(b'{"events":[]}') == []


def test_encode_rejects_non_events_naming_the_index() -> None:
    with pytest.raises(TypeError, match=r"events\[1\] is a dict, not an Event"):
        encode_envelope([Event.new("push"), {"action": "push"}])  # type: ignore[list-item]


# --------------------------------------------------------------------------- from_dict


def test_from_dict_accepts_missing_fields_and_reads_them_as_empty() -> None:
    event = Event.from_dict({})
    assert event.id == event.timestamp == event.action == ""
    assert event.time is None
    assert event.target.repository == event.target.tag == event.target.media_type == ""
    assert event.target.size is None and event.target.length is None
    assert event.target.references == () and event.target.urls == ()
    assert event.request.method == "" and event.source.instance_id == ""
    assert event.target.get("anything", "default") == "default"
    assert event.to_dict() == {}


def test_fields_of_an_unexpected_type_read_as_empty() -> None:
    event = Event.from_dict(
        {
            "id": 7,
            "action": ["push"],
            "target": {
                "size": "401",
                "length": True,
                "urls": ["http://a", 3],
                "references": [{"digest": "d"}, "junk"],
                "annotations": {"a": "1", "b": 2},
            },
            "request": "not an object",
        }
    )
    assert event.id == "" and event.action == ""
    assert event.target.size is None and event.target.length is None
    assert event.target.urls == ("http://a",)
    assert event.target.references == ({"digest": "d"},)
    assert dict(event.target.annotations) == {"a": "1"}
    assert event.request.to_dict() == {}
    assert event.to_dict()["request"] == "not an object"  # kept as received all the same


def test_from_dict_copies_its_input_deeply() -> None:
    data: dict[str, Any] = {"target": {"references": [{"digest": "d1"}]}}
    event = Event.from_dict(data)
    data["target"]["references"][0]["digest"] = "changed"
    data["action"] = "pull"
    assert event.target.references == ({"digest": "d1"},)
    assert event.action == ""
    out = event.to_dict()
    out["target"]["references"].append({})
    assert len(event.target.references) == 1
    refs = event.target.references
    refs[0]["digest"] = "changed"
    assert event.target.references[0]["digest"] == "d1"


def test_from_dict_normalises_python_types_to_plain_json() -> None:
    class Colour(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    event = Event.from_dict(
        MappingProxyType(
            {"c": Colour.RED, "l": Level.HIGH, "t": (1, 2.5), "m": MappingProxyType({})}
        )
    )
    data = event.to_dict()
    assert _structure(data) == _structure({"c": "red", "l": 3, "t": [1, 2.5], "m": {}})
    assert encode_envelope([event]) == b'{"events":[{"c":"red","l":3,"t":[1,2.5],"m":{}}]}'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "an event must be a JSON object (a mapping), got array"),
        ("{}", "an event must be a JSON object (a mapping), got string"),
        (None, "an event must be a JSON object (a mapping), got null"),
        ({1: "x"}, "event: key 1 (int) is not a string; JSON object keys must be strings"),
        ({"target": {"size": float("nan")}}, "event.target.size: float nan has no JSON form"),
        ({"a": [0, {"b c": float("inf")}]}, 'event.a[1]["b c"]: float inf has no JSON form'),
        ({"a": {1, 2}}, "event.a: set is not a JSON value"),
        ({"a": b"bytes"}, "event.a: bytes is not a JSON value"),
        ({"n": 10**4300}, "event.n: integer with more than 4300 digits cannot be written as JSON"),
    ],
)
def test_from_dict_rejects_what_has_no_json_form(data: Any, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        Event.from_dict(data)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, RxSinksError) and isinstance(info.value, ValueError)


def test_events_are_immutable_equal_by_data_and_unhashable() -> None:
    event = sample_events()[0]
    with pytest.raises(AttributeError, match="immutable"):
        event.action = "pull"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        event._data = {}
    with pytest.raises(AttributeError, match="read-only"):
        event.target.tag = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.raw["action"] = "pull"  # type: ignore[index]
    assert event == Event.from_dict(event.to_dict())
    assert event != Event.from_dict({**event.to_dict(), "action": "pull"})
    assert event != event.to_dict()
    assert event.target == Event.from_dict(event.to_dict()).target
    assert event.target != event.request
    with pytest.raises(TypeError, match="unhashable"):
        hash(event)
    with pytest.raises(TypeError, match="unhashable"):
        hash(event.target)


def test_pickle_and_copy_keep_the_data() -> None:
    event = sample_events()[2]
    for clone in (pickle.loads(pickle.dumps(event)), copy.copy(event), copy.deepcopy(event)):
        assert clone == event
        assert _structure(clone.to_dict()) == _structure(event.to_dict())


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-29T17:44:07Z", datetime(2026, 11, 29, 17, 44, 7, tzinfo=UTC)),
        ("2026-11-29T17:44:07.5Z", datetime(2026, 11, 29, 17, 44, 7, 500000, tzinfo=UTC)),
        ("2026-11-29t17:44:07.999999999z", datetime(2026, 11, 29, 17, 44, 7, 999999, tzinfo=UTC)),
        ("2026-11-29T19:44:07.1+02:00", datetime(2026, 11, 29, 17, 44, 7, 100000, tzinfo=UTC)),
        ("2026-11-29T12:14:07-05:30", datetime(2026, 11, 29, 17, 44, 7, tzinfo=UTC)),
        ("2026-11-29T17:44:07", None),  # no offset: not RFC 3339
        ("2026-13-01T00:00:00Z", None),
        ("2026-11-29T23:59:60Z", None),  # leap seconds do not fit a datetime
        ("0001-01-01T00:00:00+01:00", None),  # before datetime's range once in UTC
        ("yesterday", None),
        ("", None),
    ],
)
def test_time_parses_rfc3339_or_gives_none(stamp: str, expected: datetime | None) -> None:
    event = Event.from_dict({"timestamp": stamp})
    assert event.time == expected
    assert event.timestamp == stamp
    if expected is not None:
        assert event.time is not None and event.time.tzinfo is UTC


# --------------------------------------------------------------------------- Event.new


def test_new_event_has_uuid4_id_and_nanosecond_utc_timestamp() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    event = Event.new(
        "push",
        target={"repository": "demo/hello", "tag": "v1"},
        request={"method": "PUT"},
        source={"instanceID": "node-1"},
        custom={"x": 1},
    )
    after = datetime.now(UTC)
    assert uuid.UUID(event.id).version == 4
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z", event.timestamp)
    assert event.time is not None and before <= event.time <= after
    assert list(event.to_dict()) == [
        "id",
        "timestamp",
        "action",
        "target",
        "request",
        "actor",
        "source",
        "custom",
    ]
    assert event.actor.to_dict() == {}
    assert (event.action, event.target.tag, event.request.method) == ("push", "v1", "PUT")
    assert event.source.instance_id == "node-1"
    assert event.to_dict()["custom"] == {"x": 1}
    assert Event.new("push").id != Event.new("push").id


def test_new_event_fields_may_be_overridden_and_are_validated() -> None:
    event = Event.new("pull", id="fixed", timestamp="2026-01-01T00:00:00Z")
    assert list(event.to_dict())[:3] == ["id", "timestamp", "action"]
    assert (event.id, event.timestamp) == ("fixed", "2026-01-01T00:00:00Z")
    with pytest.raises(TypeError, match="action must be a str, got int"):
        Event.new(1)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match=r"event\.target\.size: float nan"):
        Event.new("push", target={"size": float("nan")})


# --------------------------------------------------------------------------- malformed input


def test_media_types() -> None:
    assert MEDIA_TYPE_V1 == "application/vnd.docker.distribution.events.v1+json"
    assert MEDIA_TYPE_V2 == "application/vnd.docker.distribution.events.v2+json"
    assert frozenset({MEDIA_TYPE_V1, MEDIA_TYPE_V2}) == ENVELOPE_MEDIA_TYPES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"events":[{"a":"\xff"}]}',
            "envelope is not valid UTF-8: invalid start byte at byte 17",
        ),
        (b"", 'envelope is empty: expected a JSON object with an "events" array'),
        (
            b'{"events": [\n  {"a": 1,}\n]}',
            "envelope is not valid JSON: Expecting property name enclosed in double quotes "
            "at line 2 column 11",
        ),
        (b'{"events": []} x', "envelope is not valid JSON: Extra data at line 1 column 16"),
        (b'{"events": [{"n": NaN}]}', "envelope is not valid JSON: NaN is not a JSON number"),
        (
            b'{"events": [{"n": 1e400}]}',
            "envelope is not valid JSON: number 1e400 is out of the range of a double",
        ),
        (
            b'{"events": [{"n": ' + b"1" * 4301 + b"}]}",
            "envelope cannot be decoded: Exceeds the limit (4300 digits)",
        ),
        (b"[]", 'envelope must be a JSON object with an "events" array, got array'),
        (b'"events"', 'envelope must be a JSON object with an "events" array, got string'),
        (b"null", 'envelope must be a JSON object with an "events" array, got null'),
        (b"{}", 'envelope has no "events" member (members: none)'),
        (b'{"event": []}', 'envelope has no "events" member (members: "event")'),
        (b'{"events": {}}', 'envelope "events" must be an array, got object'),
        (b'{"events": null}', 'envelope "events" must be an array, got null'),
        (b'{"events": [{}, [], {}]}', "envelope events[1] must be an object, got array"),
        (b'{"events": [{}, {}, 3]}', "envelope events[2] must be an object, got number"),
        (b'{"events": [true]}', "envelope events[0] must be an object, got boolean"),
    ],
)
def test_malformed_envelopes_are_named(body: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(body)
    assert str(info.value).startswith(message)


def test_decode_accepts_str_bytearray_memoryview_and_a_bom() -> None:
    body = encode_envelope(sample_events()[:2])
    expected = sample_events()[:2]
    assert decode_envelope(body.decode()) == expected
    assert decode_envelope(bytearray(body)) == expected
    assert decode_envelope(memoryview(body)) == expected
    assert decode_envelope(b"\xef\xbb\xbf" + body) == expected
    with pytest.raises(TypeError, match="expects bytes or str, got dict"):
        decode_envelope({"events": []})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NDJSON


def test_ndjson_skips_blank_lines_and_splits_on_newline_only() -> None:
    text = '{"id":"a"}\r\n\n   \n{"id":"b","s":"x\u2028y\u0085z"}\n'
    events = decode_ndjson(text)
    assert [event.id for event in events] == ["a", "b"]
    assert events[1].to_dict()["s"] == "x\u2028y\u0085z"
    assert decode_ndjson("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id":"a"}\n\n{"id":}\n', "line 3: not valid JSON: Expecting value at column 7"),
        ('{"id":"a"}\n[1]', "line 2: expected a JSON object, got array"),
        ('"just a string"', "line 1: expected a JSON object, got string"),
        ('{}\n{}\n{}\n{"n": -Infinity}', "line 4: not valid JSON: -Infinity is not a JSON number"),
    ],
)
def test_ndjson_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_ndjson(text)
    assert str(info.value).startswith(message)


def test_ndjson_rejects_bytes() -> None:
    with pytest.raises(TypeError, match="expects str, got bytes"):
        decode_ndjson(b"{}")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- property


# Lone surrogates ("\ud800" escapes in a received body) have no UTF-8 form and take the encoder's
# ASCII fallback; hypothesis' text() never generates them, so they get a strategy of their own.
# A high surrogate followed by a low one is not lone: JSON reads the pair of escapes back as one
# character (test_surrogate_pairs_split_in_python_come_back_joined), so such strings are left out.
_LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
_SPLIT_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _json_objects(strings: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | strings,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4)
        ),
        max_leaves=20,
    )
    return st.dictionaries(strings, values, max_size=6)


def _check_round_trip(objects: list[dict[str, Any]]) -> None:
    events = [Event.from_dict(obj) for obj in objects]
    decoded = decode_envelope(encode_envelope(events))
    assert [_structure(event.to_dict()) for event in decoded] == [_structure(o) for o in objects]
    assert decoded == events
    # read back from a store's text, events encode to exactly the same bytes (the text is
    # reused, not encoded again)
    stored = [Event._from_text(encode_event(event)) for event in events]
    assert stored == events
    assert decode_envelope(encode_envelope(stored)) == events
    if all(encode_event(event).encode() == _utf8_text(event) for event in events):
        # byte for byte, unless an event's lone surrogates kept it escaped in the store
        assert encode_envelope(stored) == encode_envelope(events)
    assert encode_envelope([stored[0], events[-1]]) == encode_envelope([events[0], events[-1]])


def _utf8_text(event: Event) -> bytes:
    text = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "replace")


@settings(database=None, derandomize=True, max_examples=300)
@given(st.lists(_json_objects(st.text(max_size=12)), min_size=1, max_size=3))
def test_arbitrary_json_objects_survive_encode_and_decode(objects: list[dict[str, Any]]) -> None:
    _check_round_trip(objects)


@settings(database=None, derandomize=True, max_examples=100)
@given(
    st.lists(
        _json_objects(
            st.lists(st.characters() | _LONE_SURROGATES, max_size=6)
            .map("".join)
            .filter(lambda text: _SPLIT_PAIR.search(text) is None)
        ),
        min_size=1,
        max_size=3,
    )
)
def test_arbitrary_json_objects_with_lone_surrogates_survive(
    objects: list[dict[str, Any]],
) -> None:
    _check_round_trip(objects)
