"""What `caas bench all` runs: every benchmark at N and 10 N, one after the other, each on a
platform of its own; the results as they come, written after every run, so a run cut short
still leaves what it measured.

A benchmark that fails is recorded with its error and the others still run. Each run notes the
machine's load average before and after it: the figures of a shared machine mean little
without it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caas.bench.report import Reporter
from caas.bench.summary import BENCHMARKS, UNITS, summary_rows

OTA_CHANGES = 200
OTA_RATE = 50.0
TELEMETRY_SECONDS = 5.0
API_CONCURRENCY = 16

Result = dict[str, Any]
Say = Callable[[str], None]


def run_one(name: str, size: int, reporter: Reporter) -> Result:
    """Benchmark `name` at `size` (its unit: `caas.bench.summary.UNITS`); its result."""
    if name == "ota":
        from caas.bench import ota

        return ota.run(size, OTA_CHANGES, rate=OTA_RATE, reporter=reporter).as_json()
    if name == "telemetry":
        from caas.bench import telemetry

        return telemetry.run(size, TELEMETRY_SECONDS, rate=0.0, reporter=reporter).as_json()
    if name == "api":
        from caas.bench import api

        return api.run(size, concurrency=API_CONCURRENCY, progress=reporter.phase)
    if name == "scheduler":
        from caas.bench.scheduler import run_scheduler_bench

        return dict(run_scheduler_bench(size, progress=reporter.phase))
    if name == "invoicing":
        from caas.bench.invoicing import run_invoicing_bench

        return run_invoicing_bench(size, progress=reporter.phase)
    if name == "memory":
        from caas.bench import memory

        return memory.run(size, progress=reporter.phase).as_json()
    raise ValueError(f"no benchmark {name!r}: {', '.join(BENCHMARKS)}")


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_all(
    sizes: Mapping[str, int],
    *,
    only: Sequence[str],
    factor: int,
    out: Path,
    reporter: Callable[[], AbstractContextManager[Reporter]],
    say: Say,
) -> dict[str, Any]:
    """Every benchmark of `only` at `sizes[name]` and `factor` times it; the results, also
    written to `out` after each run."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    runs: dict[str, list[tuple[int, Result]]] = {}
    document: dict[str, Any] = {}
    plan = [(name, size) for name in only for size in (sizes[name], sizes[name] * factor)]
    for number, (name, size) in enumerate(plan, start=1):
        say(f"[{number}/{len(plan)}] {name} at {size:,} {UNITS[name]}")
        load_before, clock = _load_average(), time.perf_counter()
        try:
            with reporter() as progress:
                result = run_one(name, size, progress)
        except Exception as error:  # noqa: BLE001 - recorded; the other benchmarks still run
            result = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
            say(traceback.format_exc())
        result["wall_seconds"] = round(time.perf_counter() - clock, 1)
        result["load_average_before"] = load_before
        result["load_average_after"] = _load_average()
        outcome = result.get("error", f"done in {result['wall_seconds']:,.0f} s")
        load = result["load_average_after"]
        say(f"[{number}/{len(plan)}] {name} at {size:,}: {outcome}; load average {load}")
        runs.setdefault(name, []).append((size, result))
        document = {
            "started_at": started_at,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "factor": factor,
            "sizes": {name: sizes[name] for name in only},
            "results": {
                name: [{"size": size, **result} for size, result in done]
                for name, done in runs.items()
            },
            "summary": [row.as_json() for row in summary_rows(runs, factor=factor)],
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
    return document


def merge(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Results of several `caas bench all` runs as one (a run split over several invocations):
    a later document's benchmark at a size replaces an earlier one's; the summary is made
    again from the merged results."""
    merged: dict[str, dict[int, Result]] = {}
    for document in documents:
        for name, items in document.get("results", {}).items():
            for item in items:
                merged.setdefault(name, {})[int(item["size"])] = item
    runs = {
        name: sorted((size, item) for size, item in by_size.items())
        for name, by_size in merged.items()
    }
    return {
        "started_at": min((d["started_at"] for d in documents if "started_at" in d), default=None),
        "finished_at": max(
            (d["finished_at"] for d in documents if "finished_at" in d), default=None
        ),
        "merged_from": len(documents),
        "sizes": {name: min(by_size) for name, by_size in merged.items()},
        "results": {name: [item for _, item in items] for name, items in runs.items()},
        "summary": [row.as_json() for row in summary_rows(runs)],
    }
