"""How the benchmarks show themselves: progress on stderr, figures in tables, one JSON line.

Progress goes to stderr, so with `--json` the last line on stdout is the JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table


class Reporter:
    """A benchmark's progress: the phase it is in, and a bar for counted work."""

    def __init__(self, progress: Progress | None = None) -> None:
        self._progress = progress
        self._phase = progress.add_task("starting", total=None) if progress else None

    @classmethod
    @contextmanager
    def on_stderr(cls) -> Iterator[Reporter]:
        console = Console(stderr=True)
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            yield cls(progress)

    def phase(self, text: str) -> None:
        if self._progress is not None and self._phase is not None:
            self._progress.update(self._phase, description=text)

    def track(self, total: int, text: str) -> Callable[[], None]:
        """A bar of `total` steps; call the result once per step."""
        if self._progress is None:
            return lambda: None
        self.phase(text)
        progress, task = self._progress, self._progress.add_task(text, total=total)
        return lambda: progress.advance(task)


def print_json(result: dict[str, Any]) -> None:
    """The result as the last line on stdout."""
    print(json.dumps(result), flush=True)


def figures_table(title: str, rows: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Measure", style="bold")
    table.add_column("Value", justify="right")
    table.add_column("What it is")
    for row in rows:
        table.add_row(*row)
    return table


def ota_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            "cars / changes",
            f"{result['cars']} / {result['changes']}",
            f"{result['rate_per_s']:g} changes a second, broker: {result['broker']}",
        ),
        (
            "p50 / p95 / p99",
            _ms(result, "p50_ms", "p95_ms", "p99_ms"),
            "commit of the change -> car's applied stored",
        ),
        (
            "max",
            f"{result['max_ms']:.1f} ms",
            f"{result['applied']} of {result['changes']} applied",
        ),
        (
            "baseline p50 / p95 / p99",
            _ms(result, "baseline_p50_ms", "baseline_p95_ms", "baseline_p99_ms"),
            "raw MQTT QoS 1 platform -> car -> platform",
        ),
        ("ratio p99", f"{result['ratio_p99']:g}x", "p99 / baseline p99"),
        (
            "fleet-wide change",
            f"{result['fleet_wide_ms']:.1f} ms",
            f"all cars in one commit, until the last applied "
            f"(p50 {result['fleet_wide_p50_ms']:.1f} ms)",
        ),
    ]


def telemetry_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            "cars / seconds",
            f"{result['cars']} / {result['seconds']:g}",
            f"broker: {result['broker']}; "
            f"at most {result['throttle_per_car_per_s']:g}/s a car stored",
        ),
        (
            "offered",
            f"{result['offered_per_s']:,.0f}/s",
            f"{result['offered']:,} samples the cars sent",
        ),
        (
            "baseline",
            f"{result['baseline_per_s']:,.0f}/s",
            f"{result['baseline_received']:,} received by a bare subscriber",
        ),
        (
            "bridge received",
            f"{result['received']:,}",
            f"throttled {result['throttled']:,}, backlog dropped {result['backlog_dropped']:,}",
        ),
        ("stored", f"{result['stored_per_s']:,.0f}/s", f"{result['stored']:,} rows in PostgreSQL"),
        ("ratio", f"{result['ratio']:.3f}", "stored / baseline"),
    ]


def invoicing_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            "seconds",
            f"{result['seconds']:,.1f} s",
            f"the first of the month for {result['cars']:,} cars, {result['threads']} threads",
        ),
        (
            "invoices_per_s",
            f"{result['invoices_per_s']:,.1f}/s",
            f"{result['invoices']:,} invoices, gap-free: {result['gap_free']}",
        ),
        ("peak_rss_mb", f"{result['peak_rss_mb']:,.1f} MB", "peak resident memory"),
        (
            "statements",
            f"{result['statements_per_invoice']:g} an invoice",
            f"{result['database_seconds']:,.1f} s waiting for PostgreSQL",
        ),
        (
            "baseline",
            f"{result['baseline_seconds']:,.1f} s",
            f"authorise + capture at the sandbox alone (sample {result['baseline_sample']:,})",
        ),
        ("ratio", f"{result['ratio']:g}x", "seconds / baseline"),
    ]


def _ms(result: dict[str, Any], *keys: str) -> str:
    return " / ".join(f"{result[key]:.1f}" for key in keys) + " ms"


def print_table(table: Table) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:  # a file or a pipe: one line a row
        console.width = max(console.width, 140)
    console.print(table)


def api_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            "requests / concurrency",
            f"{result['requests']:,} / {result['concurrency']}",
            f"{result['purchases_ok']:,} purchases answered 201, {result['purchases_stored']:,} "
            f"stored; statuses {result['statuses']}",
        ),
        (
            "purchases",
            f"{result['purchases_per_s']:,.1f}/s",
            "POST /api/v1/vehicles/{vin}/purchases (card held at the sandbox)",
        ),
        ("p50 / p95 / p99", _ms(result, "p50_ms", "p95_ms", "p99_ms"), "a purchase's answer"),
        (
            "baseline",
            f"{result['baseline_per_s']:,.1f}/s",
            f"GET {result['baseline_endpoint']} of the same server",
        ),
        (
            "baseline p50 / p95 / p99",
            _ms(result, "baseline_p50_ms", "baseline_p95_ms", "baseline_p99_ms"),
            "a trivial answer",
        ),
        ("ratio", f"{result['ratio']:g}x", "baseline requests/s / purchases/s"),
    ]


def memory_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            "cars",
            f"{result['cars']:,}",
            f"connected in {result['connect_seconds']:,.1f} s, then telemetry once a second "
            f"for {result['seconds']:g} s; broker: {result['broker']}",
        ),
        ("peak RSS", f"{result['peak_rss_mb']:,.1f} MB", "caas worker with the cars connected"),
        ("baseline", f"{result['baseline_rss_mb']:,.1f} MB", "the same worker with 0 cars"),
        ("ratio", f"{result['ratio']:g}x", "peak / baseline"),
        ("per 1,000 cars", f"{result['mb_per_1000_cars']:,.2f} MB", "(peak - baseline) / cars"),
        (
            "telemetry",
            f"{result['telemetry_stored']:,} stored",
            f"of {result['telemetry_sent']:,} samples the cars sent",
        ),
        (
            "VmHWM / RSS at the end",
            f"{result['hwm_rss_mb']:,.1f} / {result['rss_mb']:,.1f} MB",
            f"the kernel's peak (start-up included); the cars' process "
            f"{result['cars_process_rss_mb']:,.1f} MB",
        ),
    ]
