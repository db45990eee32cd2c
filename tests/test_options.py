"""The option objects (rxsinks._options): each validates once, in its constructor, and the
configuration reader, the endpoint and the webhook sink all take the same object."""

from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path
from typing import Any

import pytest
import tenacity
import trustme

import rxsinks
from rxsinks import (
    TLS,
    Batching,
    Delivery,
    Event,
    Headers,
    OptionError,
    OptionTypeError,
    Secret,
    WebhookOptions,
    _options,
    exponential_wait,
)
from rxsinks._http.signing import parse_secret
from rxsinks._service.config import parse_config

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# whsec_ and base64 are right; the key is 8 bytes, which a signer must refuse
SHORT_SECRET = "whsec_c2hvcnRrZXk="


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(_options, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


# --------------------------------------------------------------------------- Secret


def test_a_secret_never_shows_itself() -> None:
    secret = Secret(SECRET)
    assert repr(secret) == "Secret(<redacted>)"
    assert str(secret) == "<redacted>"
    assert SECRET.removeprefix("whsec_") not in repr(WebhookOptions(secret=secret))
    assert secret.key == parse_secret(SECRET)


def test_a_short_key_is_refused_in_every_place_by_the_same_rule() -> None:
    # the configuration used to accept an 8-byte key that the signer refused later
    with pytest.raises(OptionError) as direct:
        Secret(SHORT_SECRET)
    with pytest.raises(ValueError) as signer:
        parse_secret(SHORT_SECRET)
    with pytest.raises(rxsinks.ConfigErrors) as config:
        parse_config(
            {
                "notifications": {
                    "endpoints": [{"name": "a", "url": "http://h/", "secret": SHORT_SECRET}]
                }
            }
        )
    assert direct.value.argument == "secret"
    assert str(signer.value) == str(direct.value)
    (problem,) = config.value.problems
    assert (problem.path, problem.detail) == (
        "notifications.endpoints[0].secret",
        direct.value.reason,
    )
    assert "the key is 8 bytes" in direct.value.reason


@pytest.mark.parametrize("text", ["s3cr3t", "whsec_!!", 42])
def test_a_bad_secret_is_refused_without_being_echoed(text: object) -> None:
    with pytest.raises(OptionError) as info:
        Secret(text)  # type: ignore[arg-type]
    assert info.value.argument == "secret"
    if isinstance(text, str):
        assert text.removeprefix("whsec_") not in str(info.value)
    assert isinstance(info.value, TypeError) is (not isinstance(text, str))


# --------------------------------------------------------------------------- Headers


def test_headers_keep_order_and_values_and_know_their_secrets() -> None:
    headers = Headers({"X-Api-Key": ["k1", "k2"], "X-Plain": "one"}, secret=["x-api-key"])
    assert headers.items == (("X-Api-Key", "k1"), ("X-Api-Key", "k2"), ("X-Plain", "one"))
    assert headers.is_secret("X-API-KEY") and headers.is_secret("cookie")
    assert not headers.is_secret("X-Plain")
    assert headers.redacted() == {"X-Api-Key": ["<redacted>", "<redacted>"], "X-Plain": ["one"]}
    assert "k1" not in repr(headers)
    assert headers == Headers({"X-Api-Key": ["k1", "k2"], "X-Plain": "one"}, secret=["X-Api-Key"])


@pytest.mark.parametrize(
    ("headers", "secret", "argument", "fragment"),
    [
        ({"Bad Name": "x"}, (), "headers", "not a valid header name"),
        ({"X": "a\nb"}, (), "headers", "line breaks or control characters"),
        ({"Content-Length": "1"}, (), "headers", "set by the sink itself"),
        ({}, ["bad name"], "secret_headers", "not a valid header name"),
    ],
)
def test_a_bad_header_names_its_argument(
    headers: dict[str, Any], secret: list[str], argument: str, fragment: str
) -> None:
    with pytest.raises(OptionError) as info:
        Headers(headers, secret=secret)
    assert info.value.argument == argument
    assert fragment in info.value.reason


# --------------------------------------------------------------------------- TLS


def test_tls_reads_its_files_once_when_built(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = TLS(ca_file=ca_file)
    assert tls.ca_file == str(ca_file)
    context = tls.context
    assert not isinstance(context, bool)
    ca_file.unlink()  # already read: the object keeps working
    assert tls.context is context
    assert TLS().context is True and TLS(verify=False).context is False
    assert not TLS().configured and tls.configured


def test_tls_errors_name_the_argument_and_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    with pytest.raises(OptionError) as info:
        TLS(cert_file=garbage)
    assert info.value.argument == "cert_file"
    assert "garbage.pem" in info.value.reason
    with pytest.raises(OptionTypeError) as typed:
        TLS(verify="no")  # type: ignore[arg-type]
    assert typed.value.argument == "verify"


# --------------------------------------------------------------------------- WebhookOptions


def test_webhook_options_coerce_and_validate_once() -> None:
    options = WebhookOptions(
        headers={"X-A": "1"},
        content_type="v2",
        secret=SECRET,
        redirects="NONE",
        permanent_statuses=[422, 400, 422],
    )
    assert options.headers == Headers({"X-A": "1"})
    assert options.content_type == rxsinks.MEDIA_TYPE_V2
    assert options.secret == Secret(SECRET)
    assert options.redirects == "none"
    assert options.permanent_statuses == {400, 422}
    assert options.tls == TLS()
    # frozen and comparable: the same settings are the same options
    assert options == dataclasses.replace(options)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.timeout = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("keywords", "argument"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": "1s"}, "timeout"),
        ({"content_type": "json"}, "content_type"),
        ({"redirects": "all"}, "redirects"),
        ({"permanent_statuses": [200]}, "permanent_statuses"),
        ({"retry_after_cap": float("nan")}, "retry_after_cap"),
        ({"secret": SECRET, "headers": {"webhook-id": "x"}}, "headers"),
        ({"tls": "yes"}, "tls"),
    ],
)
def test_webhook_options_name_the_wrong_one(keywords: dict[str, Any], argument: str) -> None:
    with pytest.raises(OptionError) as info:
        WebhookOptions(**keywords)
    assert info.value.argument == argument


# --------------------------------------------------------------------------- Batching, Delivery


def test_batching_checks_its_figures() -> None:
    assert Batching() == Batching(max_events=1, max_delay=0.0)
    with pytest.raises(OptionError, match="max_events: expected an int >= 1, got 0"):
        Batching(max_events=0)
    with pytest.raises(OptionError, match="max_delay"):
        Batching(max_delay=-1)


def event(repository: str, **target: Any) -> Event:
    return Event.new("push", target={"repository": repository, **target})


def test_delivery_keys_by_repository_by_default_when_concurrent() -> None:
    assert Delivery().key() is None  # one block in flight: nothing to order by
    assert Delivery(4, "none").key() is None  # unordered on purpose
    key = Delivery(4).key()
    assert key is not None
    # a block's key is its first event's repository
    assert key((event("a/b"), event("c/d"))) == "a/b"
    assert key(()) == ""


def test_delivery_keys_by_a_json_pointer() -> None:
    key = Delivery(2, "/target/digest").key()
    assert key is not None
    assert key((event("a", digest="sha256:1"),)) == "sha256:1"
    assert key((event("a"),)) is None  # no value: such events share one key
    # RFC 6901 escapes, list indexes and structured values
    weird = Event.from_dict({"target": {"a/b": {"m~n": [{"x": 1}, {"y": [2, 3]}]}}})
    assert Delivery(2, "/target/a~1b/m~0n/1").key()((weird,)) == '{"y": [2, 3]}'  # type: ignore[misc]
    assert Delivery(2, "/target/a~1b/m~0n/7").key()((weird,)) is None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("keywords", "argument"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"order_by": "tag"}, "order_by"),
        ({"order_by": "/a/~x"}, "order_by"),
        ({"delay": -1.0}, "delay"),
        ({"delay": float("inf")}, "delay"),
    ],
)
def test_delivery_names_the_wrong_value(keywords: dict[str, Any], argument: str) -> None:
    with pytest.raises(OptionError) as info:
        Delivery(**keywords)
    assert info.value.argument == argument


# --------------------------------------------------------------------------- exponential_wait


def waits(wait: tenacity.wait.wait_base, attempts: int) -> list[float]:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    bounds = []
    for attempt in range(1, attempts + 1):
        state.attempt_number = attempt
        bounds.append(wait(state))
    return bounds


def test_exponential_wait_is_go_events_bound_and_never_overflows() -> None:
    assert waits(exponential_wait(), 7) == [2, 3, 5, 9, 17, 20, 20]
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = 5000  # 2**4999 seconds do not fit in a float
    assert exponential_wait(1, 1, 20)(state) == 20
    assert repr(exponential_wait(1, 0.5, 30)) == "exponential_wait(1, 0.5, 30)"
