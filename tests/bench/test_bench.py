"""`caas bench` runs end to end on tiny sizes and prints its figures as the last line: a smoke
test of the benchmarks' plumbing, not a speed target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caas.iot.local import start_local_broker
from caas.iot.mosquitto import available as mosquitto_available

OTA_KEYS = ("p50_ms", "p95_ms", "p99_ms", "baseline_p50_ms", "baseline_p95_ms")
OTA_KEYS += ("baseline_p99_ms", "ratio_p99", "fleet_wide_ms")
TELEMETRY_KEYS = ("stored_per_s", "baseline_per_s", "ratio", "offered", "stored", "throttled")


@pytest.fixture(scope="module")
def bench_env(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The suite's PostgreSQL server (the bench makes and drops its own database there) and a
    Mosquitto of this module's own (the bench's cars leave retained messages behind); without
    Mosquitto the bench starts its own embedded broker."""
    env = {**os.environ, "CAAS_DATABASE_URL": admin_url, "CAAS_LOG_LEVEL": "WARNING"}
    if not mosquitto_available():
        env.pop("CAAS_MQTT_URL", None)
        yield env
        return
    with start_local_broker(tmp_path_factory.mktemp("bench-mqtt"), kind="mosquitto") as broker:
        env.update(
            CAAS_MQTT_URL=broker.service_url,
            CAAS_MQTT_ADMIN_USERNAME=broker.admin_username,
            CAAS_MQTT_ADMIN_PASSWORD=broker.admin_password,
        )
        yield env


def bench(env: dict[str, str], *arguments: str) -> dict[str, Any]:
    """Run `caas bench ...`; the last line it printed, parsed."""
    command = [str(Path(sys.executable).with_name("caas")), "bench", *arguments]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_ota_bench_prints_latencies_beside_the_raw_round_trip(bench_env: dict[str, str]) -> None:
    result = bench(bench_env, "ota", "--cars", "3", "--changes", "5", "--json")

    for key in OTA_KEYS:
        assert isinstance(result[key], int | float), key
    assert result["applied"] == 5
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert 0 < result["baseline_p50_ms"] <= result["baseline_p99_ms"]


def test_telemetry_bench_prints_stored_beside_received(bench_env: dict[str, str]) -> None:
    result = bench(bench_env, "telemetry", "--cars", "3", "--seconds", "1", "--json")

    for key in TELEMETRY_KEYS:
        assert isinstance(result[key], int | float), key
    assert result["offered"] > 0 and result["baseline_per_s"] > 0
    assert 0 < result["stored"] <= result["offered"]
