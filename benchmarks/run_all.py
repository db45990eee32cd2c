"""Run every benchmark, one after the other; write ``results.json`` and ``results.png``.

Each benchmark runs as its own subprocess with bounded parameters (the whole run takes a few
minutes on a 2-core machine), its output streamed here; the JSON object on its last line is kept.
``benchmarks/results.json`` gets every figure, each benchmark's command and duration, the machine
and the date; ``benchmarks/results.png`` is drawn from it (:mod:`chart`); a summary table is
printed last. A benchmark that fails is recorded with its error and the run goes on; the exit
status is then 1. One that skips (a missing binary) is recorded as skipped.

Usage: ``python benchmarks/run_all.py [--only NAME ...] [--output DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _support import HERE, machine
from chart import draw, summary_rows

# name -> arguments; each bounded to a few minutes here (the scaling one drains 1M events)
BENCHMARKS: dict[str, list[str]] = {
    "vs_registry": ["--events", "10000", "--batch", "100"],
    "latency": ["--rate", "500", "--seconds", "10"],
    "http_delivery": ["--events", "5000", "--batch", "100", "--rounds", "5"],
    "ingest": ["--events", "20000", "--per-post", "1", "--clients", "16"],
    "backlog": ["--events", "200000"],
    "inprocess": ["--events", "100000", "--rounds", "3"],
    "slow_receivers": ["--events", "640", "--endpoints", "200", "--per-endpoint", "20"],
    "endpoints_scaling": ["--endpoints", "300", "--seconds", "20", "--backlog", "1000000"],
    "redis_fanout": ["--endpoints", "300", "--events", "20000", "--old-events", "1000"],
}
TIMEOUT = 1200.0  # the scaling benchmark drains a million-event backlog


def describe_machine() -> dict[str, Any]:
    """The machine, for the record: Python, CPUs and their model, memory, the peers' versions."""
    described: dict[str, Any] = dict(machine())
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        described["cpu_model"] = models[0] if models else platform.processor()
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                described["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    for binary in ("docker-registry", "skopeo", "redis-server"):
        path = shutil.which(binary)
        if path is None:
            described[binary] = "not installed"
            continue
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        described[binary] = (done.stdout or done.stderr).strip().splitlines()[0]
    return described


def run_one(name: str, arguments: list[str]) -> dict[str, Any]:
    """Run ``benchmarks/NAME.py ARGUMENTS``, echoing its output; its last JSON line and timing."""
    command = [sys.executable, str(HERE / f"{name}.py"), *arguments]
    shown = f"python benchmarks/{name}.py {' '.join(arguments)}"
    print(f"\n=== {shown}", flush=True)
    start = time.monotonic()
    entry: dict[str, Any] = {"command": shown}
    last = ""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # its own process group: a hung benchmark is killed with the servers it started
        start_new_session=True,
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # a watchdog, since a benchmark that hangs silently would never end the loop below
    watchdog = threading.Timer(TIMEOUT, kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  {line}", end="", flush=True)
            if line.strip():
                last = line.strip()
        proc.wait()
    except KeyboardInterrupt:
        kill()  # the benchmark is in another session: Ctrl-C did not reach it
        raise
    finally:
        watchdog.cancel()
    if killed.is_set():
        entry["error"] = f"killed after {TIMEOUT:.0f}s"
    entry["seconds"] = round(time.monotonic() - start, 1)
    if "error" in entry:
        return entry
    if proc.returncode != 0:
        entry["error"] = f"exit status {proc.returncode} (its output is above)"
        return entry
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        entry["error"] = f"last line is not JSON: {last[:200]!r}"
        return entry
    # the machine is recorded once for the whole run
    result.pop("machine", None)
    entry["result"] = result
    if "skipped" in result:
        entry["skipped"] = result["skipped"]
    return entry


def print_table(results: dict[str, Any]) -> None:
    """The summary: one row per figure, rxsinks beside its baseline from the same run."""
    rows = summary_rows(results)
    header = ("benchmark", "rxsinks", "baseline (same run)", "ratio")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, tuple("-" * width for width in widths), *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    for name, entry in results["benchmarks"].items():
        if "error" in entry or "skipped" in entry:
            print(f"{name}: {entry.get('error') or 'skipped: ' + entry['skipped']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--output", type=Path, default=HERE, help="where the results go")
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": "python benchmarks/run_all.py",
        "machine": describe_machine(),
        "benchmarks": {},
    }
    for name in names:
        results["benchmarks"][name] = run_one(name, BENCHMARKS[name])
    results["seconds"] = round((datetime.datetime.now(datetime.UTC) - started).total_seconds())
    results["summary"] = [list(row) for row in summary_rows(results)]
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = args.output / "results.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    png_path = args.output / "results.png"
    draw(results, png_path)
    print_table(results)
    print(f"\nwrote {json_path} and {png_path} in {results['seconds']} s")
    failed = [name for name, entry in results["benchmarks"].items() if "error" in entry]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
