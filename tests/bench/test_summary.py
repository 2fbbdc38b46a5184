"""`caas bench all`'s summary on given results: one row per measure and size, the growth
factor (cost at 10 N / cost at N) on the larger size's row, failures shown, and the runner
recording every figure (and a failure) in the JSON file as it goes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from caas.bench import suite
from caas.bench.report import Reporter
from caas.bench.summary import BENCHMARKS, growth, summary_rows, summary_table

API_SMALL = {
    "requests": 200,
    "purchases_per_s": 40.0,
    "p99_ms": 900.0,
    "baseline_per_s": 800.0,
    "baseline_endpoint": "/healthz",
    "baseline_p99_ms": 30.0,
    "ratio": 20.0,
}
# Ten times the purchases at half the rate: twenty times the time.
API_LARGE = {**API_SMALL, "requests": 2000, "purchases_per_s": 20.0, "ratio": 40.0}
MEMORY_SMALL = {
    "peak_rss_mb": 150.0,
    "baseline_rss_mb": 140.0,
    "mb_per_1000_cars": 10.0,
    "ratio": 1.07,
}
MEMORY_LARGE = {**MEMORY_SMALL, "peak_rss_mb": 220.0, "mb_per_1000_cars": 8.0, "ratio": 1.57}
OTA = {
    "p50_ms": 20.0,
    "p99_ms": 40.0,
    "baseline_p99_ms": 1.0,
    "ratio_p99": 40.0,
    "fleet_wide_ms": 1000.0,
}


def test_growth_is_the_larger_sizes_cost_over_the_smaller_ones() -> None:
    assert growth(2.0, 30.0) == 15.0
    assert growth(None, 3.0) is None
    assert growth(0.0, 3.0) is None  # nothing to divide by
    assert growth(2.0, float("inf")) is None


def test_rows_give_figure_baseline_ratio_and_growth_on_the_larger_size() -> None:
    rows = summary_rows(
        {
            "memory": [(10_000, MEMORY_LARGE), (1_000, MEMORY_SMALL)],  # any order
            "api": [(200, API_SMALL), (2000, API_LARGE)],
        }
    )

    assert [(row.benchmark, row.size) for row in rows] == [
        ("api", 200),
        ("api", 2000),
        ("memory", 1_000),
        ("memory", 10_000),
    ]
    small, large = rows[0], rows[1]
    assert small.figure == "40.0/s (p99 900 ms)"
    assert small.baseline == "800/s GET /healthz (p99 30 ms)"
    assert small.ratio == "20x" and large.ratio == "40x"
    assert (small.cost, large.cost) == (5.0, 100.0)  # seconds for the purchases
    assert small.growth is None and large.growth == 20.0
    # Memory's cost is what the cars add above the 0-car baseline: 10 MB, then 80 MB.
    assert rows[3].growth == 8.0
    assert rows[2].baseline == "140.0 MB with 0 cars"


def test_a_benchmark_with_two_measures_has_a_growth_for_each() -> None:
    large = {**OTA, "p99_ms": 44.0, "fleet_wide_ms": 9000.0}

    rows = summary_rows({"ota": [(100, OTA), (1000, large)]})

    assert [(row.measure, row.growth) for row in rows] == [
        ("change -> applied p99", None),
        ("change -> applied p99", 1.1),
        ("fleet-wide change", None),
        ("fleet-wide change", 9.0),
    ]


def test_a_failed_run_shows_its_error_and_no_growth() -> None:
    rows = summary_rows(
        {"api": [(200, API_SMALL), (2000, {"error": "RuntimeError: the server died"})]}
    )

    assert rows[1].figure == "failed: RuntimeError: the server died"
    assert rows[1].growth is None and rows[1].cost is None


def test_the_table_has_one_line_per_row_and_says_what_growth_divides() -> None:
    rows = summary_rows({"api": [(200, API_SMALL), (2000, API_LARGE)]})
    console = Console(width=250, record=True)

    console.print(summary_table(rows))
    text = console.export_text()

    assert "api: purchases" in text and "2,000 purchases" in text and "20x" in text
    assert "seconds for the purchases (linear: 10)" in text


@contextmanager
def _silent() -> Iterator[Reporter]:
    yield Reporter()


def test_run_all_writes_every_figure_and_keeps_going_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_all` on results given in place of the benchmarks: each size is run once, a
    failure is recorded and the next still runs, the file holds every result and the
    summary."""
    given: dict[tuple[str, int], dict[str, Any]] = {
        ("api", 200): API_SMALL,
        ("api", 2000): API_LARGE,
        ("memory", 5): MEMORY_SMALL,
    }
    asked: list[tuple[str, int]] = []

    def run_one(name: str, size: int, _reporter: Reporter) -> dict[str, Any]:
        asked.append((name, size))
        if (name, size) not in given:
            raise RuntimeError("no broker\nsecond line")
        return dict(given[(name, size)])

    monkeypatch.setattr(suite, "run_one", run_one)
    out = tmp_path / "results" / "latest.json"
    said: list[str] = []

    document = suite.run_all(
        dict.fromkeys(BENCHMARKS, 5) | {"api": 200},
        only=["api", "memory"],
        factor=10,
        out=out,
        reporter=_silent,
        say=said.append,
    )

    assert asked == [("api", 200), ("api", 2000), ("memory", 5), ("memory", 50)]
    assert json.loads(out.read_text()) == document
    assert document["sizes"] == {"api": 200, "memory": 5}
    failed = document["results"]["memory"][1]
    assert failed["size"] == 50 and failed["error"] == "RuntimeError: no broker"
    assert document["results"]["api"][1]["purchases_per_s"] == 20.0
    assert all(len(item["load_average_before"]) == 3 for item in document["results"]["api"])
    growths = [row["growth"] for row in document["summary"] if row["benchmark"] == "api"]
    assert growths == [None, 20.0]
    assert said[0] == "[1/4] api at 200 purchases"
    assert "RuntimeError: no broker" in said[-1]


def test_runs_split_over_several_invocations_merge_into_one_summary() -> None:
    first = {
        "started_at": "2026-12-03T22:00:00+00:00",
        "finished_at": "2026-12-03T22:30:00+00:00",
        "results": {
            "api": [{"size": 200, **API_SMALL}, {"size": 2000, "error": "RuntimeError: x"}]
        },
    }
    second = {
        "started_at": "2026-12-03T22:10:00+00:00",
        "finished_at": "2026-12-03T23:00:00+00:00",
        "results": {
            "api": [{"size": 2000, **API_LARGE}],
            "memory": [{"size": 1000, **MEMORY_SMALL}],
        },
    }

    merged = suite.merge([first, second])

    assert merged["started_at"] == "2026-12-03T22:00:00+00:00"
    assert merged["finished_at"] == "2026-12-03T23:00:00+00:00"
    assert merged["sizes"] == {"api": 200, "memory": 1000}
    assert [item["size"] for item in merged["results"]["api"]] == [200, 2000]
    assert "error" not in merged["results"]["api"][1]  # the later run replaced the failure
    api_growth = [row["growth"] for row in merged["summary"] if row["benchmark"] == "api"]
    assert api_growth == [None, 20.0]


def test_growth_is_only_between_sizes_a_factor_apart() -> None:
    rows = summary_rows(
        {
            "api": [
                (100, API_SMALL),
                (200, API_SMALL),
                (1000, API_LARGE),
                (2000, API_LARGE),
            ]
        }
    )

    # 100 -> 1000 and 200 -> 2000; 200 is not ten times 100.
    assert [(row.size, row.growth) for row in rows] == [
        (100, None),
        (200, None),
        (1000, 20.0),
        (2000, 20.0),
    ]
