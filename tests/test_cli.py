"""The ``rxsinks`` command (rxsinks._service.cli): check-config, serve, send and demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from click.testing import CliRunner, Result

from rxsinks._event import MEDIA_TYPE_V1, encode_envelope, sample_events
from rxsinks._service.cli import main
from rxsinks._service.config import parse_config
from rxsinks._service.relay import Relay
from tests.conftest import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RXSINKS = [sys.executable, "-m", "rxsinks"]


async def eventually_true(check: Any, what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def write_config(path: Path, endpoints: list[dict[str, Any]], **ingest: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "ingest": {"addr": "127.0.0.1:0", "grace": "2s", **ingest},
                "store": {"kind": "memory"},
                "notifications": {"endpoints": endpoints},
                "log": {"format": "json"},
            }
        )
    )
    return path


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["serve"], ["check-config"], ["send"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")
    assert "--help" in result.stdout


# --------------------------------------------------------------------------- check-config


def test_check_config_prints_the_effective_config_redacted(tmp_path: Path) -> None:
    path = tmp_path / "rxsinks.yml"
    path.write_text(
        "version: 0.1\n"  # a registry config.yml section: ignored with a note
        "ingest: {addr: '127.0.0.1:5999', token: tok3n-value}\n"
        "store: {kind: memory}\n"
        "notifications:\n"
        "  endpoints:\n"
        "    - name: alpha\n"
        "      url: http://127.0.0.1:9/hook\n"
        "      headers: {Authorization: [Bearer hunter2]}\n"
        "      timeout: 500ms\n"
        f"      secret: {SECRET}\n"
        "    - name: beta\n"
        "      url: http://127.0.0.1:9/beta\n"
        "      disabled: true\n"
    )
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    effective = yaml.safe_load(result.stdout)
    assert effective["ingest"]["port"] == 5999
    assert effective["ingest"]["token"] == "<redacted>"
    alpha = effective["endpoints"][0]
    assert alpha["timeout"] == 0.5 and alpha["threshold"] == 10
    assert alpha["secret"] == "<redacted>"
    assert alpha["headers"] == {"Authorization": ["<redacted>"]}
    for secret in ("tok3n-value", "hunter2", SECRET):
        assert secret not in result.output
    assert "1 endpoint(s) to deliver to (1 disabled)" in result.stderr


def test_check_config_takes_the_file_as_serve_does(tmp_path: Path) -> None:
    path = tmp_path / "rxsinks.yml"
    path.write_text(
        "store: {kind: memory}\n"
        "notifications:\n  endpoints:\n    - {name: a, url: 'http://127.0.0.1:9/hook'}\n"
    )
    for args in (["-c", str(path)], ["--config", str(path)], [str(path), "-c", str(path)]):
        result = CliRunner().invoke(main, ["check-config", *args])
        assert result.exit_code == 0, result.output
        assert "1 endpoint(s) to deliver to" in result.stderr
    env = CliRunner(env={"RXSINKS_CONFIG": str(path)}).invoke(main, ["check-config"])
    assert env.exit_code == 0, env.output
    other = tmp_path / "other.yml"
    both = CliRunner().invoke(main, ["check-config", str(other), "-c", str(path)])
    assert both.exit_code == 2
    assert "two configurations given" in both.output
    neither = CliRunner(env={"RXSINKS_CONFIG": None}).invoke(main, ["check-config"])
    assert neither.exit_code == 2
    assert "Missing argument 'FILE' (or --config FILE)" in neither.output


def test_check_config_lists_every_problem_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        "ingest: {addr: 'nowhere'}\n"
        "notifications:\n"
        "  endpoints:\n"
        "    - name: a\n"
        "      url: ftp://example.com/\n"
        "      timeout: soon\n"
    )
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    paths = [line.split(": ", 1)[0] for line in lines]
    assert sorted(paths) == [
        "ingest.addr",
        "notifications.endpoints[0].timeout",
        "notifications.endpoints[0].url",
    ]
    assert result.stdout == ""
    assert "Traceback" not in result.output


def check_one_endpoint(tmp_path: Path, *keys: str, store: str = "") -> Result:
    """Run ``check-config`` on a file with one endpoint ``a`` and these extra YAML lines."""
    path = tmp_path / "rxsinks.yml"
    lines = [store, "notifications:", "  endpoints:", "    - name: a"]
    lines += ["      url: http://127.0.0.1:9/a", *(f"      {key}" for key in keys)]
    path.write_text("\n".join(lines) + "\n")
    return CliRunner().invoke(main, ["check-config", str(path)])


def test_check_config_reports_a_clash_at_its_key_path(tmp_path: Path) -> None:
    result = check_one_endpoint(tmp_path, f"secret: {SECRET}", "headers: {webhook-signature: [x]}")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line == (
        "notifications.endpoints[0].headers: 'webhook-signature' is set by the signature (secret)"
    )


def test_check_config_reports_a_secret_too_short_to_sign_with(tmp_path: Path) -> None:
    # an 8-byte key: base64 and whsec_ are right, the length is not
    result = check_one_endpoint(tmp_path, "secret: whsec_c2hvcnRrZXk=")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("notifications.endpoints[0].secret: the key is 8 bytes")
    assert "Traceback" not in result.output


def test_check_config_shows_the_delivery_keys(tmp_path: Path) -> None:
    keys = ("concurrency: 16", "orderby: /target/digest", "delay: 2s")
    result = check_one_endpoint(tmp_path, *keys, store="store: {kind: memory}")
    assert result.exit_code == 0, result.output
    (endpoint,) = yaml.safe_load(result.stdout)["endpoints"]
    assert endpoint["delivery"] == {"concurrency": 16, "order_by": "/target/digest", "delay": 2.0}
    # the registry's behaviour by default: one POST in flight, no delay
    result = check_one_endpoint(tmp_path, store="store: {kind: memory}")
    (endpoint,) = yaml.safe_load(result.stdout)["endpoints"]
    assert endpoint["delivery"] == {"concurrency": 1, "order_by": "repository", "delay": 0.0}


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_missing_config_file_is_exit_2(tmp_path: Path, command: str) -> None:
    missing = str(tmp_path / "missing.yml")
    args = [command, missing] if command == "check-config" else [command, "--config", missing]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{missing}: file not found"


# --------------------------------------------------------------------------- serve


async def test_serve_relays_events_then_stops_on_sigterm(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path / "rxsinks.yml", [{"name": "hooks", "url": receiver.url()}])
    process = await asyncio.create_subprocess_exec(
        *RXSINKS, "serve", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        url = None
        while url is None:
            line = await asyncio.wait_for(process.stderr.readline(), 15)
            assert line, "serve exited before listening"
            record = json.loads(line)  # log format json: one object per line
            url = record.get("url")
        events = sample_events()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url, data=encode_envelope(events), headers={"Content-Type": MEDIA_TYPE_V1}
            ) as response,
        ):
            assert response.status == 200
            assert await response.json() == {"accepted": len(events)}
        await eventually_true(lambda: len(receiver.events) == len(events), "every event")
        assert receiver.events == events
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), 15)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    messages = [json.loads(line)["message"] for line in rest.decode().splitlines()]
    assert "signal received: stopping" in messages
    assert any(message.startswith("stopped: every accepted event") for message in messages)


def test_serve_on_a_port_in_use_exits_1_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "rxsinks.yml",
            [{"name": "hooks", "url": "http://127.0.0.1:9/hook"}],
            addr=f"127.0.0.1:{port}",
        )
        result = subprocess.run(
            [*RXSINKS, "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- send


@pytest.fixture
async def relay(receiver: Receiver) -> AsyncIterator[Relay]:
    config = parse_config(
        {
            "ingest": {"addr": "127.0.0.1:0", "token": "t0ken"},
            "store": {"kind": "memory"},
            "notifications": {"endpoints": [{"name": "hooks", "url": receiver.url()}]},
        }
    )
    relay = Relay(config)
    await relay.start()
    yield relay
    await relay.stop(0)


async def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    # a token in the caller's environment would change what send does
    env = {key: value for key, value in os.environ.items() if key != "RXSINKS_TOKEN"}
    process = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_posts_an_ndjson_file_in_order(
    tmp_path: Path, relay: Relay, receiver: Receiver
) -> None:
    events = sample_events()
    path = tmp_path / "capture.ndjson"
    path.write_text("\n".join(json.dumps(event.to_dict()) for event in events) + "\n\n")
    code, out, err = await run(
        *RXSINKS, "send", str(path), "--url", relay.url, "--token", "t0ken", "--batch", "3"
    )
    assert code == 0, err
    assert out.strip() == f"sent 16 event(s) in 6 request(s) to {relay.url}"
    await eventually_true(lambda: len(receiver.events) == len(events), "every event")
    assert receiver.events == events


async def test_send_reads_stdin_and_reports_a_refusal(relay: Relay, receiver: Receiver) -> None:
    events = sample_events()[:3]
    code, _, err = await run(
        *RXSINKS,
        "send",
        "-",
        "--url",
        relay.url.removesuffix("/events"),  # a bare host:port URL gets /events
        stdin=encode_envelope(events),
    )  # no token: refused
    assert code == 1
    assert "401" in err and "0 of 3 events were accepted" in err
    code, _, err = await run(
        *RXSINKS, "send", "-", "--url", relay.url, "--token", "t0ken", stdin=encode_envelope(events)
    )
    assert code == 0, err
    await eventually_true(lambda: len(receiver.events) == 3, "the three events")
    assert receiver.events == events


def test_send_names_the_problem_in_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text('{"id": "1"}\n{"id": \n')
    result = CliRunner().invoke(main, ["send", str(path), "--url", "http://127.0.0.1:9/events"])
    assert result.exit_code == 2
    assert "line 2: not valid JSON" in result.stderr
    assert "Traceback" not in result.output


def test_send_refuses_a_url_that_is_not_http() -> None:
    result = CliRunner().invoke(main, ["send", "-", "--url", "ftp://x/"], input="{}")
    assert result.exit_code == 2
    assert "expected an http(s) URL" in result.stderr


# --------------------------------------------------------------------------- demo


def test_demo_runs_and_checks_every_receiver() -> None:
    result = subprocess.run(
        [*RXSINKS, "demo", "--events", "300", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "300 events sent" in result.stdout
    assert "healthy 300/300" in result.stdout and "flaky 300/300" in result.stdout
    assert result.stdout.rstrip().endswith("OK")
    assert result.stderr == ""
