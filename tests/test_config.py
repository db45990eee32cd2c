"""The relay's configuration (rxsinks._service.config): registry compatibility, extensions,
problems."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trustme

from rxsinks._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2
from rxsinks._exceptions import ConfigError, RxSinksError
from rxsinks._filter import EventFilter
from rxsinks._options import (
    TLS,
    Batching,
    Delivery,
    Headers,
    Secret,
    WebhookOptions,
    exponential_wait,
)
from rxsinks._service.config import (
    REDACTED,
    ConfigErrors,
    EndpointConfig,
    IngestConfig,
    LogConfig,
    RelayConfig,
    StoreConfig,
    load_config,
    parse_config,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# a registry config.yml as the distribution docs show it, untouched
REGISTRY_CONFIG = """\
version: 0.1
log:
  accesslog:
    disabled: true
  level: debug
  formatter: text
  fields:
    service: registry
    environment: staging
loglevel: debug
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
http:
  addr: :5000
  secret: asecretforlocaldevelopment
  headers:
    X-Content-Type-Options: [nosniff]
  debug:
    addr: localhost:5001
redis:
  addr: localhost:6379
  password: ${NOT_INTERPOLATED_HERE}
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:
        Authorization: [Bearer <your token>]
      timeout: 500ms
      threshold: 5
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
          - application/octet-stream
          - application/vnd.oci.image.config.v1+json
        actions:
          - pull
    - name: defaults
      url: http://127.0.0.1:8080/hooks
      timeout: 0
      threshold: -1
    - name: retired
      disabled: true
      url: http://127.0.0.1:8081/old
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def write(tmp_path: Path, text: str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def endpoint(**keys: Any) -> dict[str, Any]:
    """Config data with one endpoint: a name and url plus ``keys``."""
    return {
        "notifications": {
            "endpoints": [{"name": "hook", "url": "http://127.0.0.1:9000/hook", **keys}]
        }
    }


def problems_of(data: Any, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Parse data that must fail; map each problem's path to its message."""
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, environ={} if environ is None else environ)
    return {problem.path: problem.detail for problem in info.value.problems}


# --------------------------------------------------------------------------- the registry's config


def test_registry_config_loads_unchanged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rxsinks.config")
    config = load_config(write(tmp_path, REGISTRY_CONFIG), environ={})

    assert config.include_references is True
    assert [e.name for e in config.endpoints] == ["alistener", "defaults", "retired"]
    first, second, third = config.endpoints
    assert (first.name, first.url) == ("alistener", "https://my.listener.com/event")
    assert first.webhook.headers == Headers({"Authorization": "Bearer <your token>"})
    assert (first.webhook.timeout, first.retry.threshold, first.retry.backoff) == (0.5, 5, 1.0)
    # the two registry lists merged, without the duplicate
    assert first.ignore == EventFilter(
        ignore_media_types=["application/octet-stream", "application/vnd.oci.image.config.v1+json"],
        ignore_actions=["pull"],
    )
    assert first.filter is None
    # registry defaults: missing or <= 0 means timeout 1s, threshold 10, backoff 1s
    assert (second.webhook.timeout, second.retry.threshold, second.retry.backoff) == (1.0, 10, 1.0)
    # and the registry's behaviour for everything rxsinks adds
    assert second.webhook == WebhookOptions()
    assert second.batch == Batching(max_events=1)
    assert second.delivery == Delivery(concurrency=1, delay=0.0)
    assert (second.retry.stop, second.retry.wait) == (None, None)
    assert (second.queue.max_events, second.queue.overflow) == (None, "drop_oldest")
    assert second.webhook.permanent_statuses == frozenset()
    assert second.webhook.secret is None
    assert third.disabled is True
    assert config.enabled_endpoints == (first, second)

    # the registry's own log section is understood as far as it means the same thing
    assert config.log == LogConfig(level="debug", format="text")
    # rxsinks' own sections take their defaults
    assert config.ingest == IngestConfig()
    assert config.store == StoreConfig(kind="sqlite", path="rxsinks.db", url=None)

    ignored = "ignored registry sections: health, http, loglevel, redis, storage, version"
    assert any(note.startswith(ignored) for note in config.notes)
    assert any("accesslog, fields" in note for note in config.notes)
    assert any(ignored in record.getMessage() for record in caplog.records)


def test_registry_defaults_for_non_positive_values() -> None:
    config = parse_config(endpoint(timeout="-5s", threshold=0, backoff=-1))
    hook = config.endpoints[0]
    assert (hook.webhook.timeout, hook.retry.threshold, hook.retry.backoff) == (1.0, 10, 1.0)


def test_bare_integers_are_nanoseconds_like_the_registry() -> None:
    hook = parse_config(endpoint(timeout=1_500_000_000, backoff=250_000_000)).endpoints[0]
    assert hook.webhook.timeout == 1.5
    assert hook.retry.backoff == 0.25


def test_minimal_config_has_every_default() -> None:
    config = parse_config({})
    assert config == RelayConfig(notes=config.notes)
    assert config.endpoints == ()
    assert any("no enabled endpoint" in note for note in config.notes)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.ingest.addr == "127.0.0.1:5056"
    assert any("empty" in note for note in config.notes)


# --------------------------------------------------------------------------- rxsinks' extensions


def test_every_extension_key(tmp_path: Path, tls_files: dict[str, str]) -> None:
    path = write(
        tmp_path,
        f"""\
        ingest:
          addr: 0.0.0.0:8080
          token: s3cr3t-token
          max_body: 2MiB
          grace: 1m30s
        store:
          path: {tmp_path}/events.db
        notifications:
          endpoints:
            - name: alpha
              url: https://hooks.example.com/a
              headers: {{Authorization: [Bearer x], X-Api-Key: [k1, k2], X-Plain: one}}
              timeout: 2s
              secret: {SECRET}
              secretheaders: [X-Api-Key]
              contenttype: v2
              batch: {{maxevents: 100, maxdelay: 200ms}}
              concurrency: 8
              orderby: /target/digest
              delay: 1m
              retry:
                maxattempts: 7
                maxage: 1h
                exponential: {{base: 2s, factor: 500ms, max: 1m}}
              permanentstatuses: [400, 404, 422, 404]
              retryaftercap: 5m
              redirects: none
              tls:
                certfile: {tls_files["cert"]}
                keyfile: {tls_files["key"]}
                insecureskipverify: true
              queue: {{maxevents: 5000, overflow: dropnewest}}
              match:
                actions: [push, delete]
                mediatypes: [application/vnd.oci.image.manifest.v1+json]
                repositories: ["library/*", "team/**"]
                excluderepositories: [library/scratch]
        log: {{level: warn, format: json}}
        """,
    )
    config = load_config(path)
    assert config.ingest == IngestConfig(
        host="0.0.0.0", port=8080, token="s3cr3t-token", max_body=2 * 1024 * 1024, grace=90.0
    )
    assert config.store == StoreConfig(kind="sqlite", path=f"{tmp_path}/events.db", url=None)
    assert config.log == LogConfig(level="warning", format="json")
    (alpha,) = config.endpoints
    assert (alpha.name, alpha.url, alpha.disabled) == (
        "alpha",
        "https://hooks.example.com/a",
        False,
    )
    assert alpha.webhook == WebhookOptions(
        headers=Headers(
            {"Authorization": "Bearer x", "X-Api-Key": ["k1", "k2"], "X-Plain": "one"},
            secret=["X-Api-Key"],
        ),
        timeout=2.0,
        content_type=MEDIA_TYPE_V2,
        secret=SECRET,
        tls=TLS(cert_file=tls_files["cert"], key_file=tls_files["key"], verify=False),
        redirects="none",
        permanent_statuses=[400, 404, 422],
        retry_after_cap=300.0,
    )
    assert alpha.batch == Batching(max_events=100, max_delay=0.2)
    assert alpha.delivery == Delivery(concurrency=8, order_by="/target/digest", delay=60.0)
    assert (alpha.retry.threshold, alpha.retry.backoff) == (10, 1.0)
    assert alpha.retry.wait == exponential_wait(2.0, 0.5, 60.0)
    assert alpha.redacted()["retry"] == {
        "max_attempts": 7,
        "max_age": 3600.0,
        "exponential": {"base": 2.0, "factor": 0.5, "max": 60.0},
    }
    assert (alpha.queue.max_events, alpha.queue.overflow) == (5000, "drop_newest")
    assert alpha.filter == EventFilter(
        actions=["push", "delete"],
        media_types=["application/vnd.oci.image.manifest.v1+json"],
        repositories=["library/*", "team/**"],
        exclude_repositories=["library/scratch"],
    )


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    """A CA bundle and a client certificate with its key, as PEM files."""
    ca = trustme.CA()
    client = ca.issue_cert("client@example.org")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "k.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("v1", MEDIA_TYPE_V1),
        ("V2", MEDIA_TYPE_V2),
        ("application/json", "application/json"),
        (
            "application/cloudevents+json; charset=utf-8",
            "application/cloudevents+json; charset=utf-8",
        ),
    ],
)
def test_content_type(given: str, expected: str) -> None:
    assert parse_config(endpoint(contenttype=given)).endpoints[0].webhook.content_type == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        (False, None),
        (True, (1.0, 1.0, 20.0)),  # go-events' defaults
        ({}, (1.0, 1.0, 20.0)),
        ({"max": "5ms", "base": "1ms", "factor": "1ms"}, (0.001, 0.001, 0.005)),
    ],
)
def test_exponential_backoff(given: object, expected: tuple[float, float, float] | None) -> None:
    hook = parse_config(endpoint(retry={"exponential": given})).endpoints[0]
    assert hook.retry.wait == (None if expected is None else exponential_wait(*expected))


@pytest.mark.parametrize(
    ("spelling", "overflow"),
    [
        ("dropoldest", "drop_oldest"),
        ("droppoldest", "drop_oldest"),
        ("drop_oldest", "drop_oldest"),
        ("DropNewest", "drop_newest"),
        ("error", "error"),
    ],
)
def test_queue_overflow_spellings(spelling: str, overflow: str) -> None:
    hook = parse_config(endpoint(queue={"overflow": spelling})).endpoints[0]
    assert hook.queue.overflow == overflow


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ({}, StoreConfig("sqlite", "rxsinks.db", None)),
        ({"kind": "memory"}, StoreConfig("memory", None, None)),
        (
            {"url": "redis://127.0.0.1:6379/0"},
            StoreConfig("redis", None, "redis://127.0.0.1:6379/0"),
        ),
        (
            {"kind": "REDIS", "url": "rediss://h:6380"},
            StoreConfig("redis", None, "rediss://h:6380"),
        ),
        ({"kind": "sqlite", "path": "x.db"}, StoreConfig("sqlite", "x.db", None)),
    ],
)
def test_store(store: dict[str, str], expected: StoreConfig) -> None:
    assert parse_config({"store": store}).store == expected


@pytest.mark.parametrize(
    ("addr", "host", "port"),
    [
        ("127.0.0.1:5056", "127.0.0.1", 5056),
        ("localhost:0", "localhost", 0),
        (":8080", "", 8080),  # every interface, as in Go
        ("[::1]:65535", "::1", 65535),
    ],
)
def test_ingest_addr(addr: str, host: str, port: int) -> None:
    ingest = parse_config({"ingest": {"addr": addr}}).ingest
    assert (ingest.host, ingest.port) == (host, port)
    assert ingest.addr == (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


@pytest.mark.parametrize(
    ("level", "expected"),
    [("DEBUG", "debug"), ("trace", "debug"), ("warn", "warning"), ("fatal", "critical")],
)
def test_log_levels_from_the_registry(level: str, expected: str) -> None:
    assert parse_config({"log": {"level": level}}).log.level == expected


def test_logstash_formatter_reads_as_json() -> None:
    config = parse_config({"log": {"formatter": "logstash"}})
    assert config.log.format == "json"
    assert any("logstash" in note for note in config.notes)


def test_single_values_count_as_lists() -> None:
    hook = parse_config(
        endpoint(headers={"X-One": "a"}, ignore={"actions": "pull"}, permanentstatuses=410)
    ).endpoints[0]
    assert hook.webhook.headers.items == (("X-One", "a"),)
    assert hook.ignore.ignore_actions == {"pull"}
    assert hook.webhook.permanent_statuses == {410}


def test_unknown_ignore_action_is_a_note_not_an_error() -> None:
    # the registry accepts any string there; it simply never matches
    config = parse_config(endpoint(ignore={"actions": ["Pull"]}))
    assert config.endpoints[0].ignore.ignore_actions == {"Pull"}
    assert any("ignore.actions[0]" in note and "never match" in note for note in config.notes)


def test_disabled_endpoint_tls_files_are_not_checked() -> None:
    config = parse_config(endpoint(disabled=True, tls={"cafile": "/nowhere/ca.pem"}))
    assert config.endpoints[0].disabled is True
    assert config.enabled_endpoints == ()


# --------------------------------------------------------------------------- keys


def test_keys_are_case_insensitive() -> None:
    data = {
        "Notifications": {
            "Events": {"IncludeReferences": True},
            "Endpoints": [
                {
                    "Name": "hook",
                    "URL": "http://127.0.0.1:9000/",
                    "ignoredMediaTypes": ["a/b"],
                    "Ignore": {"MediaTypes": ["c/d"], "Actions": ["pull"]},
                    "Timeout": "2s",
                    "Batch": {"MaxEvents": 3},
                    "TLS": {"InsecureSkipVerify": True},
                }
            ],
        },
        "INGEST": {"Max_Body": "1KiB"},
    }
    config = parse_config(data)
    hook = config.endpoints[0]
    assert config.include_references is True
    assert hook.ignore.ignore_media_types == {"a/b", "c/d"}
    assert hook.ignore.ignore_actions == {"pull"}
    assert hook.webhook.timeout == 2.0
    assert hook.batch.max_events == 3
    assert hook.webhook.tls.verify is False
    assert config.ingest.max_body == 1024


def test_unknown_keys_are_reported_by_lowercase_path() -> None:
    problems = problems_of(endpoint(TimeOt="1s", Retry={"MaxAttempt": 3}))
    assert problems["notifications.endpoints[0].timeot"].startswith("unknown key; expected")
    assert "did you mean 'timeout'?" in problems["notifications.endpoints[0].timeot"]
    assert "did you mean 'maxattempts'?" in problems["notifications.endpoints[0].retry.maxattempt"]


def test_keys_differing_only_in_case_clash() -> None:
    problems = problems_of(endpoint(URL="http://127.0.0.1:1/"))
    assert "duplicate key" in problems["notifications.endpoints[0].url"]


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        notifications:
          endpoints: []
        notifications:
          endpoints: []
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}, line 3, column 1" in message
    assert "duplicate key 'notifications'" in message


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    # an overridden merged key is not a duplicate
    path = write(
        tmp_path,
        """\
        notifications:
          endpoints:
            - &base {name: a, url: "http://127.0.0.1:1/", timeout: 2s}
            - <<: *base
              name: b
        """,
    )
    config = load_config(path)
    assert [(e.name, e.webhook.timeout) for e in config.endpoints] == [("a", 2.0), ("b", 2.0)]


# --------------------------------------------------------------------------- interpolation


def test_environment_interpolation() -> None:
    environ = {
        "HOOK_URL": "https://hooks.example.com/x",
        "TOKEN": "abc",
        "THRESHOLD": "3",
        "TIMEOUT": "250ms",
        "EMPTY": "",
    }
    data = {
        "ingest": {"token": "${TOKEN}", "addr": "${HOST:-127.0.0.1}:${PORT:-7000}"},
        "notifications": {
            "endpoints": [
                {
                    "name": "n-${TOKEN}",
                    "url": "${HOOK_URL}",
                    "headers": {"Authorization": ["Bearer ${TOKEN}"], "X-Price": ["$$5 and $x"]},
                    "threshold": "${THRESHOLD}",
                    "timeout": "${TIMEOUT}",
                    "secret": "${EMPTY:-" + SECRET + "}",
                    "disabled": "${DISABLED:-false}",
                }
            ]
        },
    }
    config = parse_config(data, environ=environ)
    hook = config.endpoints[0]
    assert config.ingest.token == "abc"
    assert (config.ingest.host, config.ingest.port) == ("127.0.0.1", 7000)
    assert hook.name == "n-abc"
    assert hook.url == "https://hooks.example.com/x"
    assert hook.webhook.headers.items == (
        ("Authorization", "Bearer abc"),
        ("X-Price", "$5 and $x"),
    )
    assert hook.retry.threshold == 3
    assert hook.webhook.timeout == 0.25
    # ":-" also replaces a variable that is set but empty
    assert hook.webhook.secret == Secret(SECRET)
    assert hook.disabled is False


def test_environ_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXSINKS_TEST_TOKEN", "from-env")
    path = write(tmp_path, "ingest: {token: '${RXSINKS_TEST_TOKEN}'}\n")
    assert load_config(path).ingest.token == "from-env"


@pytest.mark.parametrize("token", ["", "${T:-}", "${EMPTY}", "  "])
def test_an_empty_token_is_a_problem_not_an_open_relay(token: str) -> None:
    # a variable set to "" used to mean "no token": an open relay by accident
    problems = problems_of({"ingest": {"token": token}}, environ={"EMPTY": ""})
    assert "is empty" in problems["ingest.token"]


def test_missing_variables_are_problems_naming_path_and_variable() -> None:
    data = {
        "ingest": {"token": "${RXSINKS_TOKEN}"},
        "notifications": {
            "endpoints": [
                {
                    "name": "hook",
                    "url": "http://127.0.0.1:1/",
                    "secret": "${HOOK_SECRET}",
                    "headers": {"Authorization": ["Bearer ${API_TOKEN}"]},
                }
            ]
        },
        # sections rxsinks ignores are not interpolated, so their variables need not exist
        "storage": {"s3": {"secretkey": "${AWS_SECRET}"}},
    }
    problems = problems_of(data)
    assert set(problems) == {
        "ingest.token",
        "notifications.endpoints[0].secret",
        "notifications.endpoints[0].headers.Authorization[0]",
    }
    assert problems["ingest.token"] == (
        "environment variable RXSINKS_TOKEN is not set "
        "(give a default with ${RXSINKS_TOKEN:-default})"
    )
    assert "HOOK_SECRET" in problems["notifications.endpoints[0].secret"]
    assert "API_TOKEN" in problems["notifications.endpoints[0].headers.Authorization[0]"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${1BAD}", "invalid variable reference ${1BAD}"),
        ("${}", "invalid variable reference ${}"),
        ("${X:?oops}", "invalid variable reference ${X:?oops}"),
        ("${UNCLOSED", "unterminated ${...}"),
    ],
)
def test_malformed_references(text: str, fragment: str) -> None:
    problems = problems_of({"ingest": {"token": text}}, environ={"X": "1"})
    assert fragment in problems["ingest.token"]


# --------------------------------------------------------------------------- problems


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"bogus": 1}, "bogus", "unknown key; expected one of ingest, log, notifications, store"),
        ([1, 2], "", "expected a mapping of sections"),
        ({"ingest": "yes"}, "ingest", "expected a mapping of addr, grace, max_body, token"),
        ({"ingest": {"addr": "localhost"}}, "ingest.addr", "missing :port"),
        ({"ingest": {"addr": "h:70000"}}, "ingest.addr", "from 0 to 65535, got '70000'"),
        ({"ingest": {"addr": "::1:80"}}, "ingest.addr", "needs brackets"),
        ({"ingest": {"addr": 5056}}, "ingest.addr", "expected host:port like 127.0.0.1:5056"),
        ({"ingest": {"max_body": "lots"}}, "ingest.max_body", "expected a size in bytes"),
        ({"ingest": {"max_body": 0}}, "ingest.max_body", "at least 1 byte"),
        ({"ingest": {"grace": "-1s"}}, "ingest.grace", "expected a duration >= 0s"),
        ({"store": {"kind": "postgres"}}, "store.kind", "expected one of memory, redis, sqlite"),
        ({"store": {"kind": "redis"}}, "store.url", "required when store.kind is redis"),
        ({"store": {"url": "http://h"}}, "store.url", "expected a Redis URL"),
        (
            {"store": {"kind": "memory", "url": "redis://h"}},
            "store.url",
            "a url means kind redis, but store.kind is 'memory'",
        ),
        ({"store": {"path": "/no/such/dir/x.db"}}, "store.path", "directory not found"),
        ({"log": {"level": "loud"}}, "log.level", "expected one of critical, debug"),
        ({"log": {"format": "xml"}}, "log.format", "expected one of json, text"),
        ({"notifications": []}, "notifications", "expected a mapping of endpoints, events"),
        (
            {"notifications": {"events": {"includereferences": "sometimes"}}},
            "notifications.events.includereferences",
            "expected true or false, got 'sometimes'",
        ),
        ({"notifications": {"endpoints": {}}}, "notifications.endpoints", "expected a list"),
        (
            {"notifications": {"endpoints": ["http://h"]}},
            "notifications.endpoints[0]",
            "expected an endpoint (a mapping with name and url)",
        ),
        (
            {"notifications": {"endpoints": [{"url": "http://h"}]}},
            "notifications.endpoints[0].name",
            "required",
        ),
        (
            {"notifications": {"endpoints": [{"name": "a"}]}},
            "notifications.endpoints[0].url",
            "required",
        ),
        (endpoint(name=" "), "notifications.endpoints[0].name", "must not be empty"),
        (endpoint(name=["a"]), "notifications.endpoints[0].name", "expected a string, got a list"),
        (
            endpoint(url="ftp://h/x"),
            "notifications.endpoints[0].url",
            "expected an http:// or https:// URL, got 'ftp://h/x'",
        ),
        (endpoint(url="http:///x"), "notifications.endpoints[0].url", "with a host"),
        (endpoint(url="http://h:99999/"), "notifications.endpoints[0].url", "out of range"),
        (endpoint(url="http://h/a b"), "notifications.endpoints[0].url", "white space"),
        (
            endpoint(url="hooks.example.com"),
            "notifications.endpoints[0].url",
            "expected an http://",
        ),
        (
            endpoint(disabled="maybe"),
            "notifications.endpoints[0].disabled",
            "expected true or false",
        ),
        (
            endpoint(headers=["a"]),
            "notifications.endpoints[0].headers",
            "expected a mapping of header names",
        ),
        (
            endpoint(headers={"Bad Name": ["x"]}),
            "notifications.endpoints[0].headers",
            "'Bad Name' is not a valid header name",
        ),
        (
            endpoint(headers={"X": ["a\r\nInjected: 1"]}),
            "notifications.endpoints[0].headers",
            "'X': a header value may not contain line breaks",
        ),
        (
            endpoint(headers={"X": [{"a": 1}]}),
            "notifications.endpoints[0].headers.X[0]",
            "expected a string, got a mapping",
        ),
        (
            endpoint(timeout="fast"),
            "notifications.endpoints[0].timeout",
            "expected a Go duration like 500ms or 1s, got 'fast'",
        ),
        (
            endpoint(backoff="1 second"),
            "notifications.endpoints[0].backoff",
            "expected a Go duration",
        ),
        (
            endpoint(threshold="many"),
            "notifications.endpoints[0].threshold",
            "expected an integer, got 'many'",
        ),
        (
            endpoint(threshold=2.5),
            "notifications.endpoints[0].threshold",
            "expected an integer, got 2.5",
        ),
        (
            endpoint(ignore=["pull"]),
            "notifications.endpoints[0].ignore",
            "expected a mapping of actions, mediatypes",
        ),
        (
            endpoint(ignoredmediatypes=[None]),
            "notifications.endpoints[0].ignoredmediatypes[0]",
            "got nothing",
        ),
        (
            endpoint(ignoredmediatypes=[""]),
            "notifications.endpoints[0].ignoredmediatypes[0]",
            "must not be empty",
        ),
        (
            endpoint(secret="s3cr3t"),
            "notifications.endpoints[0].secret",
            "expected whsec_ followed by the base64 of the key",
        ),
        (
            endpoint(secret="whsec_!!not-base64!!"),
            "notifications.endpoints[0].secret",
            "the text after 'whsec_' is not valid base64",
        ),
        (
            endpoint(secret="whsec_"),
            "notifications.endpoints[0].secret",
            "the key is 0 bytes",
        ),
        (
            endpoint(secretheaders=["X Key"]),
            "notifications.endpoints[0].secretheaders",
            "'X Key' is not a valid header name",
        ),
        (
            endpoint(contenttype="json"),
            "notifications.endpoints[0].contenttype",
            "expected v1, v2 or a media type",
        ),
        (
            endpoint(batch={"maxevents": 0}),
            "notifications.endpoints[0].batch.maxevents",
            "expected an int >= 1, got 0",
        ),
        (
            endpoint(batch={"maxdelay": "-1s"}),
            "notifications.endpoints[0].batch.maxdelay",
            "expected a finite number of seconds >= 0, got -1.0",
        ),
        (
            endpoint(batch=5),
            "notifications.endpoints[0].batch",
            "expected a mapping of maxdelay, maxevents",
        ),
        (
            endpoint(retry={"maxattempts": -1}),
            "notifications.endpoints[0].retry.maxattempts",
            "expected an integer >= 0",
        ),
        (
            endpoint(retry={"maxage": "forever"}),
            "notifications.endpoints[0].retry.maxage",
            "expected a Go duration",
        ),
        (
            endpoint(retry={"exponential": {"base": "10s", "max": "5s"}}),
            "notifications.endpoints[0].retry.exponential.max",
            "must be at least base (10s)",
        ),
        (
            endpoint(retry={"exponential": {"max": "0s"}}),
            "notifications.endpoints[0].retry.exponential.max",
            "must be at least base (1s), got 0s",
        ),
        (
            endpoint(retry={"exponential": {"bse": "1s"}}),
            "notifications.endpoints[0].retry.exponential.bse",
            "did you mean 'base'?",
        ),
        (
            endpoint(retry={"exponential": "sometimes"}),
            "notifications.endpoints[0].retry.exponential",
            "expected a mapping of base, factor, max",
        ),
        (
            endpoint(permanentstatuses=[200]),
            "notifications.endpoints[0].permanentstatuses",
            "200 is not a failure status (expected 300..599",
        ),
        (
            endpoint(permanentstatuses=[404, 600]),
            "notifications.endpoints[0].permanentstatuses",
            "600 is not a failure status",
        ),
        (
            endpoint(permanentstatuses=["x"]),
            "notifications.endpoints[0].permanentstatuses[0]",
            "expected an integer, got 'x'",
        ),
        (
            endpoint(retryaftercap="-5m"),
            "notifications.endpoints[0].retryaftercap",
            "expected a finite number of seconds >= 0, got -300.0",
        ),
        (
            endpoint(redirects="always"),
            "notifications.endpoints[0].redirects",
            "expected 'safe' or 'none', got 'always'",
        ),
        (
            endpoint(tls={"cafile": "/no/such/ca.pem"}),
            "notifications.endpoints[0].tls.cafile",
            "'/no/such/ca.pem': no such file",
        ),
        (
            endpoint(tls={"certfile": "/"}),
            "notifications.endpoints[0].tls.certfile",
            "'/': not a regular file",
        ),
        (
            endpoint(tls={"insecureskipverify": "nah"}),
            "notifications.endpoints[0].tls.insecureskipverify",
            "expected true or false",
        ),
        (
            endpoint(queue={"maxevents": -5}),
            "notifications.endpoints[0].queue.maxevents",
            "expected an integer >= 0",
        ),
        (
            endpoint(queue={"overflow": "dropall"}),
            "notifications.endpoints[0].queue.overflow",
            "expected one of drop_newest, drop_oldest, error, got 'dropall'",
        ),
        (
            endpoint(match={"actions": ["pusj"]}),
            "notifications.endpoints[0].match.actions[0]",
            "unknown action 'pusj'",
        ),
        (
            endpoint(match={"repository": ["a/*"]}),
            "notifications.endpoints[0].match.repository",
            "did you mean 'repositories'?",
        ),
        (
            endpoint(match={"repositories": [["a"]]}),
            "notifications.endpoints[0].match.repositories[0]",
            "expected a string, got a list",
        ),
        (endpoint(**{"7": 1}), "notifications.endpoints[0].7", "unknown key"),
        (
            endpoint(concurrency=0),
            "notifications.endpoints[0].concurrency",
            "expected an int >= 1, got 0",
        ),
        (
            endpoint(concurrency="many"),
            "notifications.endpoints[0].concurrency",
            "expected an integer, got 'many'",
        ),
        (
            endpoint(orderby="tag"),
            "notifications.endpoints[0].orderby",
            "expected repository, none or a JSON pointer like /target/digest, got 'tag'",
        ),
        (
            endpoint(orderby="/target/~2"),
            "notifications.endpoints[0].orderby",
            "in a JSON pointer '~' is written ~0",
        ),
        (
            endpoint(delay="soon"),
            "notifications.endpoints[0].delay",
            "expected a Go duration",
        ),
        (
            endpoint(delay="-1s"),
            "notifications.endpoints[0].delay",
            "expected a finite number of seconds >= 0",
        ),
        (
            endpoint(url="https://u:p@h/", headers={"Authorization": ["Bearer x"]}),
            "notifications.endpoints[0].url",
            "carries credentials (user info) and headers has Authorization: keep one",
        ),
        ({"notifications": {7: 1}}, "notifications", "keys must be names, got 7"),
    ],
)
def test_each_problem_names_its_path(data: Any, path: str, fragment: str) -> None:
    problems = problems_of(data)
    assert path in problems, problems
    assert fragment in problems[path]


def test_keyfile_needs_certfile(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("key\n", encoding="utf-8")
    problems = problems_of(endpoint(tls={"keyfile": str(key)}))
    assert problems == {
        "notifications.endpoints[0].tls.keyfile": (
            "given without cert_file: give the certificate too"
        )
    }


def test_duplicate_endpoint_names() -> None:
    data = {
        "notifications": {
            "endpoints": [
                {"name": "a", "url": "http://127.0.0.1:1/"},
                {"name": "b", "url": "http://127.0.0.1:2/"},
                {"name": "a", "url": "http://127.0.0.1:3/", "disabled": True},
            ]
        }
    }
    problems = problems_of(data)
    assert problems == {
        "notifications.endpoints[2].name": "duplicate endpoint name 'a' (also endpoints[0])"
    }


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ingest:
          addr: nowhere
        store:
          kind: postgres
        notifications:
          endpoints:
            - name: alpha
              url: https://hooks.example.com/a
              timeout: fast
              threshhold: 5
            - name: beta
              url: ftp://hooks.example.com/b
              permanentstatuses: [200]
              secret: ${MISSING_SECRET}
            - name: alpha
              url: http://127.0.0.1:9000/
        log:
          level: loud
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, environ={})
    error = info.value
    assert isinstance(error, ConfigError)
    assert isinstance(error, RxSinksError)
    assert error.source == str(path)
    assert [problem.path for problem in error.problems] == [
        "ingest.addr",
        "store.kind",
        "notifications.endpoints[0].threshhold",
        "notifications.endpoints[0].timeout",
        "notifications.endpoints[1].url",
        "notifications.endpoints[1].secret",
        "notifications.endpoints[1].permanentstatuses",
        "notifications.endpoints[2].name",
        "log.level",
    ]
    assert all(isinstance(problem, ConfigError) for problem in error.problems)
    message = str(error)
    assert message.startswith(f"{path}: 9 problems:\n")
    assert (
        "  notifications.endpoints[0].timeout: expected a Go duration like 500ms or 1s, "
        "got 'fast'" in message
    )
    assert "did you mean 'threshold'?" in message
    assert "MISSING_SECRET" in message


def test_problems_never_show_a_secret() -> None:
    data = endpoint(
        secret="not-a-whsec-value-hunter2",
        headers={"Authorization": ["Bearer hunter3\nX: y"]},
    )
    with pytest.raises(ConfigErrors) as info:
        parse_config(data)
    assert len(info.value.problems) == 2
    assert "hunter2" not in str(info.value)
    assert "hunter3" not in str(info.value)


# --------------------------------------------------------------------------- files


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        notifications:
          endpoints:
            - name: a
              url: [http://h
        log: {}
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.path == ""
    assert str(path) in problem.detail
    assert "line 5" in problem.detail
    assert "invalid YAML" in problem.detail


def test_tab_indentation_error_has_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yml"
    path.write_text("ingest:\n\taddr: x\n", encoding="utf-8")
    with pytest.raises(ConfigErrors, match=r"tabs\.yml, line 2, column 1: invalid YAML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert info.value.problems[0].detail == f"{path}: file not found"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="cannot read"):
        load_config(tmp_path)  # a directory


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"ingest: {token: caf\xe9}\n")
    with pytest.raises(ConfigErrors, match="not UTF-8 text"):
        load_config(path)


def test_load_config_accepts_str_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest: {addr: '127.0.0.1:6000'}\n")
    assert load_config(str(path)).ingest.port == 6000
    assert load_config(path).ingest.port == 6000


def test_relative_store_path_is_kept_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the registry resolves relative paths against the working directory; so does rxsinks
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert parse_config({"store": {"path": "data/events.db"}}).store.path == "data/events.db"


# --------------------------------------------------------------------------- redaction


def test_redacted_dump_hides_every_secret() -> None:
    data = {
        "ingest": {"token": "tok-hunter1"},
        "store": {"url": "redis://:pw-hunter2@127.0.0.1:6379/0"},
        "notifications": {
            "endpoints": [
                # credentials in the URL: they cannot go with an Authorization header too
                {"name": "beta", "url": "https://user:pw-hunter3@hooks.example.com/a?x=1"},
                {
                    "name": "alpha",
                    "url": "https://hooks.example.com/a?x=1",
                    "secret": SECRET,
                    "secretheaders": ["x-api-key"],
                    "headers": {
                        "Authorization": ["Bearer hunter4", "Basic hunter5"],
                        "X-Api-Key": ["hunter6"],
                        "Cookie": ["session=hunter7"],
                        "X-Trace": ["visible"],
                    },
                },
            ]
        },
    }
    config = parse_config(data)
    dump = config.redacted()
    text = json.dumps(dump)  # plain data: it serialises as it is
    for secret in ("hunter", SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in text
        assert secret not in repr(config)
    beta, hook = dump["endpoints"]
    assert hook["secret"] == REDACTED
    assert hook["headers"] == {
        "Authorization": [REDACTED, REDACTED],
        "X-Api-Key": [REDACTED],
        "Cookie": [REDACTED],
        "X-Trace": ["visible"],
    }
    # user info and query values hidden, user names too (a token is often the user name)
    assert beta["url"] == "https://***@hooks.example.com/a?x=***"
    assert hook["url"] == "https://hooks.example.com/a?x=***"
    assert dump["ingest"]["token"] == REDACTED
    assert dump["store"]["url"] == "redis://***@127.0.0.1:6379/0"
    # everything else is the effective configuration
    assert hook["timeout"] == 1.0
    assert hook["threshold"] == 10
    assert hook["ignore_media_types"] == []
    assert dump["include_references"] is False
    # and the configuration itself still holds the real values
    assert config.endpoints[1].webhook.secret == Secret(SECRET)
    assert config.ingest.token == "tok-hunter1"


def test_redacted_keeps_absent_secrets_absent() -> None:
    dump = parse_config(endpoint(retry={"exponential": True})).redacted()
    assert dump["ingest"]["token"] is None
    assert dump["endpoints"][0]["secret"] is None
    assert dump["endpoints"][0]["retry"]["exponential"] == {"base": 1.0, "factor": 1.0, "max": 20.0}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("authorization", True),
        ("Proxy-Authorization", True),
        ("Cookie", True),
        ("X-API-KEY", True),
        ("X-Trace", False),
    ],
)
def test_is_secret_header(name: str, secret: bool) -> None:
    hook = parse_config(endpoint(secretheaders=["X-Api-Key"])).endpoints[0]
    assert hook.webhook.headers.is_secret(name) is secret


def test_configs_are_frozen() -> None:
    hook = EndpointConfig("a", "http://h/")
    with pytest.raises(AttributeError):
        hook.url = "http://elsewhere/"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        hook.webhook.timeout = 5.0  # type: ignore[misc]
