"""The operator page with many endpoints: how long its API takes to answer, and the page to draw.

A relay (in this process, memory store, a token) with ``--endpoints`` endpoints, all posting to
one counting receiver in its own process on 127.0.0.1, delivers a few events to each; then a
full window of samples (5 minutes' worth, what the sparklines carry) is taken through the
page's own sampler. Each of the page's requests is timed ``--rounds`` times over HTTP:
``GET /api/endpoints`` (with and without the sparkline samples), ``GET /api/ingest``, one
``GET /api/endpoints/{name}`` and the page itself. With ``--browser`` (Debian's chromium and
chromedriver, selenium), a headless Chromium logs in and is timed until the table shows every
endpoint, and one refresh (fetch and JSON parse of ``/api/endpoints`` in the page) is timed.

Last line: one JSON object with ``endpoints`` (the count); per request (``list``,
``list_without_series``, ``ingest``, ``one_endpoint``, ``page``) the best and median
milliseconds and the answer's kilobytes; and the browser's figures (``null`` without
``--browser``).

Usage: ``python benchmarks/ui_api.py [--endpoints N] [--rounds R] [--browser]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from _support import counts, machine, receiver

import rxsinks
from rxsinks._service.config import parse_config
from rxsinks._service.relay import Relay
from rxsinks._service.ui import OPERATOR_UI
from rxsinks._service.ui._history import HISTORY, RESOLUTION

TOKEN = "benchmark-token-0123456789"


async def time_requests(base: str, path: str, rounds: int) -> dict[str, float]:
    timings, size = [], 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(rounds):
            started = time.perf_counter()
            async with session.get(base + path) as answer:
                body = await answer.read()
                assert answer.status == 200, (path, answer.status)
                if answer.content_type == "application/json":
                    json.loads(body)
            timings.append(time.perf_counter() - started)
            size = len(body)
    return {
        "best_ms": round(min(timings) * 1000, 2),
        "median_ms": round(statistics.median(timings) * 1000, 2),
        "kilobytes": round(size / 1024, 1),
    }


def browser_figures(base: str, endpoints: int) -> dict[str, float] | None:
    """Seconds until the page shows every endpoint, and one in-page refresh."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        print("no chromium/chromedriver: browser figures skipped")
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    profile = tempfile.TemporaryDirectory(prefix="rxsinks-bench-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_window_size(1440, 900)
        driver.get(base + "/ui")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        started = time.perf_counter()
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        deadline = started + 60
        while time.perf_counter() < deadline:
            rows = driver.execute_script(
                "return document.querySelectorAll('#endpoints tbody tr').length"
            )
            if rows == endpoints:
                break
            time.sleep(0.01)
        shown = time.perf_counter() - started
        refresh = driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const started = performance.now();
            fetch('/api/endpoints').then(r => r.json())
              .then(() => done(performance.now() - started));
            """
        )
        return {
            "login_to_full_table_s": round(shown, 3),
            "in_page_fetch_and_parse_ms": round(float(refresh), 1),
        }
    finally:
        driver.quit()
        profile.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    with receiver() as base_url:
        config = parse_config(
            {
                "ingest": {"addr": "127.0.0.1:0", "token": TOKEN},
                "store": {"kind": "memory"},
                "notifications": {
                    "endpoints": [
                        {"name": f"endpoint-{i:04d}", "url": f"{base_url}/events?n={i}"}
                        for i in range(args.endpoints)
                    ]
                },
            },
            source="benchmark",
        )
        relay = Relay(config)
        await relay.start()
        try:
            events = [rxsinks.Event.new("push", id=f"bench-{i}") for i in range(5)]
            await relay.accept(events)
            deadline = time.monotonic() + 60
            while counts(base_url)["events"] < 5 * args.endpoints:
                if time.monotonic() > deadline:
                    raise RuntimeError("the endpoints did not deliver within 60 s")
                await asyncio.sleep(0.1)
            ui = relay.app[OPERATOR_UI]
            for _ in range(round(HISTORY / RESOLUTION)):
                await ui.sample()  # a full window: the largest answer the page gets
            base = relay.url.rsplit("/events", 1)[0]
            figures: dict[str, Any] = {}
            for label, path in (
                ("list", "/api/endpoints"),
                ("list_without_series", "/api/endpoints?series=0"),
                ("ingest", "/api/ingest"),
                ("one_endpoint", "/api/endpoints/endpoint-0000"),
                ("page", "/ui"),
            ):
                figures[label] = await time_requests(base, path, args.rounds)
                print(f"GET {path}: {figures[label]}")
            browser = (
                await asyncio.to_thread(browser_figures, base, args.endpoints)
                if args.browser
                else None
            )
            if browser is not None:
                print(f"browser: {browser}")
        finally:
            await relay.stop(0)
    print(
        json.dumps(
            {
                "benchmark": "ui_api",
                "endpoints": args.endpoints,
                "samples_per_endpoint": round(HISTORY / RESOLUTION),
                **figures,
                "browser": browser,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
