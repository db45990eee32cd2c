"""A real ``redis-server`` for the tests, on a free 127.0.0.1 port in a temporary directory.

Fixtures (a test module loads them with ``pytest_plugins = ["tests.redis_server"]``):

* ``redis_server``: one server per test module (``--save '' --appendonly yes --appendfsync
  always``, so an acknowledged write survives even a SIGKILL of the server); always stopped.
* ``redis_url``: its URL, with the database flushed before each test.
* ``own_redis``: a :class:`RedisServer` of the test's own, for tests that kill and restart it.

A missing ``redis-server`` binary skips the test, except with ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return path


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; :meth:`kill` and :meth:`start` again keep its data dir
    and port, as a crash and a restart of the same server would."""

    def __init__(self, directory: Path) -> None:
        self.binary = _binary()
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (on a new free port the first time, then on the same one)."""
        for _ in range(3):  # another process may grab the free port before the server binds it
            port = self.port or _free_port()
            log = self.directory / "redis.log"
            process = subprocess.Popen(
                [
                    self.binary,
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--dir", str(self.directory),
                    "--save", "",
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--logfile", str(log),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    self.port, self.process = port, process
                    return
                time.sleep(0.02)
            process.kill()
            process.wait()
            if self.port:
                break  # a restart must keep its port: do not wander off to another one
        text = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}:\n{text}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown save; the append-only file is all that is left)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it takes too long)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    with redis.Redis(host="127.0.0.1", port=redis_server.port) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
