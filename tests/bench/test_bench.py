"""`caas bench` runs end to end on tiny sizes and prints its figures as the last line: a smoke
test of the benchmarks' plumbing, not a speed target.

The benchmarks are started together (each in a process of its own, on a platform of its own)
and each test waits for its own: most of each run is waiting for processes to start, so the
module takes about as long as its slowest benchmark instead of their sum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

OTA_KEYS: tuple[str, ...] = ("p50_ms", "p95_ms", "p99_ms", "baseline_p50_ms", "baseline_p95_ms")
OTA_KEYS += ("baseline_p99_ms", "ratio_p99", "fleet_wide_ms")
TELEMETRY_KEYS = ("stored_per_s", "baseline_per_s", "ratio", "offered", "stored", "throttled")
API_KEYS: tuple[str, ...] = ("purchases_per_s", "p50_ms", "p95_ms", "p99_ms", "baseline_per_s")
API_KEYS += ("baseline_p50_ms", "baseline_p95_ms", "baseline_p99_ms", "ratio", "seconds")
MEMORY_KEYS: tuple[str, ...] = ("baseline_rss_mb", "peak_rss_mb", "rss_mb", "hwm_rss_mb", "ratio")
MEMORY_KEYS += ("mb_per_1000_cars", "connect_seconds", "cars_process_rss_mb", "telemetry_sent")
MEMORY_KEYS += ("telemetry_stored",)
RUNS = {
    "ota": ("ota", "--cars", "3", "--changes", "5", "--json"),
    "telemetry": ("telemetry", "--cars", "3", "--seconds", "1", "--json"),
    "api": ("api", "--requests", "4", "--concurrency", "2", "--json"),
    "memory": ("memory", "--cars", "3", "--seconds", "1", "--json"),
}
TIMEOUT_SECONDS = 480
# The first test waits for its benchmark while the others run beside it: on a shared machine
# that is longer than the suite's default per test.
pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS + 60)


@pytest.fixture(scope="module")
def bench_env(admin_url: str) -> dict[str, str]:
    """The suite's PostgreSQL server (each bench makes and drops its own database there) and
    no broker: each bench starts a private one (Mosquitto, else the embedded broker). One
    broker for benches running at once would share the cars' reports among their workers
    (the bridge's shared subscriptions), each with a database of its own."""
    env = {**os.environ, "CAAS_DATABASE_URL": admin_url, "CAAS_LOG_LEVEL": "WARNING"}
    for name in ("CAAS_MQTT_URL", "CAAS_MQTT_ADMIN_USERNAME", "CAAS_MQTT_ADMIN_PASSWORD"):
        env.pop(name, None)
    return env


class Runs:
    """`caas bench ...` processes started at once; `result` waits for one and parses the last
    line it printed."""

    def __init__(self, env: dict[str, str], names: list[str]) -> None:
        caas = str(Path(sys.executable).with_name("caas"))
        self.processes = {
            name: subprocess.Popen(
                [caas, "bench", *RUNS[name]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        }

    def result(self, name: str) -> dict[str, Any]:
        stdout, stderr = self.processes[name].communicate(timeout=TIMEOUT_SECONDS)
        assert self.processes[name].returncode == 0, stderr[-3000:]
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return result

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.communicate(timeout=60)


@pytest.fixture(scope="module")
def runs(bench_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Runs]:
    """The benchmarks of the tests selected in this run (`test_<name>_bench...`), started."""
    selected = [item.name for item in request.session.items]
    names = [name for name in RUNS if any(f"test_{name}_bench" in test for test in selected)]
    started = Runs(bench_env, names)
    yield started
    started.stop()


def test_ota_bench_prints_latencies_beside_the_raw_round_trip(runs: Runs) -> None:
    result = runs.result("ota")

    for key in OTA_KEYS:
        assert isinstance(result[key], int | float), key
    assert result["applied"] == 5
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert 0 < result["baseline_p50_ms"] <= result["baseline_p99_ms"]


def test_telemetry_bench_prints_stored_beside_received(runs: Runs) -> None:
    result = runs.result("telemetry")

    for key in TELEMETRY_KEYS:
        assert isinstance(result[key], int | float), key
    assert result["offered"] > 0 and result["baseline_per_s"] > 0
    assert 0 < result["stored"] <= result["offered"]
    # Counted by the bridge of the worker that stored them (the one running after set-up).
    assert result["stored"] <= result["received"] <= result["offered"]


def test_api_bench_prints_purchases_per_second_beside_a_trivial_endpoint(runs: Runs) -> None:
    result = runs.result("api")

    for key in API_KEYS:
        assert isinstance(result[key], int | float), key
    assert result["requests"] == 4 and result["concurrency"] == 2
    assert result["statuses"] == {"201": 4}
    assert result["purchases_ok"] == 4
    assert result["purchases_stored"] >= 4  # and the warm-up's
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert 0 < result["baseline_p50_ms"] <= result["baseline_p99_ms"]
    assert result["purchases_per_s"] > 0 and result["baseline_per_s"] > 0
    # Of the rates before they were rounded to a tenth.
    ratio = result["baseline_per_s"] / result["purchases_per_s"]
    assert result["ratio"] == pytest.approx(ratio, rel=0.2)


def test_memory_bench_prints_the_workers_peak_beside_its_idle_memory(runs: Runs) -> None:
    result = runs.result("memory")

    for key in MEMORY_KEYS:
        assert isinstance(result[key], int | float), key
    assert result["cars"] == 3
    assert 0 < result["baseline_rss_mb"] <= result["hwm_rss_mb"]
    assert 0 < result["peak_rss_mb"] <= result["hwm_rss_mb"]
    ratio = result["peak_rss_mb"] / result["baseline_rss_mb"]
    assert result["ratio"] == pytest.approx(ratio, abs=0.01)
    assert result["connect_seconds"] > 0 and result["cars_process_rss_mb"] > 0
    assert 0 < result["telemetry_stored"] <= result["telemetry_sent"]
