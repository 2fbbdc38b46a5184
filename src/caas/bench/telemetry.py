"""`caas bench telemetry`: telemetry rows stored per second beside what a bare subscriber
receives per second, in the same run on the same broker.

N vehicle agents (in a process of their own, `caas.bench.cars`) send telemetry for S seconds,
each as fast as the agent allows (or `rate` samples a second). The worker's bridge takes them
through its shared subscription, drops what exceeds `telemetry_per_second` per car (on
purpose: a car flooding telemetry must not slow the others), batches the rest and stores them
(`caas.vehicles.ingest.store_telemetry`); a bare aiomqtt subscriber in a third process counts
the same stream. Both rates are taken over at least the S seconds of sending, longer when the
storing or the receiving lasted longer. The result says what was offered, received by the
bridge, throttled, dropped for backlog and stored.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select

from caas.bench.harness import BenchPlatform, CarsProcess
from caas.bench.report import Reporter
from caas.vehicles.models import TelemetrySample

DRAIN_SECONDS = 30.0
QUIET_SECONDS = 1.0


@dataclass(frozen=True)
class TelemetryResult:
    cars: int
    seconds: float
    broker: str
    throttle_per_car_per_s: float
    offered: int
    offered_per_s: float
    baseline_received: int
    baseline_per_s: float
    received: int
    throttled: int
    backlog_dropped: int
    malformed: int
    stored: int
    stored_per_s: float
    ratio: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run(cars: int, seconds: float, *, rate: float, reporter: Reporter) -> TelemetryResult:
    with BenchPlatform.start(reporter.phase) as platform:
        process = platform.start_cars(platform.add_cars(cars, reporter.phase), reporter.phase)
        # The worker's bridge now: loading the cars' accounts restarts the worker.
        assert platform.worker is not None and platform.worker.bridge is not None
        bridge = platform.worker.bridge
        subscriber = CarsProcess.start("subscriber", str(platform.settings.mqtt_url))
        try:
            subscriber.expect("subscribed")
            before = Counter(bridge.counts)
            rows_before = _rows(platform)
            reporter.phase(f"{cars} cars sending telemetry for {seconds:g} s")
            started = time.perf_counter()
            process.send(command="telemetry", seconds=seconds, rate=rate)
            sent = process.expect("telemetry", timeout=seconds + 60)
            reporter.phase("waiting for the worker to store what it received")
            _drain(platform)
            subscriber.send(command="count")
            counted = subscriber.expect("count")
        finally:
            subscriber.stop()
        counts = Counter(bridge.counts)
        counts.subtract(before)
        stored = _rows(platform) - rows_before
        batches = [at for at, _ in platform.stored.telemetry_batches if at >= started]
        storing = max(seconds, (max(batches) - started) if batches else 0.0)
        receiving = max(seconds, counted["last"] - counted["first"])
        baseline_per_s = counted["received"] / receiving
        stored_per_s = stored / storing
        return TelemetryResult(
            cars=cars,
            seconds=seconds,
            broker=platform.broker_kind,
            throttle_per_car_per_s=bridge.telemetry_per_second,
            offered=sent["offered"],
            offered_per_s=round(sent["offered"] / sent["seconds"], 1),
            baseline_received=counted["received"],
            baseline_per_s=round(baseline_per_s, 1),
            received=counts["received.telemetry"],
            throttled=counts["dropped.throttled"],
            backlog_dropped=counts["dropped.backlog"],
            malformed=counts["dropped.malformed"],
            stored=stored,
            stored_per_s=round(stored_per_s, 1),
            ratio=round(stored_per_s / baseline_per_s, 4) if baseline_per_s else 0.0,
        )


def _rows(platform: BenchPlatform) -> int:
    with platform.sessions() as session:
        return session.scalar(select(func.count()).select_from(TelemetrySample)) or 0


def _drain(platform: BenchPlatform) -> None:
    """Until the bridge has received and stored nothing new for `QUIET_SECONDS`."""
    assert platform.worker is not None and platform.worker.bridge is not None
    counts = platform.worker.bridge.counts
    deadline = time.monotonic() + DRAIN_SECONDS
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = (
            counts["received.telemetry"],
            counts["stored.telemetry"],
            len(platform.stored.telemetry_batches),
        )
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            return
        time.sleep(0.1)  # watching other threads' progress, not a schedule
