"""The ``rxsinks`` command: ``serve``, ``check-config``, ``send`` and ``demo``.

Exit codes: 0 success; 1 a runtime failure (port in use, an ingest that refused events, a demo
check that failed); 2 bad input (an invalid configuration, an unreadable events file, a wrong
option). Problems are printed one per line on stderr, never as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from yarl import URL

from . import __version__
from ._config import ConfigErrors, LogConfig, RelayConfig, load_config
from ._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event, decode_envelope, decode_ndjson
from ._exceptions import DeliveryError, EnvelopeError
from ._ingest import post_events
from ._relay import Relay, build_endpoints, open_store
from ._store import StoreError
from ._units import parse_duration

__all__ = ["main"]

DEFAULT_INGEST_URL = "http://127.0.0.1:5056/events"
_SWITCH_INTERVAL = 0.0002
_CONTENT_TYPES = {"v1": MEDIA_TYPE_V1, "v2": MEDIA_TYPE_V2, "json": "application/json"}

# attributes every LogRecord has: anything else on a record came from ``extra=``
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_FIELDS}


class _TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``: readable, and still greppable by field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return text


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(_extras(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def _configure_logging(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if config.format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(config.level.upper())


def _fail(problems: Sequence[object], code: int) -> NoReturn:
    # plain echo, not rich: a problem must stay on one line however wide the terminal is
    for problem in problems:
        click.echo(str(problem), err=True)
    sys.exit(code)


def _load(path: str) -> tuple[RelayConfig, int]:
    """Load a configuration and check that its endpoints can be built; exit 2 on problems."""
    try:
        config = load_config(path)
        endpoints = build_endpoints(config)
    except ConfigErrors as exc:
        _fail(exc.problems, 2)
    return config, len(endpoints)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rxsinks")
def main() -> None:
    """rxsinks: a relay between a Docker registry and its webhook receivers.

    Point the registry's notifications.endpoints[].url at `rxsinks serve`, move the
    endpoint list into rxsinks' configuration unchanged, and gain batching, signatures,
    TLS options, filters, bounded retries and metrics. Try `rxsinks demo`.
    """


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    envvar="RXSINKS_CONFIG",
    type=click.Path(dir_okay=False),
    help="The YAML configuration (a registry config.yml works as it is). Env: RXSINKS_CONFIG.",
)
def serve(config_path: str) -> None:
    """Run the relay until SIGTERM or SIGINT.

    Accepts events on the ingest (POST /events), delivers them to every enabled endpoint, serves
    /healthz, /metrics and /debug/vars. On SIGTERM or SIGINT it stops accepting (503), flushes
    for up to ingest.grace, logs what is left per endpoint and exits 0.
    """
    config, _ = _load(config_path)
    _configure_logging(config.log)
    try:
        asyncio.run(_serve(config))
    except OSError as exc:  # the address cannot be bound: Relay.start names it
        _fail([f"error: {exc.strerror or exc}"], 1)
    except StoreError as exc:  # corrupt, unwritable or unreachable store: nothing was touched
        _fail([f"error: {exc}"], 1)


async def _serve(config: RelayConfig) -> None:
    if config.store.kind == "sqlite":
        # The store's thread hands each commit back to the loop; with the default 5 ms GIL
        # switch interval that hand-back waits behind the busy loop thread, and every
        # single-event delivery waits on the previous block's confirm (measured: 1,250 vs 1,620
        # events/s with 0.1 ms). This process runs nothing else, so a short interval is cheap.
        sys.setswitchinterval(_SWITCH_INTERVAL)
    relay = Relay(config)
    try:
        await relay.start()
    except BaseException:
        if relay.store is not None:
            await relay.store.close()
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        logging.getLogger("rxsinks.relay").info("signal received: stopping")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await relay.stop()


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file: str) -> None:
    """Validate FILE and print the effective configuration as YAML, secrets redacted.

    Every default is filled in and durations are in seconds. Exits 2 with one line per
    problem (key path: what is expected) when the configuration is invalid.
    """
    config, built = _load(file)
    click.echo(yaml.safe_dump(config.redacted(), sort_keys=False, allow_unicode=True), nl=False)
    disabled = len(config.endpoints) - built
    note = f" ({disabled} disabled)" if disabled else ""
    Console(stderr=True).print(
        f"[green]{file}: valid[/green], {built} endpoint(s) to deliver to{note}", highlight=False
    )


def _read_events(file: str) -> list[Event]:
    """Events from a JSON envelope or NDJSON file (``-``: stdin); exit 2 naming the problem."""
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as stream:
                text = stream.read()
    except FileNotFoundError:
        _fail([f"error: {file}: file not found"], 2)
    except UnicodeDecodeError as exc:
        _fail([f"error: {file}: not UTF-8 text (bad byte at offset {exc.start})"], 2)
    except OSError as exc:
        _fail([f"error: {file}: cannot read: {exc.strerror or exc}"], 2)
    try:
        return decode_envelope(text)
    except EnvelopeError as envelope_error:
        try:
            return decode_ndjson(text)
        except EnvelopeError as ndjson_error:
            _fail(
                [
                    f"error: {file}: neither a registry envelope ({envelope_error}) "
                    f"nor NDJSON events ({ndjson_error})"
                ],
                2,
            )


def _ingest_url(url: str) -> str:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise click.BadParameter(f"{url!r} is not a URL", param_hint="--url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise click.BadParameter(
            f"expected an http(s) URL like {DEFAULT_INGEST_URL}, got {url!r}", param_hint="--url"
        )
    if parsed.path in ("", "/"):
        parsed = parsed.with_path("/events")
    return str(parsed)


@main.command()
@click.argument("file")
@click.option(
    "--url",
    default=DEFAULT_INGEST_URL,
    show_default=True,
    help="The ingest to post to (/events is added to a bare host:port URL).",
)
@click.option(
    "--token",
    envvar="RXSINKS_TOKEN",
    help="Sent as 'Authorization: Bearer TOKEN'. Env: RXSINKS_TOKEN.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Events per request (1 is what the registry sends).",
)
@click.option(
    "--content-type",
    type=click.Choice(sorted(_CONTENT_TYPES)),
    default="v1",
    show_default=True,
    help="The envelope media type: the registry's v1 or v2, or plain json.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many events per second (default: as fast as the ingest answers).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds for each request.",
)
def send(
    file: str,
    url: str,
    token: str | None,
    batch: int,
    content_type: str,
    rate: float | None,
    timeout: float,
) -> None:
    """Post events from FILE (a JSON envelope or NDJSON, one event per line; - for stdin).

    Events are sent in order, each envelope once, after the previous one was accepted: for
    replaying captured events into an ingest. Exits 1 at the first refused request, saying how
    many events were accepted before it.
    """
    target = _ingest_url(url)
    events = _read_events(file)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("send", total=len(events))
    try:
        with progress:
            sent = asyncio.run(
                post_events(
                    target,
                    events,
                    token=token,
                    batch=batch,
                    content_type=_CONTENT_TYPES[content_type],
                    timeout=timeout,
                    rate=rate,
                    on_progress=lambda count: progress.advance(task, count),
                )
            )
    except DeliveryError as exc:
        notes = "; ".join(getattr(exc, "__notes__", ()))
        _fail([f"error: {exc}" + (f" ({notes})" if notes else "")], 1)
    requests = -(-len(events) // batch)
    click.echo(f"sent {sent} event(s) in {requests} request(s) to {target}")


@main.command()
@click.option(
    "--events",
    "count",
    type=click.IntRange(min=1, max=1_000_000),
    default=3000,
    show_default=True,
    help="How many events to send through the relay.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the result line.")
def demo(count: int, quiet: bool) -> None:
    """Watch a real relay deliver events to three local receivers.

    Starts receivers on 127.0.0.1 (one healthy, one failing for 2 seconds then recovering, one
    whose endpoint ignores pulls), a relay with its ingest on a free port, and sends registry
    events through its HTTP ingest, with progress bars and a live table of metrics. Ends with a
    summary and checks that each receiver got exactly its events, in order (exit 1 if not).
    Needs no network beyond 127.0.0.1.
    """
    from ._demo import run_demo

    ok = asyncio.run(run_demo(count, quiet=quiet))
    sys.exit(0 if ok else 1)


def _since(value: str | None) -> float | None:
    """``--since``: a Go duration back from now (``2h``) or an ISO 8601 time."""
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a duration like 2h or a time like 2026-11-29T17:00:00Z, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _running_relay(config: RelayConfig) -> str | None:
    """The base URL of a relay serving this configuration right now, if one answers."""
    host = config.ingest.host or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    base = f"http://{host}:{config.ingest.port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:
            return base if answer.status == 200 else None
    except (OSError, ValueError):
        return None


def _admin(config: RelayConfig, base: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{base}{path}", method=method)
    if config.ingest.token:
        request.add_header("Authorization", f"Bearer {config.ingest.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        _fail([f"error: the running relay answered {exc.code}: {exc.read().decode()[:200]}"], 1)
    except OSError as exc:
        _fail([f"error: cannot reach the running relay at {base}: {exc}"], 1)


async def _with_store(config: RelayConfig, action: Any) -> Any:
    store = open_store(config.store)
    if store is None:
        _fail(["error: store.kind is memory: dead letters live only in a running relay"], 2)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


@main.group("dead-letters")
def dead_letters() -> None:
    """List and replay the events endpoints gave up on (kept by the durable store).

    While `rxsinks serve` runs with the same configuration, these commands go through it (so
    replayed events go straight back into its queues); otherwise they open the store directly
    and the next `serve` delivers what was replayed.
    """


_CONFIG_OPTION = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    envvar="RXSINKS_CONFIG",
    type=click.Path(dir_okay=False),
    help="The relay's YAML configuration. Env: RXSINKS_CONFIG.",
)
_ENDPOINT_OPTION = click.option("--endpoint", "-e", default=None, help="Only this endpoint.")
_SINCE_OPTION = click.option(
    "--since", default=None, help="Only those given up since: a duration (2h) or an ISO time."
)


@dead_letters.command("list")
@_CONFIG_OPTION
@_ENDPOINT_OPTION
@_SINCE_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_dead_letters(
    config_path: str, endpoint: str | None, since: str | None, as_json: bool
) -> None:
    """List dead letters: endpoint, event, when, attempts and the last error."""
    config, _ = _load(config_path)
    after = _since(since)
    base = _running_relay(config)
    rows: list[dict[str, Any]]
    if base is not None:
        query = urllib.parse.urlencode(
            {k: v for k, v in {"endpoint": endpoint, "since": after}.items() if v is not None}
        )
        rows = _admin(config, base, f"/dead-letters?{query}")["dead_letters"]
    else:
        try:
            records = asyncio.run(
                _with_store(config, lambda store: store.dead_letters(endpoint, after))
            )
        except StoreError as exc:
            _fail([f"error: {exc}"], 1)
        rows = [record.to_dict() for record in records]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    console = Console()
    table = Table(title=f"{len(rows)} dead letter(s)")
    for column in ("endpoint", "event", "action", "repository", "given up", "attempts", "error"):
        table.add_column(column)
    for row in rows:
        event = row["event"]
        target = event.get("target") if isinstance(event.get("target"), dict) else {}
        table.add_row(
            row["endpoint"],
            str(event.get("id", "")),
            str(event.get("action", "")),
            str(target.get("repository", "")),
            datetime.fromtimestamp(row["time"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
            str(row["attempts"]),
            row["error"],
        )
    console.print(table)


@dead_letters.command("replay")
@_CONFIG_OPTION
@_ENDPOINT_OPTION
@_SINCE_OPTION
def replay_dead_letters(config_path: str, endpoint: str | None, since: str | None) -> None:
    """Put dead letters back on their endpoints' queues, in their original order."""
    config, _ = _load(config_path)
    after = _since(since)
    names = [endpoint] if endpoint else [e.name for e in config.endpoints]
    base = _running_relay(config)
    total = 0
    with Progress(
        TextColumn("replaying {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task("endpoints", total=len(names))
        for name in names:
            progress.update(task, description=name)
            if base is not None:
                query = urllib.parse.urlencode(
                    {k: v for k, v in {"endpoint": name, "since": after}.items() if v is not None}
                )
                total += int(
                    _admin(config, base, f"/dead-letters/replay?{query}", "POST")["replayed"]
                )
            else:
                try:
                    replayed = asyncio.run(
                        _with_store(config, lambda store, n=name: store.replay(n, after))
                    )
                except StoreError as exc:
                    _fail([f"error: {exc}"], 1)
                total += len(replayed)
            progress.advance(task)
    where = "into the running relay" if base is not None else "into the store (next serve delivers)"
    click.echo(f"replayed {total} dead letter(s) {where}")
