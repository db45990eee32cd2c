"""``rxsinks demo``: a real relay between local receivers, watched live.

Everything runs in one process on 127.0.0.1 (ports picked by the system, nothing else on the
network): three webhook receivers (``healthy``; ``flaky``, which answers 503 for its first
:data:`FLAKY_SECONDS` seconds then recovers; ``no-pulls``, healthy, whose endpoint ignores
``pull`` events), a :class:`~rxsinks._service.relay.Relay` with its ingest on a free port and its
default durable store (SQLite, in a temporary directory), and a sender that posts
registry-style events (the packaged capture of a real registry, repeated with fresh ids)
through the real HTTP ingest with :func:`~rxsinks._service.ingest.post_events`, the code of
``rxsinks send``. Progress bars and a live table of per-endpoint metrics show the flow; the
end is a metrics summary and a check that every receiver got exactly the events it should,
in order. The relay's operator page (``/ui``) is printed with the demo's throwaway token;
``linger`` keeps the relay running after the events arrived, so a newcomer can open it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from .._event import Event, decode_envelope, sample_events
from .._exceptions import EnvelopeError
from .config import parse_config
from .ingest import post_events
from .relay import Relay
from .ui import page_url

__all__ = ["FLAKY_SECONDS", "demo_events", "run_demo"]

FLAKY_SECONDS = 2.0
"""How long the flaky receiver answers 503 after its first request."""

_SEND_RATE = 1000.0  # events per second: slow enough to watch, fast enough to finish soon
_SEND_BATCH = 20  # events per POST to the ingest
_DELIVERY_DEADLINE = 40.0  # seconds after sending for every receiver to have everything
_GRACE = 5.0


@dataclass
class _Receiver:
    """A webhook receiver on 127.0.0.1 that records the ids of the events it accepted."""

    name: str
    fail_for: float = 0.0
    ids: list[str] = field(default_factory=list)
    rejected: int = 0
    _first: float | None = None
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if now - self._first < self.fail_for:
            self.rejected += 1
            return web.Response(status=503, text="warming up")
        try:
            events = decode_envelope(body)
        except EnvelopeError as exc:
            return web.Response(status=400, text=str(exc))
        self.ids.extend(event.id for event in events)
        return web.Response(text="ok")


def demo_events(count: int) -> list[Event]:
    """``count`` registry events: the packaged capture repeated, each with a fresh ``id``."""
    samples = [event.to_dict() for event in sample_events()]
    events: list[Event] = []
    for index in range(count):
        data = dict(samples[index % len(samples)])
        data["id"] = str(uuid.uuid4())  # same key, same place: only the value changes
        events.append(Event.from_dict(data))
    return events


class _StateLines(logging.Handler):
    """Keeps the relay's endpoint state-change lines for the live view and the summary."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=6)
        self.all: list[str] = []
        self._start = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "rxsinks.relay" or not hasattr(record, "state"):
            return
        line = f"{time.monotonic() - self._start:5.1f}s  {record.getMessage()}"
        self.lines.append(line)
        self.all.append(line)


@dataclass
class _Plan:
    """One endpoint of the demo: its receiver and the ids it must receive, in order."""

    receiver: _Receiver
    expected: list[str]
    note: str


def _metrics_table(relay: Relay, plans: dict[str, _Plan], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("endpoint", no_wrap=True)
    for column in ("breaker", "pending", "events", "ok", "failed", "errors"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("statuses", no_wrap=True)
    table.add_column("received", justify="right", no_wrap=True)
    for endpoint in relay.endpoints:
        plan = plans[endpoint.name]
        snap = endpoint.metrics()
        # "503 Service Unavailable" -> "503": the code says it, and the table stays narrow
        statuses = " ".join(
            f"{code.split()[0]}:{count}" for code, count in sorted(snap.statuses.items())
        )
        breaker = Text(snap.breaker, style="green" if snap.breaker == "closed" else "bold red")
        table.add_row(
            endpoint.name,
            breaker,
            str(snap.pending),
            str(snap.events),
            str(snap.successes),
            str(snap.failures),
            str(snap.errors),
            statuses or "-",
            f"{len(plan.receiver.ids)}/{len(plan.expected)}",
        )
    legend = "; ".join(f"{name}: {plan.note}" for name, plan in plans.items())
    table.caption = legend
    table.caption_justify = "left"
    return table


class _LiveView:
    """What the live display shows: progress bars, the metrics table, recent state changes."""

    def __init__(
        self, relay: Relay, plans: dict[str, _Plan], progress: Progress, log: _StateLines
    ) -> None:
        self.relay = relay
        self.plans = plans
        self.progress = progress
        self.log = log

    def __rich__(self) -> RenderableType:
        recent = Text("\n".join(self.log.lines) or "no endpoint state change yet", style="dim")
        return Group(
            self.progress,
            _metrics_table(self.relay, self.plans, "endpoint metrics"),
            Text("endpoint state changes:", style="bold"),
            recent,
        )


@dataclass
class _Capture:
    """Routes the ``rxsinks`` loggers to the demo's view while it runs, then restores them."""

    handler: _StateLines
    _saved: tuple[int, bool, list[logging.Handler]] | None = None

    def __enter__(self) -> _Capture:
        root = logging.getLogger("rxsinks")
        self._saved = (root.level, root.propagate, list(root.handlers))
        # per-attempt warnings would flood a demo that fails on purpose: the live table shows
        # them as counts, and the state changes come through this handler
        root.handlers = [self.handler]
        root.propagate = False
        root.setLevel(logging.INFO)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._saved is not None
        root = logging.getLogger("rxsinks")
        root.setLevel(self._saved[0])
        root.propagate = self._saved[1]
        root.handlers = self._saved[2]


async def run_demo(
    events: int = 3000,
    *,
    quiet: bool = False,
    console: Console | None = None,
    linger: float = 0.0,
) -> bool:
    """Run the demo; return whether every receiver got exactly what it should.

    Args:
        events: how many events to send through the ingest.
        quiet: print only the result line (no live view, no tables), and the operator page's
            address when lingering.
        console: where to print (a default :class:`rich.console.Console` when ``None``).
        linger: seconds to keep the relay and its operator page running once the events
            arrived (SIGINT ends it early).
    """
    if events < 1:
        raise ValueError(f"events must be at least 1, got {events}")
    if not linger >= 0:
        raise ValueError(f"linger must be 0 or more seconds, got {linger}")
    if console is None:
        console = Console()
        if not console.is_terminal and console.width < 100:
            # a log file or a CI job: 80 columns would squeeze the table
            console = Console(width=100)
    state_lines = _StateLines()
    with _Capture(state_lines):
        return await _run(events, quiet, console, state_lines, linger)


async def _run(
    count: int, quiet: bool, console: Console, state_lines: _StateLines, linger: float = 0.0
) -> bool:
    healthy = _Receiver("healthy")
    flaky = _Receiver("flaky", fail_for=FLAKY_SECONDS)
    no_pulls = _Receiver("no-pulls")
    receivers = (healthy, flaky, no_pulls)
    for receiver in receivers:
        await receiver.start()
    relay: Relay | None = None
    # the default durable store, in a throwaway directory: the demo leaves nothing behind
    scratch = tempfile.TemporaryDirectory(prefix="rxsinks-demo-")
    # a throwaway token: the operator page shows dead letters and replays only behind one
    token = secrets.token_urlsafe(12)
    try:
        config = parse_config(
            {
                "ingest": {"addr": "127.0.0.1:0", "grace": f"{_GRACE}s", "token": token},
                "store": {"path": os.path.join(scratch.name, "rxsinks.db")},
                "notifications": {
                    "endpoints": [
                        {
                            "name": "healthy",
                            "url": healthy.url,
                            "batch": {"maxevents": 50, "maxdelay": "20ms"},
                        },
                        {
                            "name": "flaky",
                            "url": flaky.url,
                            "threshold": 3,
                            "backoff": "250ms",
                            "batch": {"maxevents": 50, "maxdelay": "20ms"},
                        },
                        # the registry's own shape: one event per POST, pulls ignored
                        {"name": "no-pulls", "url": no_pulls.url, "ignore": {"actions": ["pull"]}},
                    ]
                },
            },
            source="demo",
        )
        relay = Relay(config)
        await relay.start()
        if not quiet or linger:
            console.print(
                f"operator page: {page_url(relay.url)} (log in with the token {token})",
                highlight=False,
                soft_wrap=True,
            )
        batch = demo_events(count)
        all_ids = [event.id for event in batch]
        plans = {
            "healthy": _Plan(healthy, all_ids, "always 200, 50 events per POST"),
            "flaky": _Plan(flaky, all_ids, f"503 for {FLAKY_SECONDS:g}s, then 200"),
            "no-pulls": _Plan(
                no_pulls,
                [event.id for event in batch if event.action != "pull"],
                "ignores pulls, 1 event per POST",
            ),
        }
        await _send_and_watch(relay, batch, plans, quiet, console, state_lines, token)
        if linger:
            await _linger(linger, page_url(relay.url), console)
        report = await relay.stop(_GRACE)
        relay = None
        return _summary(count, plans, report.flushed, quiet, console, state_lines)
    finally:
        if relay is not None:
            await relay.stop(0)
        for receiver in receivers:
            await receiver.stop()
        scratch.cleanup()


def _delivered(plans: dict[str, _Plan]) -> bool:
    return all(len(plan.receiver.ids) >= len(plan.expected) for plan in plans.values())


async def _linger(seconds: float, url: str, console: Console) -> None:
    """Keep everything running for ``seconds`` (the operator page stays open); SIGINT ends it."""
    console.print(
        f"the relay keeps running for {seconds:g} s: open {url} (Ctrl-C to stop now)",
        highlight=False,
        soft_wrap=True,
    )
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, done.set)
    try:
        await asyncio.wait_for(done.wait(), seconds)
    except TimeoutError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _send_and_watch(
    relay: Relay,
    batch: list[Event],
    plans: dict[str, _Plan],
    quiet: bool,
    console: Console,
    state_lines: _StateLines,
    token: str | None = None,
) -> None:
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        auto_refresh=False,
    )
    sending = progress.add_task("sending to the ingest", total=len(batch))
    tasks: dict[str, TaskID] = {
        name: progress.add_task(f"delivered to {name}", total=len(plan.expected))
        for name, plan in plans.items()
    }

    def advance(events: int) -> None:
        progress.advance(sending, events)

    async def watch() -> None:
        for name, plan in plans.items():
            progress.update(tasks[name], completed=len(plan.receiver.ids))

    async def deliver() -> None:
        await post_events(
            relay.url, batch, token=token, batch=_SEND_BATCH, rate=_SEND_RATE, on_progress=advance
        )
        deadline = time.monotonic() + _DELIVERY_DEADLINE
        while not _delivered(plans) and time.monotonic() < deadline:
            await watch()
            await asyncio.sleep(0.05)
        await watch()

    if quiet:
        await deliver()
        return
    view = _LiveView(relay, plans, progress, state_lines)
    with Live(view, console=console, refresh_per_second=8, transient=False):
        job = asyncio.ensure_future(deliver())
        while not job.done():
            await watch()
            await asyncio.sleep(0.1)
        await job
    if not console.is_terminal:
        console.line()  # Live ends its last frame with a newline only on a terminal


def _checks(plans: dict[str, _Plan]) -> Iterator[tuple[str, bool, str]]:
    for name, plan in plans.items():
        got = plan.receiver.ids
        if got == plan.expected:
            yield name, True, f"{len(got)}/{len(plan.expected)} events, in order, none twice"
        elif sorted(got) == sorted(plan.expected):
            yield name, False, f"all {len(got)} events, but not in the order sent"
        else:
            missing = len(set(plan.expected) - set(got))
            extra = len(got) - len(set(got))
            yield (
                name,
                False,
                f"{len(got)}/{len(plan.expected)} events: {missing} missing, {extra} duplicated",
            )


def _summary(
    count: int,
    plans: dict[str, _Plan],
    flushed: bool,
    quiet: bool,
    console: Console,
    state_lines: _StateLines,
) -> bool:
    results = list(_checks(plans))
    ok = flushed and all(passed for _, passed, _ in results)
    if quiet:
        parts = ", ".join(
            f"{name} {len(plans[name].receiver.ids)}/{len(plans[name].expected)}"
            for name, _, _ in results
        )
        console.print(
            f"rxsinks demo: {count} events sent; {parts}: {'OK' if ok else 'FAILED'}",
            highlight=False,
            soft_wrap=True,  # one line, whatever the width: scripts grep it
        )
        return ok
    flaky = plans["flaky"].receiver
    console.print(
        f"the flaky receiver refused {flaky.rejected} request(s) before recovering", highlight=False
    )
    for name, passed, detail in results:
        mark = "[green]ok[/green]  " if passed else "[red]FAIL[/red]"
        console.print(f"{mark} {name}: {detail}", highlight=False)
    if not flushed:
        console.print("[red]FAIL[/red] the relay did not flush within its grace period")
    verdict = (
        "[bold green]every receiver got every event it should[/bold green]"
        if ok
        else "[bold red]some events did not arrive as they should[/bold red]"
    )
    console.print(verdict)
    return ok
