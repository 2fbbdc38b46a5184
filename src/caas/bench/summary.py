"""`caas bench all`: every benchmark at two sizes, N and 10 N, and one summary table.

Each row of the summary is one benchmark at one size: its headline figure, the baseline
measured in the same run, their ratio (as that benchmark defines it), and, on the 10 N row,
the growth factor: the benchmark's cost at 10 N divided by its cost at N. What "cost" is
depends on the benchmark (`ROWS`): a time to do the size's work (linear growth: 10), a
per-item latency (flat: 1), memory above the baseline (linear: 10). Below 10 is better than
linear, above 10 worse.

Pure functions of the results, so the table and the growth are tested on given figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

BENCHMARKS = ("ota", "telemetry", "api", "scheduler", "invoicing", "memory")
# N for each benchmark (10 N is run too): the whole run well under an hour on two cores.
DEFAULT_SIZES: Mapping[str, int] = {
    "ota": 100,  # cars
    "telemetry": 100,  # cars
    "api": 200,  # purchases
    "scheduler": 10_000,  # entitlements
    "invoicing": 300,  # cars
    "memory": 1_000,  # cars
}
UNITS: Mapping[str, str] = {
    "ota": "cars",
    "telemetry": "cars",
    "api": "purchases",
    "scheduler": "entitlements",
    "invoicing": "cars",
    "memory": "cars",
}
GROWTH_FACTOR = 10

Result = dict[str, Any]


@dataclass(frozen=True)
class RowSpec:
    """How one line of a benchmark's results reads in the summary."""

    benchmark: str
    measure: str
    figure: Callable[[Result], str]
    baseline: Callable[[Result], str]
    ratio: Callable[[Result], str]
    cost: Callable[[Result], float]
    cost_is: str  # what the growth factor divides, for the reader


def _none(_: Result) -> str:
    return "-"


ROWS: tuple[RowSpec, ...] = (
    RowSpec(
        "ota",
        "change -> applied p99",
        lambda r: f"{r['p99_ms']:,.1f} ms (p50 {r['p50_ms']:,.1f})",
        lambda r: f"{r['baseline_p99_ms']:,.2f} ms raw MQTT round trip p99",
        lambda r: f"{r['ratio_p99']:g}x",
        lambda r: float(r["p99_ms"]),
        "p99 latency of one change (flat: 1)",
    ),
    RowSpec(
        "ota",
        "fleet-wide change",
        lambda r: f"{r['fleet_wide_ms']:,.0f} ms until the last car",
        _none,
        _none,
        lambda r: float(r["fleet_wide_ms"]),
        "time until every car applied one change (linear: 10)",
    ),
    RowSpec(
        "telemetry",
        "rows stored",
        lambda r: f"{r['stored_per_s']:,.0f}/s",
        lambda r: f"{r['baseline_per_s']:,.0f}/s to a bare subscriber",
        lambda r: f"{r['ratio']:.2f}",
        lambda r: r["cars"] / r["stored_per_s"] if r["stored_per_s"] else float("inf"),
        "1 / rows stored a second per car (flat: 1)",
    ),
    RowSpec(
        "api",
        "purchases",
        lambda r: f"{r['purchases_per_s']:,.1f}/s (p99 {r['p99_ms']:,.0f} ms)",
        lambda r: (
            f"{r['baseline_per_s']:,.0f}/s GET {r['baseline_endpoint']} "
            f"(p99 {r['baseline_p99_ms']:,.0f} ms)"
        ),
        lambda r: f"{r['ratio']:g}x",
        lambda r: r["requests"] / r["purchases_per_s"] if r["purchases_per_s"] else float("inf"),
        "seconds for the purchases (linear: 10)",
    ),
    RowSpec(
        "scheduler",
        "one day's boundaries",
        lambda r: f"{r['seconds']:,.1f} s, {r['boundaries_per_s']:,.0f}/s",
        lambda r: f"{r['signing_seconds']:,.2f} s Ed25519 signing alone",
        lambda r: f"{r['seconds'] / r['signing_seconds']:,.1f}x" if r["signing_seconds"] else "-",
        lambda r: float(r["seconds"]),
        "seconds for the day's sweep (linear: 10)",
    ),
    RowSpec(
        "invoicing",
        "first of the month",
        lambda r: f"{r['seconds']:,.1f} s, {r['invoices_per_s']:,.1f} invoices/s",
        lambda r: f"{r['baseline_seconds']:,.1f} s the sandbox's round trips alone",
        lambda r: f"{r['ratio']:g}x",
        lambda r: float(r["seconds"]),
        "seconds for the month's invoices (linear: 10)",
    ),
    RowSpec(
        "memory",
        "worker's peak RSS",
        lambda r: f"{r['peak_rss_mb']:,.1f} MB ({r['mb_per_1000_cars']:,.2f} MB/1,000 cars)",
        lambda r: f"{r['baseline_rss_mb']:,.1f} MB with 0 cars",
        lambda r: f"{r['ratio']:g}x",
        lambda r: max(float(r["peak_rss_mb"]) - float(r["baseline_rss_mb"]), 0.0),
        "MB above the 0-car baseline (linear: 10)",
    ),
)


@dataclass(frozen=True)
class SummaryRow:
    benchmark: str
    measure: str
    size: int
    figure: str
    baseline: str
    ratio: str
    cost: float | None
    growth: float | None  # on the larger size's row only
    cost_is: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def growth(small: float | None, large: float | None) -> float | None:
    """The cost at 10 N over the cost at N; None when either is missing or N's is 0."""
    if small is None or large is None or small <= 0 or large == float("inf"):
        return None
    return round(large / small, 2)


def summary_rows(
    runs: Mapping[str, list[tuple[int, Result]]], *, factor: int = GROWTH_FACTOR
) -> list[SummaryRow]:
    """One row per benchmark's measure and size, in `ROWS`'s order, sizes ascending; a run
    that failed (its result holds `error`) shows the error instead of figures. A size S gets a
    growth when the same benchmark ran at S / `factor` too: cost at S / cost at S / factor."""
    rows: list[SummaryRow] = []
    for spec in ROWS:
        costs: dict[int, float] = {}
        for size, result in sorted(runs.get(spec.benchmark, []), key=lambda run: run[0]):
            if "error" in result:
                rows.append(
                    SummaryRow(
                        spec.benchmark,
                        spec.measure,
                        size,
                        f"failed: {result['error']}",
                        "-",
                        "-",
                        None,
                        None,
                        spec.cost_is,
                    )
                )
                continue
            cost = spec.cost(result)
            smaller = costs.get(size // factor) if size % factor == 0 else None
            rows.append(
                SummaryRow(
                    benchmark=spec.benchmark,
                    measure=spec.measure,
                    size=size,
                    figure=spec.figure(result),
                    baseline=spec.baseline(result),
                    ratio=spec.ratio(result),
                    cost=round(cost, 4) if cost != float("inf") else None,
                    growth=growth(smaller, cost),
                    cost_is=spec.cost_is,
                )
            )
            costs[size] = cost
    return rows


def summary_table(rows: list[SummaryRow], *, title: str = "caas bench all") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Benchmark", style="bold")
    table.add_column("Size", justify="right")
    table.add_column("Figure", justify="right")
    table.add_column("Baseline (same run)")
    table.add_column("Ratio", justify="right")
    table.add_column("Growth", justify="right")
    for row in rows:
        table.add_row(
            f"{row.benchmark}: {row.measure}",
            f"{row.size:,} {UNITS.get(row.benchmark, '')}",
            row.figure,
            row.baseline,
            row.ratio,
            "" if row.growth is None else f"{row.growth:g}x",
        )
    table.caption = "Growth: the cost at 10 N / the cost at N. " + "; ".join(
        dict.fromkeys(f"{row.benchmark} {row.measure}: {row.cost_is}" for row in rows)
    )
    return table
