"""The operator page in a real headless Chromium, driven by selenium, against a real relay.

Debian's ``chromium`` and ``chromium-driver`` (no browser download): a missing one skips with
the reason, except with ``CI=true`` where it fails (``.ci/run`` installs them). The relay runs
in the test's event loop; every browser call runs in a thread, so the relay keeps serving.

The screenshots of the README are made here: ``RXSINKS_SCREENSHOTS=docs pytest
tests/test_ui_browser.py`` writes ``ui-overview.png`` and ``ui-endpoint.png`` into ``docs``
(by default into the test's temporary directory, so that a test run changes no file).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from rxsinks._service.ui import OPERATOR_UI
from tests.serve import until
from tests.ui_scenario import HOSTILE_REPOSITORY, PLANTED, TOKEN, AiohttpServer, Scenario

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

_T = TypeVar("_T")
_WAIT = 20.0
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # (root in CI)
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # no connection of Chromium's own: only 127.0.0.1 is reachable, and nothing else is wanted
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--force-device-scale-factor=1",
    "--lang=en-GB",
)


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    problem = None
    if chromium is None or driver is None:
        problem = (
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            problem = "selenium is not installed (pip install -e '.[dev]')"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI must have them")
        pytest.skip(problem)
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, closed after the test."""
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in _CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_window_size(1440, 900)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def scenario(aiohttp_server: AiohttpServer, tmp_path: Path) -> AsyncIterator[Scenario]:
    started = await Scenario.start(aiohttp_server, tmp_path)
    yield started
    await started.stop()


async def call(function: Callable[..., _T], *args: Any) -> _T:
    """A blocking browser call, off the loop."""
    return await asyncio.to_thread(function, *args)


async def eventually(probe: Callable[[], _T], what: str) -> _T:
    """Ask the browser until ``probe()`` gives something true; returns it.

    The page redraws its tables at every refresh and a click may load another page: an
    element that went away meanwhile (stale, or not there yet) is asked for again.
    """
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    loop = asyncio.get_running_loop()
    deadline = loop.time() + _WAIT
    while True:
        last: object
        try:
            last = result = await call(probe)
        except (StaleElementReferenceException, NoSuchElementException) as exc:
            last = exc
        else:
            if result:
                return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.1)


_READ_TABLE = """
return [...document.querySelectorAll('#endpoints tbody tr')].map(tr => ({
  name: tr.dataset.endpoint, state: tr.dataset.state,
  cells: [...tr.cells].map(td => td.innerText.trim())
}));
"""
_COLUMNS = (
    *("endpoint", "state", "pending", "events", "ok", "failures", "errors", "dead"),
    *("statuses", "last_success", "last_failure", "rate", "latency", "spark"),
)
_TIMES = "\N{MULTIPLICATION SIGN}"  # statuses read f"200{_TIMES}6"
_READ_FACTS = """
const facts = {};
for (const dd of document.querySelectorAll(arguments[0] + ' dd[data-fact]')) {
  facts[dd.dataset.fact] = dd.innerText.trim();
}
return facts;
"""
_READ_DEAD_LETTERS = """
return [...document.querySelectorAll('#dead-letters tbody tr[data-dead-letter]')].map(tr =>
  [...tr.cells].map(td => td.innerText.trim()));
"""


async def click(driver: WebDriver, by: str, value: str) -> None:
    """Click an element, found afresh (a redraw may replace it between finding and clicking)."""

    def find_and_click() -> bool:
        driver.find_element(by, value).click()
        return True

    await eventually(find_and_click, f"clicking {value}")


def table(driver: WebDriver) -> dict[str, dict[str, str]]:
    """The overview's endpoint table as a person reads it: name -> column -> text."""
    rows = driver.execute_script(_READ_TABLE)
    found = {}
    for row in rows:
        cells = dict(zip(_COLUMNS, row["cells"], strict=True))
        cells["data-state"] = row["state"]
        found[row["name"]] = cells
    return found


def save(driver: WebDriver, path: Path) -> None:
    """A screenshot of the whole page (the window grown to the page's height)."""
    height = driver.execute_script(
        "window.scrollTo(0, 0); return document.documentElement.scrollHeight"
    )
    driver.set_window_size(1440, min(max(int(height) + 20, 700), 2400))
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 900)


def javascript_errors(driver: WebDriver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry.get("source") == "javascript" or "Uncaught" in entry.get("message", "")
    ]


async def test_log_in_read_the_table_open_an_endpoint_replay_and_see_it_delivered(
    scenario: Scenario, browser: WebDriver, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("RXSINKS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    events = scenario.events(6)
    ids = [event.id for event in events]
    assert await scenario.post(events) == 200
    relay = scenario.relay
    await until(lambda: scenario.healthy.received == ids, "healthy delivering")
    await until(lambda: relay.endpoints[2].metrics().dead_letters == 6, "the dead letters")
    await until(lambda: relay.endpoints[1].breaker.state != "closed", "the breaker opening")

    # / leads to the login form; a wrong token is refused, the right one lets in
    await call(browser.get, scenario.base + "/")
    assert await call(lambda: browser.title) == "Log in · rxsinks"
    assert PLANTED not in await call(lambda: browser.page_source)
    await call(browser.find_element(By.ID, "token").send_keys, "not-the-token")
    await click(browser, By.CSS_SELECTOR, "button[type=submit]")
    message = await eventually(
        lambda: browser.find_element(By.ID, "login-message").text, "the refusal"
    )
    assert message == "Wrong token."
    await eventually(lambda: browser.find_element(By.ID, "token").send_keys(TOKEN) or True, "token")
    await click(browser, By.CSS_SELECTOR, "button[type=submit]")
    rows = await eventually(lambda: len(table(browser)) == 3 and table(browser), "the table")

    # the table
    assert list(rows) == ["healthy", "down", "dead"]
    healthy, down, dead = rows["healthy"], rows["down"], rows["dead"]
    assert healthy["state"] == "delivering" and healthy["ok"] == "6" and healthy["pending"] == "0"
    assert healthy["statuses"] == f"200{_TIMES}6" and healthy["last_failure"] == "never"
    assert "?api_key=***&region=***" in healthy["endpoint"]
    assert down["data-state"] in ("breaker_open", "breaker_half_open")
    assert down["state"].startswith("breaker ") and "since" in down["state"]
    assert down["pending"] == "6" and "503 Service Unavailable" in down["last_failure"]
    assert "http://***@127.0.0.1" in down["endpoint"]
    assert dead["dead"] == "6" and dead["failures"] == "6" and dead["statuses"] == f"422{_TIMES}6"
    facts = await call(browser.execute_script, _READ_FACTS, "#ingest-facts")
    assert facts["accepted"].startswith("6 ") and facts["store"].startswith("sqlite")
    assert facts["access"] == "token" and facts["rejected"] == "none"
    assert await call(lambda: len(browser.find_elements(By.CSS_SELECTOR, "svg.spark"))) == 3
    # a few samples, so that the sparklines show something, then the overview's screenshot
    await until(lambda: relay.app[OPERATOR_UI].history.samples >= 6, "a few samples")
    await asyncio.sleep(2.2)  # the page's next refresh
    await call(save, browser, shots / "ui-overview.png")
    assert PLANTED not in await call(lambda: browser.page_source)

    # the detail view, reached by the endpoint's link
    await click(browser, By.LINK_TEXT, "dead")
    await eventually(lambda: browser.current_url.endswith("/ui/endpoints/dead"), "the detail page")
    letters = await eventually(
        lambda: (
            len(browser.execute_script(_READ_DEAD_LETTERS)) == 6
            and browser.execute_script(_READ_DEAD_LETTERS)
        ),
        "the dead letters",
    )
    assert [row[2] for row in letters] == ids
    assert letters[0][3] == HOSTILE_REPOSITORY + ":v1"  # shown as text...
    assert await call(lambda: browser.find_elements(By.CSS_SELECTOR, "main img")) == []
    assert await call(lambda: browser.title) == "dead · rxsinks"  # ...never run
    attempts = await call(
        lambda: [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#attempts td")]
    )
    assert attempts.count("422 Unprocessable Entity") == 6
    config = await call(lambda: browser.find_element(By.ID, "config").text)
    assert '"permanent_statuses": [\n    422\n  ]' in config
    facts = await call(browser.execute_script, _READ_FACTS, "#endpoint-facts")
    assert facts["dead_letters"] == "6" and "422" in facts["last_failure_reason"]

    # replay selected: the second and fourth dead letters, once the receiver takes them
    scenario.dead.recover()
    for row in (2, 4):
        await click(browser, By.CSS_SELECTOR, f"#dead-letters tbody tr:nth-child({row}) input")
    button = await call(browser.find_element, By.ID, "replay-selected")
    assert await call(lambda: button.text) == "Replay selected (2)"
    await call(save, browser, shots / "ui-endpoint.png")
    await call(button.click)
    result = await eventually(
        lambda: (
            browser.find_element(By.ID, "replay-result").text.startswith("replayed")
            and browser.find_element(By.ID, "replay-result").text
        ),
        "the replay's answer",
    )
    assert result == "replayed 2 dead letter(s)"
    await until(lambda: scenario.dead.received == [ids[1], ids[3]], "the two replayed events")
    left = await eventually(
        lambda: (
            len(browser.execute_script(_READ_DEAD_LETTERS)) == 4
            and browser.execute_script(_READ_DEAD_LETTERS)
        ),
        "four dead letters left",
    )
    assert [row[2] for row in left] == [ids[0], ids[2], ids[4], ids[5]]

    # replay all
    await click(browser, By.ID, "replay-all")
    await eventually(
        lambda: browser.find_element(By.ID, "replay-result").text == "replayed 4 dead letter(s)",
        "the second replay's answer",
    )
    await until(lambda: sorted(scenario.dead.received) == sorted(ids), "every replayed event")
    await eventually(
        lambda: (
            browser.find_element(By.CSS_SELECTOR, "#dead-letters tbody").text == "no dead letter"
        ),
        "an empty dead-letter list",
    )
    assert PLANTED not in await call(lambda: browser.page_source)

    # the down endpoint recovers: the table shows its breaker closed and its backlog gone
    scenario.down.recover()
    await click(browser, By.CSS_SELECTOR, "a.back")
    recovered = await eventually(
        lambda: (
            table(browser).get("down", {}).get("data-state") == "delivering"
            and table(browser)["down"]
        ),
        "the down endpoint delivering again",
    )
    assert recovered["state"] == "delivering" and recovered["ok"] == "6"
    await eventually(lambda: table(browser)["down"]["pending"] == "0", "its backlog delivered")
    assert scenario.down.received == ids
    assert PLANTED not in await call(lambda: browser.page_source)

    # log out: back to the login form, and the API refuses the old page
    await click(browser, By.ID, "logout")
    await eventually(lambda: browser.title == "Log in · rxsinks", "the login form")
    assert await call(javascript_errors, browser) == []
