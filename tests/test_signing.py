"""Standard Webhooks signing, checked against the spec's test vector and the reference package."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from rxsinks._http.signing import (
    MIN_KEY_BYTES,
    message_id,
    parse_secret,
    sign,
    signature_headers,
)

# The Standard Webhooks specification's test vector, checked with the standardwebhooks package.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_test_vector() -> None:
    assert sign(parse_secret(SECRET), MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_signature_headers_match_the_test_vector() -> None:
    headers = signature_headers(parse_secret(SECRET), MSG_ID, BODY, timestamp=TIMESTAMP)
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }


def test_signature_headers_use_the_current_time_by_default() -> None:
    before = int(time.time())
    headers = signature_headers(parse_secret(SECRET), MSG_ID, BODY)
    after = int(time.time())
    assert before <= int(headers["webhook-timestamp"]) <= after
    # and the reference implementation accepts them (it checks the timestamp too)
    assert Webhook(SECRET).verify(BODY, headers) == {"test": 2432232314}


def test_a_signature_does_not_verify_for_another_body() -> None:
    headers = signature_headers(parse_secret(SECRET), MSG_ID, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"test": 2432232315}', headers)


@given(
    key=st.binary(min_size=MIN_KEY_BYTES, max_size=64),
    msg_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    body=st.text(),
)
def test_the_reference_package_verifies_every_signature(key: bytes, msg_id: str, body: str) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    assert parse_secret(secret) == key
    data = body.encode("utf-8")  # the reference package verifies text bodies only
    headers = signature_headers(key, msg_id, data)
    Webhook(secret).verify(data, headers, json_parse=False)


def test_parse_secret_accepts_unpadded_base64() -> None:
    key = bytes(range(25))  # base64 of 25 bytes ends with "=="
    padded = base64.b64encode(key).decode()
    assert padded.endswith("==")
    assert parse_secret("whsec_" + padded.rstrip("=")) == key
    assert parse_secret("whsec_" + padded) == key


@pytest.mark.parametrize(
    ("secret", "error", "message"),
    [
        (b"whsec_abc", TypeError, "expected a str"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ValueError, "expected whsec_ followed by"),
        ("whsec_not base64!!", ValueError, "not valid base64"),
        ("whsec_", ValueError, "the key is 0 bytes"),
        ("whsec_" + base64.b64encode(b"short").decode(), ValueError, "the key is 5 bytes"),
    ],
)
def test_parse_secret_rejects_bad_secrets(
    secret: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        parse_secret(secret)  # type: ignore[arg-type]
    if isinstance(secret, str) and len(secret) > len("whsec_"):
        assert secret[len("whsec_") :] not in str(info.value)


def test_message_id_of_one_event_is_its_id() -> None:
    assert message_id(["45e1b4e6-aaaa"]) == "45e1b4e6-aaaa"


def test_message_id_of_a_block_is_stable_and_depends_on_every_id_in_order() -> None:
    block = message_id(["a", "b", "c"])
    assert block.startswith("blk_")
    assert len(block) == len("blk_") + 32
    assert message_id(["a", "b", "c"]) == block
    assert message_id(["a", "c", "b"]) != block
    assert message_id(["a", "b"]) != block


def test_message_id_without_event_ids_hashes_the_body() -> None:
    first = message_id([""], b'{"events":[{"action":"push"}]}')
    second = message_id([""], b'{"events":[{"action":"pull"}]}')
    assert first.startswith("blk_")
    assert first != second
    assert message_id(["a", ""], b"x") == message_id([""], b"x")
    assert message_id([], b"x") != message_id([], b"y")
