"""The chart and the summary table of ``results.json`` (written by ``run_all.py``).

Ten panels, rxsinks beside its baseline from the same run wherever there is one: the backlog
drain against the real Docker registry, HTTP delivery against a raw aiohttp loop, in-process
dispatch against a hand-written asyncio queue, a slow receiver with parallel delivery and many
slow endpoints against the registry, the store's CPU per event-delivery with 300 endpoints
against the memory store, ingest by store, memory per pending event during an outage, latency
under a steady load, and the SQLite files before and after a million-event backlog drains. A
benchmark missing from the results (skipped, failed, or not run) leaves its panel saying so.

Usage: ``python benchmarks/chart.py [RESULTS_JSON [PNG]]`` redraws the PNG from saved results.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

HERE = Path(__file__).resolve().parent
RXSINKS = "#1f6fb4"
RXSINKS_LIGHT = "#7fb2e0"
BASELINE = "#9a9a9a"

Row = tuple[str, str, str, str]


def figures(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """One benchmark's JSON object, or None when it did not produce one."""
    entry = results.get("benchmarks", {}).get(name)
    if not entry or "result" not in entry or "skipped" in entry:
        return None
    result: dict[str, Any] = entry["result"]
    return result


def _rate(value: float) -> str:
    return f"{value:,.0f} ev/s"


def _ratio(value: float) -> str:
    # two decimals hide a tiny ratio (4 bytes against 3,400): keep its first digits then
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def summary_rows(results: dict[str, Any]) -> list[Row]:
    """(what, rxsinks, baseline, rxsinks / baseline) for every figure present in the results."""
    rows: list[Row] = []
    reg = figures(results, "vs_registry")
    if reg:
        registry = f"registry {_rate(reg['registry_events_per_s'])}"
        for store, prefix, ratio in (("SQLite", "rxsinks_", ""), ("memory", "memory_", "memory_")):
            rows.append(
                (
                    f"backlog drain, 1 event/POST, {store} store",
                    _rate(reg[f"{prefix}single_events_per_s"]),
                    registry,
                    _ratio(reg[f"{ratio}ratio_single"]),
                )
            )
            rows.append(
                (
                    f"backlog drain, {reg['batch']} events/POST, {store} store",
                    _rate(reg[f"{prefix}batched_events_per_s"]),
                    registry,
                    _ratio(reg[f"{ratio}ratio_batched"]),
                )
            )
    http = figures(results, "http_delivery")
    if http:
        modes = (("single", "1 event/POST"), ("batched", f"{http['batch']} events/POST"))
        for mode, label in modes:
            rows.append(
                (
                    f"HTTP delivery, {label}",
                    _rate(http[f"events_per_s_{mode}"]),
                    f"raw aiohttp {_rate(http[f'raw_events_per_s_{mode}'])}",
                    _ratio(http[f"ratio_{mode}"]),
                )
            )
    inproc = figures(results, "inprocess")
    if inproc:
        rows.append(
            (
                "in-process, 1 endpoint",
                _rate(inproc["rxsinks_events_per_s_1"]),
                f"asyncio {_rate(inproc['baseline_events_per_s_1'])}",
                _ratio(inproc["ratio_1"]),
            )
        )
        rows.append(
            (
                "in-process, 10 endpoints",
                _rate(inproc["rxsinks_events_per_s"]),
                f"asyncio {_rate(inproc['baseline_events_per_s'])}",
                _ratio(inproc["ratio"]),
            )
        )
    ingest = figures(results, "ingest")
    if ingest:
        for store in ("memory", "sqlite", "redis"):
            if ingest.get(store):
                rows.append(
                    (
                        f"ingest accepted, {ingest['per_post']} event/POST, {store} store",
                        _rate(ingest[store]["accepted_per_s"]),
                        "-",
                        "-",
                    )
                )
    backlog = figures(results, "backlog")
    if backlog:
        registry_bytes = reg["registry_rss_bytes_per_pending_event"] if reg else None
        baseline = f"registry {registry_bytes:,.0f} B" if registry_bytes else "-"
        for key, store in (
            ("rss_bytes_per_pending_event", "SQLite"),
            ("memory_store_rss_bytes_per_pending_event", "memory"),
        ):
            rows.append(
                (
                    f"RSS per pending event, {store} store (lower is better)",
                    f"{backlog[key]:,.0f} B",
                    baseline,
                    _ratio(backlog[key] / registry_bytes) if registry_bytes else "-",
                )
            )
    slow = figures(results, "slow_receivers")
    if slow:
        rows.append(
            (
                f"slow receiver (20 ms), concurrency {slow['concurrency']}, SQLite store",
                f"{slow['rxsinks_events_per_s_slow']:,.0f} events/s",
                f"registry {slow['registry_events_per_s_slow']:,.1f}",
                _ratio(slow["ratio_concurrent"]),
            )
        )
        rows.append(
            (
                f"{slow['endpoints']} endpoints answering after 100 ms, "
                f"{slow['events_per_endpoint']} events each (seconds, lower is better)",
                f"{slow['rxsinks_seconds_many']:.2f} s",
                f"registry {slow['registry_seconds_many']:.2f} s",
                _ratio(slow["ratio_many_endpoints"]),
            )
        )
    scaling = figures(results, "endpoints_scaling")
    if scaling:
        n = scaling["endpoints"]
        sqlite_cpu = scaling[f"sqlite_cpu_us_per_delivery_{n}"]
        memory_cpu = scaling[f"memory_cpu_us_per_delivery_{n}"]
        kept = "kept up" if scaling[f"sqlite_keeps_up_{n}"] else "fell behind"
        rows.append(
            (
                f"CPU per event-delivery, {n} endpoints, SQLite store ({kept}; lower is better)",
                f"{sqlite_cpu:.1f} us",
                f"memory store {memory_cpu:.1f} us",
                _ratio(scaling[f"sqlite_vs_memory_cpu_{n}"]),
            )
        )
        if "wal_bytes_after_drain" in scaling:
            rows.append(
                (
                    f"SQLite files after a {scaling['backlog_events']:,}-event backlog drained",
                    f"WAL {scaling['wal_bytes_after_drain'] / 2**20:,.1f} MiB, "
                    f"db {scaling['db_bytes_after_drain'] / 2**20:,.1f} MiB",
                    f"at the peak: db {scaling['db_bytes_at_peak'] / 2**20:,.0f} MiB",
                    "-",
                )
            )
    latency = figures(results, "latency")
    if latency:
        for store in ("memory", "sqlite"):
            rows.append(
                (
                    f"latency p50 / p99 at {latency['rate_per_s']:,.0f} ev/s, {store} store",
                    f"{latency[store]['p50_ms']} / {latency[store]['p99_ms']} ms",
                    "-",
                    "-",
                )
            )
    return rows


def _not_run(ax: Axes, title: str, name: str, results: dict[str, Any]) -> None:
    entry = results.get("benchmarks", {}).get(name, {})
    reason = entry.get("skipped") or entry.get("error") or "not run"
    ax.set_title(title, fontsize=10)
    text = textwrap.fill(f"{name}: {reason}", 50)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, transform=ax.transAxes)
    ax.set_axis_off()


def _bars(
    ax: Axes,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    title: str,
    ylabel: str,
    log: bool,
    fmt: str = "{:,.0f}",
) -> None:
    """Grouped bars: one group per label, one bar per series, values written on the bars."""
    width = 0.8 / len(series)
    for index, (name, values, color) in enumerate(series):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(positions, values, width, label=name, color=color)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    if log:
        ax.set_yscale("log")
        everything = [value for _, values, _ in series for value in values if value > 0]
        # bars start a decade below the smallest one, so their heights compare honestly
        low = 10 ** (math.floor(math.log10(min(everything))) - 1)
        ax.set_ylim(low, max(everything) * 4)  # room for the labels above the tallest bar
    else:
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _registry_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "Backlog drain to one endpoint (events/s)"
    reg = figures(results, "vs_registry")
    if not reg:
        _not_run(ax, title, "vs_registry", results)
        return
    registry = reg["registry_events_per_s"]
    labels = ["1 event/POST", f"{reg['batch']} events/POST"]
    _bars(
        ax,
        labels,
        [
            ("Docker registry 2.8 (1 event/POST)", [registry, registry], BASELINE),
            (
                "rxsinks serve, SQLite",
                [reg["rxsinks_single_events_per_s"], reg["rxsinks_batched_events_per_s"]],
                RXSINKS,
            ),
            (
                "rxsinks serve, memory",
                [reg["memory_single_events_per_s"], reg["memory_batched_events_per_s"]],
                RXSINKS_LIGHT,
            ),
        ],
        title=f"{title}\n{reg['events']:,} real registry events; ratio (SQLite) "
        f"{reg['ratio_single']:.2f} and {reg['ratio_batched']:.1f}",
        ylabel="events/s (log)",
        log=True,
    )


def _http_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "HTTP delivery, one block in flight (events/s)"
    http = figures(results, "http_delivery")
    if not http:
        _not_run(ax, title, "http_delivery", results)
        return
    _bars(
        ax,
        ["1 event/POST", f"{http['batch']} events/POST"],
        [
            (
                "raw aiohttp loop",
                [http["raw_events_per_s_single"], http["raw_events_per_s_batched"]],
                BASELINE,
            ),
            (
                "rxsinks Endpoint",
                [http["events_per_s_single"], http["events_per_s_batched"]],
                RXSINKS,
            ),
        ],
        title=title,
        ylabel="events/s (log)",
        log=True,
    )


def _inprocess_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "In-process dispatch, no I/O (events/s)"
    inproc = figures(results, "inprocess")
    if not inproc:
        _not_run(ax, title, "inprocess", results)
        return
    _bars(
        ax,
        ["1 endpoint", "10 endpoints"],
        [
            (
                "asyncio.Queue + worker",
                [inproc["baseline_events_per_s_1"], inproc["baseline_events_per_s"]],
                BASELINE,
            ),
            (
                "rxsinks operators",
                [inproc["rxsinks_events_per_s_1"], inproc["rxsinks_events_per_s"]],
                RXSINKS,
            ),
        ],
        title=title,
        ylabel="events/s (log)",
        log=True,
    )


def _ingest_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "rxsinks serve ingest, 1 event/POST (events/s)"
    ingest = figures(results, "ingest")
    if not ingest:
        _not_run(ax, title, "ingest", results)
        return
    stores = [store for store in ("memory", "sqlite", "redis") if ingest.get(store)]
    _bars(
        ax,
        stores,
        [
            ("accepted", [ingest[s]["accepted_per_s"] for s in stores], RXSINKS),
            ("delivered", [ingest[s]["delivered_per_s"] for s in stores], RXSINKS_LIGHT),
        ],
        title=f"{title}\n{ingest['clients']} concurrent clients",
        ylabel="events/s",
        log=False,
    )


def _memory_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "Memory per pending event, endpoint down (bytes of RSS)"
    backlog = figures(results, "backlog")
    reg = figures(results, "vs_registry")
    if not backlog and not reg:
        _not_run(ax, title, "backlog", results)
        return
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    if reg:
        labels.append("Docker registry\n(in memory)")
        values.append(reg["registry_rss_bytes_per_pending_event"])
        colors.append(BASELINE)
    if backlog:
        labels += ["rxsinks\nmemory store", "rxsinks\nSQLite store"]
        values += [
            backlog["memory_store_rss_bytes_per_pending_event"],
            backlog["rss_bytes_per_pending_event"],
        ]
        colors += [RXSINKS_LIGHT, RXSINKS]
    # a tiny or negative delta (the store keeps a fixed window) would vanish on a log axis
    shown = [max(value, 1.0) for value in values]
    bars = ax.bar(range(len(labels)), shown, 0.6, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f} B" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.5, max(shown) * 5)
    ax.set_title(f"{title}\nlower is better", fontsize=10)
    ax.set_ylabel("bytes (log)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _latency_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "Latency, ingest to receipt (ms)"
    latency = figures(results, "latency")
    if not latency:
        _not_run(ax, title, "latency", results)
        return
    stores = ["memory", "sqlite"]
    _bars(
        ax,
        [f"{store} store" for store in stores],
        [
            ("p50", [latency[s]["p50_ms"] for s in stores], RXSINKS),
            ("p90", [latency[s]["p90_ms"] for s in stores], RXSINKS_LIGHT),
            ("p99", [latency[s]["p99_ms"] for s in stores], "#c9dcef"),
        ],
        title=f"{title}\nsteady {latency['rate_per_s']:,.0f} events/s, 1 event/POST; "
        "lower is better",
        ylabel="ms",
        log=False,
        fmt="{:.1f}",
    )


def _slow_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "A receiver answering after 20 ms (events/s)"
    slow = figures(results, "slow_receivers")
    if not slow:
        _not_run(ax, title, "slow_receivers", results)
        return
    _bars(
        ax,
        ["1 request in flight (registry)", f"concurrency {slow['concurrency']} (rxsinks)"],
        [
            (
                "events/s",
                [slow["registry_events_per_s_slow"], slow["rxsinks_events_per_s_slow"]],
                RXSINKS,
            )
        ],
        title=title,
        ylabel="events/s",
        log=False,
    )


def _many_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "Endpoints answering after 100 ms (seconds, lower is better)"
    slow = figures(results, "slow_receivers")
    if not slow:
        _not_run(ax, title, "slow_receivers", results)
        return
    _bars(
        ax,
        [f"{slow['endpoints']} endpoints x {slow['events_per_endpoint']} events"],
        [
            ("Docker registry", [slow["registry_seconds_many"]], BASELINE),
            ("rxsinks", [slow["rxsinks_seconds_many"]], RXSINKS),
        ],
        title=title,
        ylabel="seconds",
        log=False,
        fmt="{:.2f}",
    )


def _store_cost_panel(ax: Axes, results: dict[str, Any]) -> None:
    scaling = figures(results, "endpoints_scaling")
    count = scaling["endpoints"] if scaling else "?"
    title = f"CPU per event-delivery, {count} endpoints (us, lower is better)"
    if not scaling or f"sqlite_cpu_us_per_delivery_{count}" not in scaling:
        _not_run(ax, title, "endpoints_scaling", results)
        return
    kept = all(scaling.get(f"{kind}_keeps_up_{count}") for kind in ("sqlite", "memory"))
    rounds = len(scaling.get(f"sqlite_vs_memory_cpu_rounds_{count}", [None]))
    _bars(
        ax,
        [
            f"offered 200 events/s, median of {rounds} round(s) "
            f"({'both kept up' if kept else 'NOT kept up'})"
        ],
        [
            ("memory store", [scaling[f"memory_cpu_us_per_delivery_{count}"]], BASELINE),
            ("SQLite store", [scaling[f"sqlite_cpu_us_per_delivery_{count}"]], RXSINKS),
        ],
        title=title,
        ylabel="us of CPU",
        log=False,
        fmt="{:.1f}",
    )


def _store_files_panel(ax: Axes, results: dict[str, Any]) -> None:
    title = "SQLite files, 1,000,000-event backlog (MiB, log)"
    scaling = figures(results, "endpoints_scaling")
    if not scaling or "db_bytes_after_drain" not in scaling:
        _not_run(ax, title, "endpoints_scaling", results)
        return
    mib = 1024 * 1024

    def size(key: str) -> float:
        # an empty file is drawn as a sliver on the log scale; its label still says 0
        return max(scaling[key] / mib, 0.01)

    _bars(
        ax,
        ["database", "write-ahead log"],
        [
            ("at the peak", [size("db_bytes_at_peak"), size("wal_bytes_at_peak")], BASELINE),
            (
                "drained and compacted",
                [size("db_bytes_after_drain"), size("wal_bytes_after_drain")],
                RXSINKS,
            ),
        ],
        title=title,
        ylabel="MiB (log)",
        log=True,
        fmt="{:,.1f}",
    )
    ax.legend(fontsize=7, loc="upper right", frameon=False)  # the database's peak is on the left


def draw(results: dict[str, Any], path: Path) -> None:
    """Draw the ten panels of ``results`` into the PNG at ``path``."""
    fig, axes = plt.subplots(2, 5, figsize=(26, 9.5))
    _registry_panel(axes[0][0], results)
    _http_panel(axes[0][1], results)
    _inprocess_panel(axes[0][2], results)
    _slow_panel(axes[0][3], results)
    _store_cost_panel(axes[0][4], results)
    _ingest_panel(axes[1][0], results)
    _memory_panel(axes[1][1], results)
    _latency_panel(axes[1][2], results)
    _many_panel(axes[1][3], results)
    _store_files_panel(axes[1][4], results)
    described = results.get("machine", {})
    fig.suptitle(
        f"rxsinks benchmarks, {results.get('date', '?')[:10]}: "
        f"{described.get('cpus', '?')} CPUs ({described.get('cpu_model', 'unknown CPU')}), "
        f"Python {described.get('python', '?')}; each bar pair measured in the same run",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str]) -> None:
    source = Path(argv[0]) if argv else HERE / "results.json"
    target = Path(argv[1]) if len(argv) > 1 else source.with_suffix(".png")
    draw(json.loads(source.read_text()), target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
