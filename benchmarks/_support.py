"""Shared pieces of the benchmarks: the receiver process and machine facts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


@contextmanager
def receiver(*args: str) -> Iterator[str]:
    """Start ``benchmarks/receiver.py`` in its own process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "receiver.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"receiver did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def counts(base: str) -> dict[str, int]:
    """The receiver's counters."""
    with urllib.request.urlopen(f"{base}/count", timeout=10) as answer:
        return dict(json.load(answer))


def reset(base: str) -> None:
    """Clear the receiver's counters."""
    request = urllib.request.Request(f"{base}/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
