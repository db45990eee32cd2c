"""The webhook sink against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import reactivex
import trustme
from reactivex import operators as ops
from standardwebhooks import Webhook

from rxsinks._deliver import deliver
from rxsinks._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event, encode_envelope
from rxsinks._exceptions import (
    SINK_CLOSED,
    DeliveryError,
    EndpointDisabledError,
    PermanentDeliveryError,
    WebhookStatusError,
)
from rxsinks._http.sink import MAX_REDIRECTS, Attempt, WebhookSink, parse_retry_after
from rxsinks._retry import retry_with_breaker
from rxsinks._sinks import CallbackSink
from tests.conftest import MakeReceiver, Receiver
from tests.webhooks import open_sessions, webhook_sink

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# A host name that cannot resolve and never leaves the machine: at 312 characters it is over
# DNS's 255-octet limit, so the resolver library fails before building a query.
UNRESOLVABLE = ".".join(["a" * 60] * 5) + ".invalid"


def make_events(count: int) -> tuple[Event, ...]:
    return tuple(
        Event.new(
            "push",
            target={"mediaType": "application/vnd.oci.image.manifest.v1+json", "tag": f"v{i}"},
        )
        for i in range(count)
    )


class Tally:
    """The registry's endpoint counters, kept from the sink's attempts (every counter counts
    events)."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.successes = 0
        self.failures = 0
        self.errors = 0
        self.statuses: Counter[str] = Counter()

    def __call__(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if attempt.status is None:
            self.errors += attempt.events
            return
        assert attempt.status_text is not None
        self.statuses[attempt.status_text] += attempt.events
        if attempt.ok:
            self.successes += attempt.events
        else:
            self.failures += attempt.events


MakeSink = Callable[..., WebhookSink]


@pytest.fixture
async def make_sink(make_receiver: MakeReceiver) -> AsyncIterator[MakeSink]:
    """Build sinks that are closed when the test ends (before the receivers stop)."""
    sinks: list[WebhookSink] = []

    def make(url: str, **options: Any) -> WebhookSink:
        sink = webhook_sink(url, **options)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.aclose()
        assert not sink._transport.open  # its connection pool is closed


async def settle(sink: WebhookSink, block: Any) -> BaseException | None:
    """Deliver ``block`` once through the sink contract; the error it raised, or None."""
    try:
        await sink.deliver(block)
    except Exception as exc:
        return exc
    return None


# --------------------------------------------------------------------------- reference table


async def test_reference_http_table(
    receiver: Receiver, closing_listener: str, make_sink: MakeSink
) -> None:
    tally = Tally()
    sink = make_sink(receiver.url(), on_attempt=tally)
    receiver.answer_next(200, 200, 307, 400)

    await sink.send(make_events(1))
    assert (tally.successes, tally.statuses) == (1, {"200 OK": 1})

    await sink.send(make_events(3))
    assert (tally.successes, tally.statuses) == (4, {"200 OK": 4})

    attempt = await sink.send(make_events(1))  # a bare 307: no Location, a success
    assert attempt.status_text == "307 Temporary Redirect"
    assert tally.successes == 5
    assert tally.statuses["307 Temporary Redirect"] == 1

    with pytest.raises(WebhookStatusError) as info:
        await sink.send(make_events(1))
    assert info.value.status == 400
    assert tally.failures == 1
    assert tally.statuses["400 Bad Request"] == 1
    assert len(receiver.events) == 4

    closing = make_sink(closing_listener, on_attempt=tally)
    with pytest.raises(DeliveryError) as info_closed:
        await closing.send(make_events(1))
    assert not isinstance(info_closed.value, WebhookStatusError)
    assert "closed the connection" in str(info_closed.value)
    assert tally.errors == 1
    assert tally.attempts[-1].status is None
    assert sum(tally.statuses.values()) == 6  # no status key for an attempt with no answer

    unresolvable = make_sink(f"http://{UNRESOLVABLE}/hook", on_attempt=tally)
    with pytest.raises(DeliveryError, match="cannot resolve host") as info_dns:
        await unresolvable.send(make_events(1))
    assert info_dns.value.__cause__ is not None
    assert tally.errors == 2


async def test_the_receiver_sees_the_exact_envelope_with_the_media_type(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    block = make_events(3)
    sink = make_sink(receiver.url())
    await sink.send(block)
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.body == encode_envelope(block)
    assert request.headers["Content-Type"] == MEDIA_TYPE_V1
    assert request.headers["User-Agent"].startswith("rxsinks")
    assert [event.raw for event in receiver.events] == [event.raw for event in block]


async def test_content_type_is_configurable(receiver: Receiver, make_sink: MakeSink) -> None:
    await make_sink(receiver.url(), content_type=MEDIA_TYPE_V2).send(make_events(1))
    assert receiver.requests[-1].headers["Content-Type"] == MEDIA_TYPE_V2
    with pytest.raises(WebhookStatusError) as info:
        await make_sink(receiver.url(), content_type="text/plain").send(make_events(1))
    assert info.value.status == 415
    assert receiver.requests[-1].headers["Content-Type"] == "text/plain"


async def test_attempt_reports_the_answer(receiver: Receiver, make_sink: MakeSink) -> None:
    attempts: list[Attempt] = []
    url = receiver.url()
    attempt = await make_sink(url, on_attempt=attempts.append).send(make_events(2))
    assert attempts == [attempt]
    assert (attempt.events, attempt.status, attempt.reason) == (2, 200, "OK")
    assert attempt.ok and attempt.error is None
    assert attempt.url == url
    assert attempt.duration >= 0


async def test_failed_answers_keep_the_start_of_the_body_in_a_note(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    with pytest.raises(WebhookStatusError) as info:
        await make_sink(receiver.url(status=500)).send(make_events(1))
    assert any("rejected with 500" in note for note in info.value.__notes__)
    # the default name is the URL as shown: query values hidden
    assert info.value.endpoint == receiver.url(status=500).replace("=500", "=***")
    assert len(info.value.events) == 1


# --------------------------------------------------------------------------- transport errors


async def test_connection_refused_is_a_delivery_error(make_sink: MakeSink) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts: list[Attempt] = []
    sink = make_sink(f"http://127.0.0.1:{port}/hook", on_attempt=attempts.append)
    with pytest.raises(
        DeliveryError, match=rf"cannot connect to 127\.0\.0\.1:{port}: Connection refused"
    ) as info:
        await sink.send(make_events(1))
    assert isinstance(info.value.__cause__, OSError)
    assert attempts[0].status is None
    assert attempts[0].error is info.value


async def test_timeout_is_a_delivery_error(receiver: Receiver, make_sink: MakeSink) -> None:
    sink = make_sink(receiver.url(hang=1), timeout=0.2)
    with pytest.raises(DeliveryError, match=r"no response within the 0\.2 s timeout") as info:
        await sink.send(make_events(1))
    assert isinstance(info.value.__cause__, TimeoutError)
    assert not isinstance(info.value, WebhookStatusError)


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", [307, 308])
async def test_307_and_308_are_followed_with_the_same_body(
    receiver: Receiver, make_sink: MakeSink, status: int
) -> None:
    final = receiver.url("/moved")
    block = make_events(2)
    sink = make_sink(receiver.url(status=status, location=final), headers={"X-Trace": "t1"})
    attempt = await sink.send(block)
    assert (attempt.status, attempt.url) == (200, final)
    first, second = receiver.requests
    assert (first.method, second.method) == ("POST", "POST")
    assert second.path == "/moved"
    assert first.body == second.body == encode_envelope(block)
    assert second.headers["X-Trace"] == "t1"
    assert second.headers["Content-Type"] == MEDIA_TYPE_V1


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_301_302_303_are_failures_never_a_get(
    receiver: Receiver, make_sink: MakeSink, status: int
) -> None:
    attempts: list[Attempt] = []
    sink = make_sink(
        receiver.url(status=status, location=receiver.url("/moved")), on_attempt=attempts.append
    )
    with pytest.raises(WebhookStatusError) as info:
        await sink.send(make_events(1))
    assert info.value.status == status
    assert any("GET" in note for note in info.value.__notes__)
    assert len(receiver.requests) == 1
    assert attempts[0].status == status


async def test_a_3xx_without_location_is_a_success(receiver: Receiver, make_sink: MakeSink) -> None:
    attempt = await make_sink(receiver.url(status=303)).send(make_events(1))
    assert attempt.status_text == "303 See Other"


async def test_redirects_none_follows_nothing_and_counts_3xx_as_success(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.url(status=301, location="/moved"), redirects="none")
    attempt = await sink.send(make_events(1))
    assert attempt.status == 301
    assert len(receiver.requests) == 1


async def test_a_redirect_loop_stops_after_max_redirects(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    with pytest.raises(WebhookStatusError, match="307") as info:
        await make_sink(receiver.url(status=307, location=".")).send(make_events(1))
    assert any(f"stopped after {MAX_REDIRECTS} redirects" in n for n in info.value.__notes__)
    assert len(receiver.requests) == MAX_REDIRECTS + 1


async def test_a_redirect_to_a_dead_listener_reports_that_url(
    receiver: Receiver, closing_listener: str, make_sink: MakeSink
) -> None:
    attempts: list[Attempt] = []
    sink = make_sink(
        receiver.url(status=307, location=closing_listener), on_attempt=attempts.append
    )
    with pytest.raises(DeliveryError, match="closed the connection"):
        await sink.send(make_events(1))
    assert (attempts[0].status, attempts[0].url) == (None, closing_listener)


async def test_a_redirect_to_another_scheme_is_a_failure(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    with pytest.raises(WebhookStatusError) as info:
        await make_sink(receiver.url(status=308, location="ftp://127.0.0.1/x")).send(make_events(1))
    assert info.value.status == 308
    assert any("not an http(s) URL" in note for note in info.value.__notes__)


async def test_credentials_do_not_follow_a_redirect_to_another_origin(
    make_receiver: MakeReceiver, make_sink: MakeSink
) -> None:
    first, other = await make_receiver(), await make_receiver()
    sink = make_sink(
        first.url(status=307, location=other.url("/elsewhere")),
        headers={"Authorization": "Bearer s3cr3t", "X-Api-Key": "k3y", "X-Trace": "t1"},
        secret_headers=["X-Api-Key"],
        secret=SECRET,
    )
    await sink.send(make_events(1))
    [sent], [forwarded] = first.requests, other.requests
    assert sent.headers["Authorization"] == "Bearer s3cr3t"
    assert sent.headers["X-Api-Key"] == "k3y"
    assert "Authorization" not in forwarded.headers
    assert "X-Api-Key" not in forwarded.headers
    assert forwarded.headers["X-Trace"] == "t1"
    Webhook(SECRET).verify(forwarded.body, dict(forwarded.headers))


async def test_credentials_follow_a_redirect_on_the_same_origin(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(
        receiver.url(status=308, location="/moved"), headers={"Authorization": "Bearer s3cr3t"}
    )
    await sink.send(make_events(1))
    assert [r.headers.get("Authorization") for r in receiver.requests] == ["Bearer s3cr3t"] * 2


# --------------------------------------------------------------------------- Retry-After, 410


async def test_retry_after_seconds_on_429(receiver: Receiver, make_sink: MakeSink) -> None:
    with pytest.raises(WebhookStatusError) as info:
        await make_sink(receiver.url(status=429, retry_after=7)).send(make_events(1))
    assert (info.value.status, info.value.retry_after) == (429, 7.0)


async def test_retry_after_http_date_on_503(receiver: Receiver, make_sink: MakeSink) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    with pytest.raises(WebhookStatusError) as info:
        await make_sink(receiver.url(status=503, retry_after=when)).send(make_events(1))
    assert info.value.retry_after is not None
    # the date has whole seconds, so up to one second less than asked for
    assert 100.0 < info.value.retry_after <= 120.0


async def test_retry_after_is_capped(receiver: Receiver, make_sink: MakeSink) -> None:
    sink = make_sink(receiver.url(status=429, retry_after=86400), retry_after_cap=30)
    with pytest.raises(WebhookStatusError) as info:
        await sink.send(make_events(1))
    assert info.value.retry_after == 30.0


@pytest.mark.parametrize(("status", "value"), [(500, "7"), (429, "soon"), (503, "-3")])
async def test_retry_after_is_ignored_when_it_does_not_apply(
    receiver: Receiver, make_sink: MakeSink, status: int, value: str
) -> None:
    with pytest.raises(WebhookStatusError) as info:
        await make_sink(receiver.url(status=status, retry_after=value)).send(make_events(1))
    assert info.value.status == status
    assert info.value.retry_after is None


def test_parse_retry_after() -> None:
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 42 ") == 42.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now=now) == 60.0  # RFC 850
    assert parse_retry_after("Wed, 21 Oct 2015 07:26:00 GMT", now=now) == 0.0  # in the past
    assert parse_retry_after("1.5") is None
    assert parse_retry_after("") is None


async def test_410_disables_the_sink(
    receiver: Receiver, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(receiver.url(status=410))
    with caplog.at_level(logging.DEBUG, logger="rxsinks"):
        with pytest.raises(EndpointDisabledError) as info:
            await sink.send(make_events(1))
        assert info.value.status == 410
        assert sink.disabled
        assert sink.disabled_reason is not None and "410 Gone" in sink.disabled_reason

        with pytest.raises(EndpointDisabledError):
            await sink.send(make_events(1))
        assert isinstance(await settle(sink, make_events(2)), EndpointDisabledError)
        CallbackSink(sink.deliver).on_next(make_events(1))  # fire and forget: no 2nd warning
        await asyncio.sleep(0)
    assert len(receiver.requests) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "disabled" in warnings[0].getMessage()
    assert "disabled=True" in repr(sink)


async def test_permanent_statuses(receiver: Receiver, make_sink: MakeSink) -> None:
    sink = make_sink(receiver.url(), permanent_statuses={422})
    receiver.answer_next(422, 404)
    with pytest.raises(PermanentDeliveryError) as info:
        await sink.send(make_events(1))
    assert info.value.status == 422
    assert not isinstance(info.value, WebhookStatusError)
    with pytest.raises(WebhookStatusError) as other:
        await sink.send(make_events(1))
    assert other.value.status == 404
    assert not sink.disabled


# --------------------------------------------------------------------------- headers


async def test_headers_are_appended(receiver: Receiver, make_sink: MakeSink) -> None:
    sink = make_sink(
        receiver.url(),
        headers={"X-Multi": ["a", "b"], "Authorization": ["Bearer x"], "X-Plain": "p"},
    )
    await sink.send(make_events(1))
    headers = receiver.requests[0].headers
    assert headers.getall("X-Multi") == ["a", "b"]
    assert headers["Authorization"] == "Bearer x"
    assert headers["X-Plain"] == "p"


async def test_credentials_never_appear_in_repr_logs_or_errors(
    receiver: Receiver, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = ["Bearer-t0ken-1", "k3y-value-2", "hunter2-pw", SECRET[len("whsec_") :]]
    sink = make_sink(
        receiver.url(status=500),
        headers={"Authorization": "Bearer-t0ken-1", "X-Api-Key": ["k3y-value-2"], "X-Ok": "fine"},
        secret_headers=("x-api-key",),
        secret=SECRET,
    )
    in_url = make_sink(receiver.url(status=500).replace("http://", "http://alice:hunter2-pw@"))
    errors: list[BaseException | None] = []
    with caplog.at_level(logging.DEBUG, logger="rxsinks"):
        errors.append(await settle(sink, make_events(1)))
        errors.append(await settle(in_url, make_events(1)))
        fire = [CallbackSink(sink.deliver), CallbackSink(in_url.deliver)]
        for forget in fire:  # fire and forget: the failures are logged
            forget.on_next(make_events(2))
        await asyncio.sleep(0)
        for _ in range(200):
            if not any(forget.pending for forget in fire):
                break
            await asyncio.sleep(0.01)
        await sink.aclose()
        await in_url.aclose()
    assert len(receiver.requests) == 4
    assert receiver.requests[0].headers["Authorization"] == "Bearer-t0ken-1"
    assert receiver.requests[1].headers["Authorization"].startswith("Basic ")
    assert caplog.text.count("500 Internal Server Error") >= 2  # the failures were logged...
    assert "fine" in repr(sink)
    texts = [repr(sink), repr(in_url), in_url.url, caplog.text]
    for error in errors:
        assert isinstance(error, WebhookStatusError)
        texts += [str(error), error.url, error.endpoint, *error.__notes__]
    for text in texts:
        for secret in secrets:
            assert secret not in text  # ...without a credential


def test_credentials_in_the_url_and_an_authorization_header_clash() -> None:
    with pytest.raises(ValueError, match="keep one"):
        webhook_sink("http://u:p@127.0.0.1/", headers={"Authorization": "Bearer x"})


# --------------------------------------------------------------------------- connections


async def test_sequential_posts_reuse_one_connection(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.url())
    for _ in range(5):
        await sink.send(make_events(1))
    assert len(receiver.requests) == 5
    assert receiver.connections == 1


async def test_each_sink_has_its_own_pool_of_keep_alive_connections(
    receiver: Receiver,
) -> None:
    first, second = WebhookSink(receiver.url()), WebhookSink(receiver.url(path="/other"))
    for _ in range(3):
        await first.send(make_events(1))
        await second.send(make_events(1))
    # one connection per sink, each kept alive across its three POSTs: no sharing, no reconnect
    assert receiver.connections == 2
    first_connections = {id(r.connection) for r in receiver.requests if r.path == "/hook"}
    second_connections = {id(r.connection) for r in receiver.requests if r.path == "/other"}
    assert len(first_connections) == len(second_connections) == 1
    assert first_connections != second_connections
    await first.aclose()
    await second.send(make_events(1))  # closing one sink leaves the other's pool alone
    await second.aclose()
    assert len(receiver.requests) == 7


async def test_a_pool_is_sized_to_the_connections_given(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url(delay=0.2), connections=2)
    assert sink.connections == 2
    await asyncio.gather(*(sink.send(make_events(1)) for _ in range(4)))
    # four POSTs at once through a pool of two: never more than two connections opened
    assert receiver.connections == 2
    await sink.aclose()


async def test_close_is_idempotent_and_later_writes_fail_with_sink_closed(
    receiver: Receiver,
) -> None:
    sink = WebhookSink(receiver.url())
    await sink.send(make_events(1))
    await sink.aclose()
    await sink.aclose()
    assert sink.closed
    with pytest.raises(type(SINK_CLOSED)) as info:
        await sink.send(make_events(1))
    assert info.value is SINK_CLOSED
    assert await settle(sink, make_events(1)) is SINK_CLOSED
    assert len(receiver.requests) == 1


async def test_closing_an_unused_sink_needs_no_loop_work() -> None:
    sink = WebhookSink("http://127.0.0.1:9/hook")
    await sink.aclose()
    assert sink.closed


# --------------------------------------------------------------------------- signatures


async def test_every_request_is_signed(receiver: Receiver, make_sink: MakeSink) -> None:
    sink = make_sink(receiver.url(), secret=SECRET)
    single, block = make_events(1), make_events(3)
    await sink.send(single)
    await sink.send(block)
    for request in receiver.requests:
        Webhook(SECRET).verify(request.body, dict(request.headers))
    assert receiver.requests[0].headers["webhook-id"] == single[0].id
    assert receiver.requests[1].headers["webhook-id"].startswith("blk_")


async def test_a_retried_block_keeps_its_webhook_id(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    block = make_events(3)
    receiver.answer_next(500)
    sink = make_sink(receiver.url(), secret=SECRET)
    with pytest.raises(WebhookStatusError):
        await sink.send(block)
    await sink.send(block)
    await make_sink(receiver.url(), secret=SECRET).send(block)  # after a restart
    ids = {request.headers["webhook-id"] for request in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1
    for request in receiver.requests:
        Webhook(SECRET).verify(request.body, dict(request.headers))


async def test_unsigned_sinks_send_no_signature(receiver: Receiver, make_sink: MakeSink) -> None:
    await make_sink(receiver.url()).send(make_events(1))
    assert "webhook-signature" not in receiver.requests[0].headers


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def client_files(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    """A client certificate and its key, in two files."""
    leaf = ca.issue_cert("webhook-client@example.org")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def server_context(ca: trustme.CA, *, client_certificates: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_certificates:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def test_tls_with_an_unknown_ca_fails_with_a_certificate_error(
    ca: trustme.CA, make_receiver: MakeReceiver, make_sink: MakeSink
) -> None:
    receiver = await make_receiver(ssl=server_context(ca))
    with pytest.raises(DeliveryError, match="certificate verif") as info:
        await make_sink(receiver.url()).send(make_events(1))
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert receiver.requests == []


async def test_tls_with_ca_file_succeeds(
    ca: trustme.CA, ca_file: str, make_receiver: MakeReceiver, make_sink: MakeSink
) -> None:
    receiver = await make_receiver(ssl=server_context(ca))
    assert receiver.url().startswith("https://")
    sink = make_sink(receiver.url(), ca_file=ca_file)
    await sink.send(make_events(1))
    await sink.send(make_events(1))
    assert len(receiver.events) == 2
    assert receiver.connections == 1
    assert receiver.requests[0].peercert is None


async def test_tls_without_verification_succeeds_and_warns(
    ca: trustme.CA,
    make_receiver: MakeReceiver,
    make_sink: MakeSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = await make_receiver(ssl=server_context(ca))
    with caplog.at_level(logging.WARNING, logger="rxsinks"):
        sink = make_sink(receiver.url(), verify_tls=False)
    assert "verification is disabled" in caplog.text
    await sink.send(make_events(1))
    assert len(receiver.events) == 1


async def test_tls_client_certificate_is_presented(
    ca: trustme.CA,
    ca_file: str,
    client_files: tuple[str, str],
    make_receiver: MakeReceiver,
    make_sink: MakeSink,
) -> None:
    receiver = await make_receiver(ssl=server_context(ca, client_certificates=True))
    cert_file, key_file = client_files
    sink = make_sink(receiver.url(), ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    await sink.send(make_events(1))
    peer = receiver.requests[0].peercert
    assert peer is not None
    assert ("email", "webhook-client@example.org") in peer["subjectAltName"]  # type: ignore[operator]

    without = make_sink(receiver.url(), ca_file=ca_file)
    with pytest.raises(DeliveryError):
        await without.send(make_events(1))
    assert len(receiver.requests) == 1


async def test_tls_client_certificate_with_key_in_the_same_file(
    ca: trustme.CA,
    ca_file: str,
    make_receiver: MakeReceiver,
    make_sink: MakeSink,
    tmp_path: Path,
) -> None:
    receiver = await make_receiver(ssl=server_context(ca, client_certificates=True))
    both = tmp_path / "client-and-key.pem"
    ca.issue_cert("other-client@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(both)
    )
    await make_sink(receiver.url(), ca_file=ca_file, cert_file=str(both)).send(make_events(1))
    assert receiver.requests[0].peercert is not None


def test_bad_tls_files_are_named(
    tmp_path: Path, ca: trustme.CA, ca_file: str, client_files: tuple[str, str]
) -> None:
    missing = str(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert_file, key_file = client_files
    other_key = tmp_path / "other.key"
    ca.issue_cert("someone@example.org").private_key_pem.write_to_path(str(other_key))

    with pytest.raises(ValueError, match=re.escape(f"ca_file: '{missing}': no such file")):
        webhook_sink("https://127.0.0.1/", ca_file=missing)
    with pytest.raises(ValueError, match=r"ca_file: .*garbage\.pem.*not a PEM"):
        webhook_sink("https://127.0.0.1/", ca_file=str(garbage))
    with pytest.raises(ValueError, match=r"cert_file: .*garbage\.pem"):
        webhook_sink("https://127.0.0.1/", cert_file=str(garbage))
    with pytest.raises(ValueError, match=r"key_file .*other\.key"):
        webhook_sink("https://127.0.0.1/", cert_file=cert_file, key_file=str(other_key))
    with pytest.raises(ValueError, match="key_file: given without cert_file"):
        webhook_sink("https://127.0.0.1/", key_file=key_file)
    with pytest.raises(ValueError, match="not a regular file"):
        webhook_sink("https://127.0.0.1/", ca_file=str(tmp_path))
    with pytest.raises(ValueError, match="ca_file: has no effect without verification"):
        webhook_sink("https://127.0.0.1/", ca_file=ca_file, verify_tls=False)


# --------------------------------------------------------------------------- the sink contract


async def test_deliver_returns_the_attempt_or_raises_why_not(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.url())
    attempt = await sink.deliver(make_events(2))
    assert attempt.ok and attempt.status == 200 and attempt.events == 2
    receiver.answer_next(500)
    error = await settle(sink, make_events(1))
    assert isinstance(error, WebhookStatusError) and error.status == 500
    assert sink.in_flight == 0
    assert len(receiver.events) == 2


async def test_aclose_waits_for_the_deliveries_running(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.url(delay=0.05))
    running = asyncio.ensure_future(sink.deliver(make_events(3)))
    await asyncio.sleep(0.01)
    assert sink.in_flight == 3
    await sink.aclose()  # waits for it
    assert running.done() and running.result().ok
    assert len(receiver.events) == 3
    assert await settle(sink, make_events(1)) is SINK_CLOSED


async def test_an_empty_block_is_delivered_at_once_without_a_request(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    attempt = await make_sink(receiver.url()).deliver(())
    assert attempt.events == 0
    assert receiver.requests == []


async def test_a_block_that_is_not_a_sequence_of_events_is_permanent(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.url())
    assert isinstance(await settle(sink, 42), PermanentDeliveryError)
    assert isinstance(await settle(sink, [{"id": "not an Event"}]), PermanentDeliveryError)
    assert isinstance(await settle(sink, "abc"), PermanentDeliveryError)
    assert receiver.requests == []


async def test_a_delivery_stage_retries_the_webhook_and_records_its_status(
    receiver: Receiver, make_sink: MakeSink
) -> None:
    sink = make_sink(receiver.url())
    receiver.answer_next(503, 202)
    outcomes = await reactivex.of(make_events(1)).pipe(
        deliver(sink.deliver, retry=retry_with_breaker(threshold=0)), ops.to_list()
    )
    assert [(o.kind.value, o.status) for o in outcomes] == [("failed", 503), ("delivered", 202)]
    assert len(receiver.requests) == 2


async def test_fire_and_forget_through_a_callback_sink_logs_failures(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    delivered = WebhookSink(receiver.url())
    refused = WebhookSink(receiver.url(status=500))
    with caplog.at_level(logging.WARNING, logger="rxsinks"):
        fine, failing = CallbackSink(delivered.deliver), CallbackSink(refused.deliver)
        reactivex.from_iterable([make_events(1), make_events(2)]).subscribe(fine)
        reactivex.from_iterable([make_events(1), make_events(2)]).subscribe(failing)
        for _ in range(200):
            if len(receiver.requests) == 4 and not fine.pending and not failing.pending:
                break
            await asyncio.sleep(0.01)
        await delivered.aclose()
        await refused.aclose()
    assert len(receiver.requests) == 4
    assert len(receiver.events) == 3
    failures = [r.getMessage() for r in caplog.records if "callback sink" in r.getMessage()]
    assert len(failures) == 2
    assert all("500 Internal Server Error" in failure for failure in failures)


async def test_an_on_attempt_callback_that_raises_is_logged(
    receiver: Receiver, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Attempt) -> None:
        raise RuntimeError("metrics broke")

    with caplog.at_level(logging.ERROR, logger="rxsinks"):
        attempt = await make_sink(receiver.url(), on_attempt=broken).send(make_events(1))
    assert attempt.ok
    assert "on_attempt callback raised" in caplog.text


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"url": 42}, TypeError, "url: expected a str"),
        ({"url": "ftp://127.0.0.1/"}, ValueError, "url: expected an http:// or https:// URL"),
        ({"url": "http://"}, ValueError, "url: expected .* with a host"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"timeout": 0}, ValueError, "timeout: expected a finite number of seconds > 0"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": "1s"}, TypeError, "timeout: expected a number"),
        ({"timeout": True}, TypeError, "timeout: expected a number"),
        ({"content_type": ""}, ValueError, "content_type"),
        ({"content_type": "a\nb"}, ValueError, "content_type"),
        ({"headers": ["X-A"]}, TypeError, "headers: expected rxsinks.Headers or a mapping"),
        ({"headers": {"Bad Name": "x"}}, ValueError, "not a valid header name"),
        ({"headers": {"X-A": 1}}, TypeError, r"headers: 'X-A': expected a str or a list"),
        ({"headers": {"X-A": [1]}}, TypeError, r"headers: 'X-A': values must be str"),
        ({"headers": {"X-A": "a\r\nb"}}, ValueError, "control characters"),
        ({"headers": {"Content-Type": "x"}}, ValueError, "use content_type"),
        ({"secret": "not-a-secret"}, ValueError, "whsec_"),
        ({"secret": SECRET, "headers": {"Webhook-Id": "x"}}, ValueError, "signature"),
        ({"secret_headers": ["bad name"]}, ValueError, "secret_headers"),
        ({"secret_headers": 3}, TypeError, "secret_headers"),
        ({"verify_tls": "no"}, TypeError, "verify: expected a bool"),
        ({"redirects": "all"}, ValueError, "redirects: expected 'safe' or 'none'"),
        ({"permanent_statuses": 404}, TypeError, "permanent_statuses"),
        ({"permanent_statuses": ["404"]}, TypeError, "permanent_statuses"),
        ({"permanent_statuses": [200]}, ValueError, "permanent_statuses: 200"),
        ({"retry_after_cap": -1}, ValueError, "retry_after_cap"),
        ({"on_attempt": 3}, TypeError, "on_attempt must be callable"),
        ({"connections": 0}, ValueError, "connections must be an int >= 1"),
    ],
)
def test_bad_arguments_are_named(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    url = options.pop("url", "http://127.0.0.1/hook")
    with pytest.raises(error, match=message):
        webhook_sink(url, **options)


def test_a_bad_credential_value_is_not_echoed() -> None:
    with pytest.raises(TypeError) as info:
        webhook_sink("http://127.0.0.1/", headers={"Authorization": [b"Bearer raw-bytes"]})
    assert "raw-bytes" not in str(info.value)


def test_repr_shows_the_configuration_without_credentials() -> None:
    sink = webhook_sink(
        "http://user:pw-123@127.0.0.1/hook",
        name="alistener",
        headers={"Cookie": ["a=1", "b=2"], "X-Key": "k-456", "X-A": "visible"},
        secret_headers=["x-key"],
        content_type=MEDIA_TYPE_V2,
        secret=SECRET,
    )
    text = repr(sink)
    assert text == (
        "WebhookSink('http://***@127.0.0.1/hook', name='alistener', "
        "headers={'Cookie': ['<redacted>', '<redacted>'], 'X-Key': '<redacted>', "
        "'X-A': 'visible'}, "
        f"content_type='{MEDIA_TYPE_V2}', secret=<redacted>)"
    )
    assert sink.name == "alistener"
    assert sink.url == "http://***@127.0.0.1/hook"


def test_the_default_name_is_the_redacted_url() -> None:
    assert WebhookSink("https://u:p@hooks.example.com/x").name == "https://***@hooks.example.com/x"


async def test_closing_a_sink_closes_its_pool(receiver: Receiver) -> None:
    before = open_sessions()
    sink = WebhookSink(receiver.url())
    await sink.send(make_events(1))
    assert len(open_sessions() - before) == 1
    await sink.aclose()
    assert open_sessions() - before == set()
