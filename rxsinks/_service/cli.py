"""The ``rxsinks`` command: ``serve``, ``check-config``, ``send``, ``demo``, ``dead-letters``
and ``store``.

Exit codes: 0 success; 1 a runtime failure (port in use, a store another relay holds, an ingest
that refused events, a demo check that failed); 2 bad input (an invalid configuration, an
unreadable events file, a wrong option). Problems are printed one per line on stderr, never as a
traceback. Every URL printed or logged has its user info and query values hidden
(:mod:`rxsinks._redact`), and the commands that talk to a running relay never go through the
environment's proxies (``http_proxy``...): they carry the admin token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp
import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from yarl import URL

from .._event import MEDIA_TYPE_V1, MEDIA_TYPE_V2, Event, decode_envelope, decode_ndjson
from .._exceptions import ConfigErrors, DeliveryError, EnvelopeError, StoreError
from .._redact import redact_text, redact_url
from .._store.protocol import Store
from .._version import __version__
from .build import build_endpoints, open_store
from .config import LogConfig, RelayConfig, exposure_problems, load_config
from .ingest import post_events
from .relay import Relay
from .ui import page_url
from .units import parse_duration

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
    """``time level logger: message key=value ...``: readable, and still greppable by field.

    Every URL in the line is redacted (:func:`~rxsinks._redact.redact_text`): a last guard for
    a message built from text rxsinks does not control (a library's exception).
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return redact_text(text)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extras.

    URLs are redacted as in the text format.
    """

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
        return redact_text(json.dumps(data, default=str, ensure_ascii=False))


def _configure_logging(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if config.format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(config.level.upper())


def _fail(problems: Sequence[object], code: int) -> NoReturn:
    # plain echo, not rich: a problem must stay on one line however wide the terminal is
    for problem in problems:
        click.echo(redact_text(str(problem)), err=True)
    sys.exit(code)


def _load(path: str, *, serving: bool = False) -> tuple[RelayConfig, int]:
    """Load a configuration and check that its endpoints can be built; exit 2 on problems.

    With ``serving`` (serve, check-config), an ingest that would be an open relay is a problem
    too (:func:`~rxsinks._service.config.exposure_problems`).
    """
    try:
        config = load_config(path)
        endpoints = build_endpoints(config)
    except ConfigErrors as exc:
        _fail(exc.problems, 2)
    if serving:
        exposure = exposure_problems(config.ingest)
        if exposure:
            _fail(exposure, 2)
    return config, len(endpoints)


_CONFIG_OPTION = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    envvar="RXSINKS_CONFIG",
    type=click.Path(dir_okay=False),
    help="The relay's YAML configuration (a registry config.yml works as it is). "
    "Env: RXSINKS_CONFIG.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rxsinks")
def main() -> None:
    """rxsinks: a relay between a Docker registry and its webhook receivers.

    Point the registry's notifications.endpoints[].url at `rxsinks serve`, move the
    endpoint list into rxsinks' configuration unchanged, and gain batching, signatures,
    TLS options, filters, bounded retries and metrics. Try `rxsinks demo`.
    """


@main.command()
@_CONFIG_OPTION
def serve(config_path: str) -> None:
    """Run the relay until SIGTERM or SIGINT.

    Accepts events on the ingest (POST /events), delivers them to every enabled endpoint, serves
    /healthz, /metrics and /debug/vars. On SIGTERM or SIGINT it stops accepting (503), flushes
    for up to ingest.grace, logs what is left per endpoint and exits 0.
    """
    config, _ = _load(config_path, serving=True)
    _configure_logging(config.log)
    try:
        asyncio.run(_serve(config))
    except OSError as exc:  # the address cannot be bound: Relay.start names it
        _fail([f"error: {exc.strerror or exc}"], 1)
    except StoreError as exc:  # corrupt, unwritable, unreachable, in use: nothing was touched
        _fail([f"error: {exc}"], 1)
    except ConfigErrors as exc:  # found at start (the host resolved beyond loopback)
        _fail(exc.problems, 2)


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
    logging.getLogger("rxsinks.relay").info("operator page: %s", page_url(relay.url))
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
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--config",
    "-c",
    "config_path",
    envvar="RXSINKS_CONFIG",
    type=click.Path(dir_okay=False),
    help="The same as FILE, spelled as serve takes it. Env: RXSINKS_CONFIG.",
)
def check_config(file: str | None, config_path: str | None) -> None:
    """Validate FILE and print the effective configuration as YAML, secrets redacted.

    FILE may also be given as ``--config FILE``, the way ``serve`` takes it. Every default is
    filled in and durations are in seconds. Exits 2 with one line per problem (key path: what
    is expected) when the configuration is invalid.
    """
    if file is not None and config_path is not None and file != config_path:
        raise click.UsageError(f"two configurations given: FILE {file} and --config {config_path}")
    file = file or config_path
    if file is None:
        raise click.UsageError("Missing argument 'FILE' (or --config FILE).")
    config, built = _load(file, serving=True)
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
    shown = redact_url(url)
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise click.BadParameter(f"{shown!r} is not a URL", param_hint="--url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise click.BadParameter(
            f"expected an http(s) URL like {DEFAULT_INGEST_URL}, got {shown!r}",
            param_hint="--url",
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
    click.echo(f"sent {sent} event(s) in {requests} request(s) to {redact_url(target)}")


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
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Keep the relay and its operator page (/ui) running this long once the events "
    "arrived; Ctrl-C ends it early.",
)
def demo(count: int, quiet: bool, linger: float) -> None:
    """Watch a real relay deliver events to three local receivers.

    Starts receivers on 127.0.0.1 (one healthy, one failing for 2 seconds then recovering, one
    whose endpoint ignores pulls), a relay with its ingest on a free port, and sends registry
    events through its HTTP ingest, with progress bars and a live table of metrics. Ends with a
    summary and checks that each receiver got exactly its events, in order (exit 1 if not).
    Needs no network beyond 127.0.0.1. Prints the relay's operator page and the demo's token.
    """
    from .demo import run_demo

    ok = asyncio.run(run_demo(count, quiet=quiet, linger=linger))
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


def _request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> tuple[int, str]:
    """One request to a relay: ``(status, text)``.

    Never through the environment's proxies (``trust_env=False``): the request carries the
    admin token, and the relay is reached directly.

    Raises:
        OSError, aiohttp.ClientError, TimeoutError: no answer.
    """

    async def run() -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession(
                trust_env=False, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as session,
            session.request(method, url, headers=headers, json=body) as answer,
        ):
            return answer.status, await answer.text()

    return asyncio.run(run())


def _running_relay(config: RelayConfig) -> str | None:
    """The base URL of a relay serving this configuration right now, if one answers."""
    host = config.ingest.host or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{config.ingest.port}"
    try:
        status, text = _request("GET", f"{base}/healthz", timeout=2)
    except (OSError, ValueError, aiohttp.ClientError, TimeoutError):
        return None
    # a relay whose store cannot write still answers (503): it is running
    return base if status == 200 or text.startswith("store cannot write") else None


def _admin(
    config: RelayConfig,
    base: str,
    path: str,
    method: str = "GET",
    body: dict[str, Any] | None = None,
) -> Any:
    try:
        status, text = _request(method, f"{base}{path}", token=config.ingest.token, body=body)
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        _fail([f"error: cannot reach the running relay at {base}: {exc}"], 1)
    if status >= 400:
        _fail([f"error: the running relay answered {status}: {text[:200]}"], 1)
    try:
        return json.loads(text)
    except ValueError:
        _fail([f"error: the running relay answered {status} with no JSON: {text[:200]}"], 1)


async def _with_store(
    config: RelayConfig, action: Callable[[Any], Awaitable[Any]], *, exclusive: bool = False
) -> Any:
    store: Store | None = open_store(config.store, exclusive=exclusive)
    if store is None:
        _fail(
            [
                "error: store.kind is memory: dead letters live only in a running relay "
                "(reached with ingest.token)"
            ],
            2,
        )
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


@main.group("dead-letters")
def dead_letters() -> None:
    """List and replay the events endpoints gave up on (kept by the durable store).

    While `rxsinks serve` runs with the same configuration, these commands go through its admin
    routes with ingest.token (so replayed events go straight back into its queues); otherwise
    they open the store directly and the next `serve` delivers what was replayed. Without a
    token, `list` reads the store directly even beside a running relay, and `replay` into a
    running relay is refused (its admin routes need the token).
    """


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
    # the admin routes need the token: without one, the store is read directly (SQLite and
    # Redis both allow it beside a running relay)
    base = _running_relay(config) if config.ingest.token else None
    rows: list[dict[str, Any]]
    if base is not None:
        query = {k: v for k, v in {"endpoint": endpoint, "since": after}.items() if v is not None}
        rows = _admin(config, base, "/dead-letters?" + str(URL.build(query=query).query_string))[
            "dead_letters"
        ]
    else:
        try:
            records = asyncio.run(
                _with_store(config, lambda store: store.dead_letters(endpoint, after))
            )
        except StoreError as exc:
            _fail([f"error: {exc}"], 1)
        rows = [record.to_dict() for record in records]
    for row in rows:
        row["error"] = redact_text(str(row["error"]))  # perhaps kept by an older version
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
    if base is not None and not config.ingest.token:
        _fail(
            [
                f"error: a relay is running at {base}, and replaying into it goes through its "
                "admin routes, which need ingest.token: configure a token (and restart the "
                "relay), or stop the relay and replay into the store"
            ],
            1,
        )
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
                parameters = {
                    k: v for k, v in {"endpoint": name, "since": after}.items() if v is not None
                }
                answer = _admin(config, base, "/dead-letters/replay", "POST", parameters)
                total += int(answer["replayed"])
            else:
                try:
                    replayed = asyncio.run(_with_store(config, _replayer(name, after)))
                except StoreError as exc:
                    _fail([f"error: {exc}"], 1)
                total += len(replayed)
            progress.advance(task)
    where = "into the running relay" if base is not None else "into the store (next serve delivers)"
    click.echo(f"replayed {total} dead letter(s) {where}")


def _replayer(name: str, after: float | None) -> Callable[[Any], Awaitable[Any]]:
    def replay(store: Any) -> Awaitable[Any]:
        return store.replay(name, after)  # type: ignore[no-any-return]

    return replay


@main.group("store")
def store_group() -> None:
    """Inspect the durable store, and drop or move the backlog of a removed endpoint.

    A relay warns at start about endpoints the store keeps events for but the configuration
    does not name (renamed or removed): their deliveries would wait for ever. `drop-endpoint`
    deletes them; `move-endpoint` gives them to the endpoint's new name.
    """


@store_group.command("endpoints")
@_CONFIG_OPTION
def store_endpoints(config_path: str) -> None:
    """List the endpoints the store keeps events for, marking those not configured."""
    config, _ = _load(config_path)
    configured = {endpoint.name for endpoint in config.endpoints}
    try:
        found = asyncio.run(_with_store(config, lambda store: store.backlogs()))
    except StoreError as exc:
        _fail([f"error: {exc}"], 1)
    for backlog in found:
        note = "" if backlog.endpoint in configured else "  (not in the configuration)"
        click.echo(
            f"{backlog.endpoint}: {backlog.pending} pending, "
            f"{backlog.dead_letters} dead letter(s){note}"
        )


@store_group.command("drop-endpoint")
@click.argument("name")
@_CONFIG_OPTION
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop_endpoint(name: str, config_path: str, yes: bool) -> None:
    """Delete everything the store keeps for endpoint NAME (pending events, dead letters).

    NAME must not be in the configuration (remove it there first). Works beside a running
    relay: it does not deliver for an endpoint it is not configured with.
    """
    config, _ = _load(config_path)
    if name in {endpoint.name for endpoint in config.endpoints}:
        _fail(
            [
                f"error: endpoint {name!r} is in the configuration: remove it there (and restart "
                "the relay) before dropping what the store keeps for it"
            ],
            2,
        )
    if not yes:
        click.confirm(
            f"Delete every pending event and dead letter of endpoint {name!r}?", abort=True
        )
    try:
        dropped = asyncio.run(_with_store(config, lambda store: store.drop_endpoint(name)))
    except StoreError as exc:
        _fail([f"error: {exc}"], 1)
    click.echo(
        f"dropped {dropped.pending} pending event(s) and {dropped.dead_letters} dead letter(s) "
        f"of endpoint {name!r}"
    )


@store_group.command("move-endpoint")
@click.argument("old")
@click.argument("new")
@_CONFIG_OPTION
def move_endpoint(old: str, new: str, config_path: str) -> None:
    """Give endpoint OLD's pending events and dead letters to endpoint NEW (a rename).

    NEW must be in the configuration and OLD not. The relay must be stopped (the store is
    locked meanwhile): its queues would not see the moved events until it restarts.
    """
    config, _ = _load(config_path)
    configured = {endpoint.name for endpoint in config.endpoints}
    if new not in configured:
        _fail([f"error: endpoint {new!r} is not in the configuration"], 2)
    if old in configured:
        _fail([f"error: endpoint {old!r} is still in the configuration: remove it first"], 2)
    if old == new:
        _fail([f"error: {old!r} and {new!r} are the same endpoint"], 2)
    try:
        moved = asyncio.run(
            _with_store(config, lambda store: store.move_endpoint(old, new), exclusive=True)
        )
    except StoreError as exc:
        _fail([f"error: {exc}"], 1)
    click.echo(
        f"moved {moved.pending} pending event(s) and {moved.dead_letters} dead letter(s) "
        f"from {old!r} to {new!r}"
    )
