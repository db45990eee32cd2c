"""Hardening (issue 12) against real ``rxsinks serve`` processes on 127.0.0.1.

The attacks here need a whole process: its exit code and log, a second process on the same
store, the environment it runs in (a file size limit standing in for a full disk), or a crowd
of slow clients against its ingest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

import rxsinks
from tests.serve import DEADLINE, Receiver, Serve, free_port, until

pytest_plugins = ["tests.redis_server"]  # own_redis: a redis-server of the test's own

TOKEN = "t0ken-for-serve"


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    server = await aiohttp_server(app)
    yield target, str(server.make_url("/hook"))


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    """Serve processes to kill when the test ends, whatever happened."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def rxsinks_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rxsinks", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def refused(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------------------------- 2. no open relay


def test_serve_refuses_to_listen_on_every_interface_without_a_token(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "open.yml",
        {"ingest": {"addr": f":{port}"}, "store": {"path": str(tmp_path / "s.db")}},
    )
    result = rxsinks_run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "ingest.addr: listens on every interface" in result.stderr
    assert "without ingest.token" in result.stderr and "insecure: true" in result.stderr
    assert "Traceback" not in result.stderr
    assert refused(port)  # never listened, even for a moment
    checked = rxsinks_run("check-config", str(config))
    assert checked.returncode == 2 and "without ingest.token" in checked.stderr


def test_a_token_variable_set_but_empty_is_refused(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "empty.yml",
        {"ingest": {"addr": f"127.0.0.1:{port}", "token": "${RXT}"}},
    )
    result = rxsinks_run("serve", "--config", str(config), env={"RXT": ""})
    assert result.returncode == 2
    assert "ingest.token: is empty" in result.stderr
    assert refused(port)


# --------------------------------------------------------------------------- 3. redaction


async def test_no_credential_of_an_endpoint_url_leaves_the_process(
    tmp_path: Path, receiver: tuple[Receiver, str], serves: list[Serve]
) -> None:
    target, url = receiver
    target.status = lambda ids: 422
    secret_url = url.replace("http://", "http://USERTOKEN:PASSWORD@") + "?api_key=QUERYKEY"
    config = write_config(
        tmp_path / "rxsinks.yml",
        {
            "ingest": {"addr": f"127.0.0.1:{free_port()}", "token": TOKEN, "grace": "1s"},
            "store": {"path": str(tmp_path / "rxsinks.db")},
            "log": {"level": "debug"},
            "notifications": {
                "endpoints": [{"name": "hook", "url": secret_url, "permanentstatuses": [422]}]
            },
        },
    )
    serve = Serve(config, tmp_path / "serve.log")
    serves.append(serve)
    await serve.start()
    assert await serve.post([rxsinks.Event.new("push", id="leaky-1")]) == 200
    await until(lambda: target.refused == 1, "the refused delivery")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

        async def dead_letters() -> str:
            async with session.get(f"{serve.base}/dead-letters") as answer:
                return await answer.text()

        for _ in range(200):
            letters = await dead_letters()
            if "leaky-1" in letters:
                break
            await asyncio.sleep(0.05)
        async with session.get(f"{serve.base}/debug/vars") as answer:
            debug_vars = await answer.text()
    listed = await asyncio.to_thread(rxsinks_run, "dead-letters", "list", "-c", str(config))
    checked = await asyncio.to_thread(rxsinks_run, "check-config", str(config))
    assert await serve.signal(signal.SIGTERM) == 0
    outputs = {
        "serve log": serve.log.read_text(),
        "dead letters": letters,
        "/debug/vars": debug_vars,
        "dead-letters list": listed.stdout + listed.stderr,
        "check-config": checked.stdout + checked.stderr,
    }
    assert "422" in letters and "leaky-1" in listed.stdout  # the facts are there
    for where, text in outputs.items():
        for secret in ("USERTOKEN", "PASSWORD", "QUERYKEY"):
            assert secret not in text, f"{secret} in the {where}"


def test_a_malformed_url_in_the_configuration_is_shown_without_its_password(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "bad.yml",
        {
            "store": {"url": "redis//:STOREPASS@127.0.0.1:6379/0"},
            "notifications": {
                "endpoints": [{"name": "a", "url": "https://user:HOOKPASS@host:port/x?k=QKEY"}]
            },
        },
    )
    result = rxsinks_run("check-config", str(config))
    assert result.returncode == 2
    assert "store.url" in result.stderr and "notifications.endpoints[0].url" in result.stderr
    for secret in ("STOREPASS", "HOOKPASS", "QKEY"):
        assert secret not in result.stderr + result.stdout


async def test_a_redis_password_is_never_logged(
    tmp_path: Path, own_redis: Any, serves: list[Serve]
) -> None:
    import redis

    with redis.Redis(host="127.0.0.1", port=own_redis.port) as client:
        client.config_set("requirepass", "REDISPASS")
    config = write_config(
        tmp_path / "rxsinks.yml",
        {
            "ingest": {"addr": f"127.0.0.1:{free_port()}", "grace": "1s"},
            "store": {"url": f"redis://:REDISPASS@127.0.0.1:{own_redis.port}/0"},
        },
    )
    serve = Serve(config, tmp_path / "serve.log")
    serves.append(serve)
    await serve.start()
    assert await serve.signal(signal.SIGTERM) == 0
    log = serve.log.read_text()
    assert f"store: redis://***@127.0.0.1:{own_redis.port}/0" in log
    assert "REDISPASS" not in log


# --------------------------------------------------------------------------- 4. slow clients


async def test_slow_clients_are_cut_off_and_healthz_stays_responsive(
    tmp_path: Path, receiver: tuple[Receiver, str], serves: list[Serve]
) -> None:
    _, url = receiver
    port = free_port()
    config = write_config(
        tmp_path / "rxsinks.yml",
        {
            "ingest": {
                "addr": f"127.0.0.1:{port}",
                "header_timeout": "1s",
                "body_timeout": "1s",
                "max_connections": 16,
            },
            "store": {"path": str(tmp_path / "rxsinks.db")},
            "notifications": {"endpoints": [{"name": "hook", "url": url}]},
        },
    )
    serve = Serve(config, tmp_path / "serve.log")
    serves.append(serve)
    await serve.start()

    # 40 slowloris clients: more than the cap, each trickling its request head byte by byte;
    # and 4 that send a whole head, then trickle a body
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for index in range(44):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if index < 40:
            writer.write(b"POST /events HTTP/1.1\r\nHost: relay\r\n")
        else:
            writer.write(
                b"POST /events HTTP/1.1\r\nHost: relay\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
        slow.append((reader, writer))

    closed = [False] * len(slow)
    async with aiohttp.ClientSession() as session:
        for _ in range(15):  # bounded: 15 rounds of a byte each, and a health check
            for index, (reader, writer) in enumerate(slow):
                if closed[index]:
                    continue
                try:
                    writer.write(b"X")
                    await writer.drain()
                except ConnectionError:
                    closed[index] = True
                if reader.at_eof():
                    closed[index] = True
            # a liveness check with a generous bound, not a speed claim
            async with asyncio.timeout(10), session.get(f"{serve.base}/healthz") as answer:
                assert answer.status == 200
            await asyncio.sleep(0.2)
    for index, (reader, _) in enumerate(slow):
        if closed[index]:
            continue
        try:
            async with asyncio.timeout(10):
                while await reader.read(4096):  # a 408 answer, then the end
                    pass
        except ConnectionError:
            pass
        closed[index] = True
    assert all(closed)  # before: every one stayed open as long as it trickled
    for _, writer in slow:
        writer.close()
    # the ingest still takes events
    assert await serve.post([rxsinks.Event.new("push", id="after-the-crowd")]) == 200
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{serve.base}/metrics") as answer,
    ):
        metrics = await answer.text()
    assert 'rxsinks_ingest_connections_closed_total{reason="header_timeout"}' in metrics or (
        'rxsinks_ingest_connections_closed_total{reason="evicted"}' in metrics
    )
    assert await serve.signal(signal.SIGTERM) == 0
    log = serve.log.read_text()
    assert "Traceback" not in log and "Too many open files" not in log


# --------------------------------------------------------------------------- 5. one relay


async def test_a_second_serve_on_the_same_store_refuses_to_start(
    tmp_path: Path, receiver: tuple[Receiver, str], serves: list[Serve]
) -> None:
    _, url = receiver
    store = {"path": str(tmp_path / "rxsinks.db")}
    endpoints = {"endpoints": [{"name": "hook", "url": url}]}
    first_config = write_config(
        tmp_path / "first.yml",
        {
            "ingest": {"addr": f"127.0.0.1:{free_port()}"},
            "store": store,
            "notifications": endpoints,
        },
    )
    second_port = free_port()
    second_config = write_config(
        tmp_path / "second.yml",
        {
            "ingest": {"addr": f"127.0.0.1:{second_port}"},
            "store": store,
            "notifications": endpoints,
        },
    )
    first = Serve(first_config, tmp_path / "first.log")
    serves.append(first)
    await first.start()
    assert first.proc is not None

    second = await asyncio.to_thread(rxsinks_run, "serve", "--config", str(second_config))
    assert second.returncode == 1
    assert f"in use by another rxsinks relay (pid {first.proc.pid}" in second.stderr
    assert "one relay per store" in second.stderr and "Traceback" not in second.stderr
    assert refused(second_port)
    # the CLI reading the store beside the running relay keeps working
    listed = await asyncio.to_thread(
        rxsinks_run, "dead-letters", "list", "--json", "-c", str(second_config)
    )
    assert listed.returncode == 0, listed.stderr
    endpoints_listed = await asyncio.to_thread(
        rxsinks_run, "store", "endpoints", "-c", str(second_config)
    )
    assert endpoints_listed.returncode == 0, endpoints_listed.stderr
    assert await first.post([rxsinks.Event.new("push", id="still-serving")]) == 200
    assert await first.signal(signal.SIGTERM) == 0


# --------------------------------------------------------------------------- 14. foreign db


async def test_serve_refuses_another_applications_database(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    import sqlite3

    _, url = receiver
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    db.close()
    before = path.read_bytes()
    config = write_config(
        tmp_path / "rxsinks.yml",
        {
            "ingest": {"addr": f"127.0.0.1:{free_port()}"},
            "store": {"path": str(path)},
            "notifications": {"endpoints": [{"name": "hook", "url": url}]},
        },
    )
    result = await asyncio.to_thread(rxsinks_run, "serve", "--config", str(config))
    assert result.returncode == 1
    assert "not an rxsinks store" in result.stderr and "accounts" in result.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "rxsinks.yml"]


# --------------------------------------------------------------------------- 16. full disk


async def test_a_full_disk_is_reported_by_healthz_and_logged_once_a_minute(
    tmp_path: Path, receiver: tuple[Receiver, str], serves: list[Serve]
) -> None:
    target, url = receiver
    target.status = lambda ids: 503  # nothing drains: the store only grows
    config = write_config(
        tmp_path / "rxsinks.yml",
        {
            "ingest": {"addr": f"127.0.0.1:{free_port()}", "grace": "1s"},
            "store": {"path": str(tmp_path / "rxsinks.db")},
            "notifications": {
                "endpoints": [{"name": "hook", "url": url, "threshold": 1, "backoff": "1s"}]
            },
        },
    )
    serve = Serve(config, tmp_path / "serve.log")
    serves.append(serve)
    # a file size limit of 2 MiB stands in for a full disk: writes past it fail with EFBIG
    # (Python ignores SIGXFSZ), for the database as for its write-ahead log
    with serve.log.open("ab") as out:
        serve.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                'ulimit -f 2048 && exec "$@"',
                "--",
                sys.executable,
                "-m",
                "rxsinks",
                "serve",
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=out,
        )
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{serve.base}/healthz") as answer:
                    if answer.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        refusals = 0
        for index in range(400):  # bounded: 400 x 100 x 2 KB is far past 2 MiB
            events = [
                rxsinks.Event.new("push", id=f"d-{index}-{i}", padding="x" * 2000)
                for i in range(100)
            ]
            status = await serve.post(events)
            if status == 503:
                refusals += 1
                if refusals == 3:
                    break
            else:
                assert status == 200
                await asyncio.sleep(0.3)  # checkpoints run: the database itself grows
        assert refusals == 3
        async with session.get(f"{serve.base}/healthz") as answer:
            assert answer.status == 503  # before: 200, while every POST was refused
            assert (await answer.text()).startswith("store cannot write:")
        # the failing checkpoints (four a second) and refusals go on for a while
        await asyncio.sleep(1.5)
        for _ in range(5):
            assert await serve.post(events) == 503
    assert await serve.signal(signal.SIGTERM) in (0, 1)
    log = serve.log.read_text()
    assert log.count("WAL checkpoint failed") <= 1  # before: a line every 250 ms
    assert log.count("store refused") <= 1  # before: one per request
    assert "Traceback" not in log
