"""`caas bench ota`: from the commit of a configuration change to the car's `applied` report
stored by the platform, beside a raw MQTT QoS 1 round trip on the same broker.

The platform is the worker as `caas worker` runs it; the cars are vehicle agents in a process of
their own (`caas.bench.harness`). Changes are made as a purchase makes them
(`caas.ota.service.request_configuration` in a transaction the benchmark commits), `rate` a
second, one car after the other. A change's latency runs from just before its commit to the
commit of the transaction in which the worker's bridge stored the car's `applied` report for
that version, both read with `time.perf_counter` in this process.

Then one change for the whole fleet in one transaction (a catalog-wide change): the time until
the last car's `applied` is stored.

The baseline, with the worker stopped and the cars still connected: a client with the
platform's account publishes a manifest-sized message with QoS 1 on a spare car's desired topic;
a client with that car's account answers with QoS 1 on its reported topic, which the first one
subscribes to; the time from the publication to the answer's arrival. Both clients set
TCP_NODELAY, like the bridge and the cars.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from caas.bench.harness import ACTOR, BenchCar, BenchPlatform, percentile
from caas.bench.report import Reporter
from caas.core.clock import SystemClock
from caas.iot.bridge import NODELAY
from caas.ota import service as ota
from caas.protocol import mqtt
from caas.protocol.mqtt import Reported
from caas.vehicles.models import Vehicle

APPLIED_WAIT_SECONDS = 60.0
WARM_UP_ROUND_TRIPS = 20


@dataclass(frozen=True)
class OtaResult:
    """The figures of one run; `as_json` is what `--json` prints."""

    cars: int
    changes: int
    rate_per_s: float
    broker: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    applied: int
    baseline_p50_ms: float
    baseline_p95_ms: float
    baseline_p99_ms: float
    ratio_p99: float
    fleet_wide_ms: float
    fleet_wide_p50_ms: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run(cars: int, changes: int, *, rate: float, reporter: Reporter) -> OtaResult:
    with BenchPlatform.start(reporter.phase) as platform:
        created = platform.add_cars(cars + 1, reporter.phase)
        fleet, probe = created[:-1], created[-1]  # the spare car answers the baseline
        platform.start_cars(fleet, reporter.phase)
        latencies = _changes(platform, fleet, changes, rate=rate, reporter=reporter)
        reporter.phase(f"one change for all {cars} cars at once")
        fleet_wide = _fleet_wide(platform, fleet)
        platform.stop_worker()
        reporter.phase("baseline: raw MQTT round trips")
        baseline = asyncio.run(
            _round_trips(platform, probe, changes, size=_manifest_size(platform, probe))
        )
        broker = platform.broker_kind
    p99, baseline_p99 = percentile(latencies, 0.99), percentile(baseline, 0.99)
    return OtaResult(
        cars=cars,
        changes=changes,
        rate_per_s=rate,
        broker=broker,
        p50_ms=_ms(percentile(latencies, 0.50)),
        p95_ms=_ms(percentile(latencies, 0.95)),
        p99_ms=_ms(p99),
        max_ms=_ms(max(latencies, default=0.0)),
        applied=len(latencies),
        baseline_p50_ms=_ms(percentile(baseline, 0.50)),
        baseline_p95_ms=_ms(percentile(baseline, 0.95)),
        baseline_p99_ms=_ms(baseline_p99),
        ratio_p99=round(p99 / baseline_p99, 1) if baseline_p99 else 0.0,
        fleet_wide_ms=_ms(max(fleet_wide, default=0.0)),
        fleet_wide_p50_ms=_ms(percentile(fleet_wide, 0.50)),
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _changes(
    platform: BenchPlatform, fleet: list[BenchCar], count: int, *, rate: float, reporter: Reporter
) -> list[float]:
    """`count` changes, `rate` a second, one car after the other; each one's latency."""
    clock, started = SystemClock(), {}
    interval = 1 / rate
    advance = reporter.track(count, "configuration changes")
    next_at = time.perf_counter()
    for number in range(count):
        car = fleet[number % len(fleet)]
        session = platform.sessions()
        try:
            vehicle = session.get_one(Vehicle, car.vehicle_id)
            version = ota.request_configuration(
                session,
                vehicle,
                reason="bench",
                actor=ACTOR,
                now=clock.now(),
                messages=[f"bench change {number + 1}"],
            )
            key = (car.vin, version.version)
            started[key] = time.perf_counter()
            session.commit()
        finally:
            session.close()
        advance()
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    platform.stored.wait_applied(list(started), APPLIED_WAIT_SECONDS)
    applied = platform.stored.applied
    return [applied[key] - at for key, at in started.items() if key in applied]


def _fleet_wide(platform: BenchPlatform, fleet: list[BenchCar]) -> list[float]:
    """One transaction changing every car's configuration; each car's latency."""
    now = SystemClock().now()
    keys = []
    session = platform.sessions()
    try:
        for car in fleet:
            vehicle = session.get_one(Vehicle, car.vehicle_id)
            version = ota.request_configuration(
                session, vehicle, reason="bench", actor=ACTOR, now=now, messages=["fleet-wide"]
            )
            keys.append((car.vin, version.version))
        started = time.perf_counter()
        session.commit()
    finally:
        session.close()
    platform.stored.wait_applied(keys, APPLIED_WAIT_SECONDS)
    applied = platform.stored.applied
    return [applied[key] - started for key in keys if key in applied]


def _manifest_size(platform: BenchPlatform, car: BenchCar) -> int:
    with platform.sessions() as session:
        versions = ota.versions_of(session, car.vehicle_id)
        return len(ota.manifest_payload(versions[0]))


async def _round_trips(
    platform: BenchPlatform, probe: BenchCar, count: int, *, size: int
) -> list[float]:
    """`count` QoS 1 round trips platform -> car -> platform (after a few to warm up)."""
    address = platform.broker
    answer = mqtt.encode(Reported(vin=probe.vin, version=1, status="applied", at=datetime.now(UTC)))
    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    common: dict[str, Any] = {
        "protocol": aiomqtt.ProtocolVersion.V311,
        "socket_options": [NODELAY],
        "clean_session": True,
    }
    async with (
        aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=f"caas-bench-platform-{time.monotonic_ns()}",
            **common,
        ) as platform_client,
        aiomqtt.Client(
            address.host,
            address.port,
            username=probe.vin,
            password=probe.password,
            identifier=probe.vin,
            **common,
        ) as car_client,
    ):
        await car_client.subscribe(mqtt.desired_topic(probe.vin), qos=mqtt.QOS_DESIRED)
        await platform_client.subscribe(mqtt.reported_topic(probe.vin), qos=mqtt.QOS_REPORTED)

        async def car() -> None:
            async for message in car_client.messages:
                if message.retain:  # the platform's real manifest, kept by the broker
                    continue
                payload = bytes(message.payload) if isinstance(message.payload, bytes) else b""
                await car_client.publish(
                    mqtt.reported_topic(probe.vin),
                    payload[:8] + answer,
                    qos=mqtt.QOS_REPORTED,
                )

        async def platform_side() -> None:
            async for message in platform_client.messages:
                if isinstance(message.payload, bytes):
                    arrived.put_nowait(message.payload[:8])

        tasks = [asyncio.create_task(car()), asyncio.create_task(platform_side())]
        trips: list[float] = []
        try:
            for number in range(WARM_UP_ROUND_TRIPS + count):
                tag = b"%08d" % number
                started = time.perf_counter()
                await platform_client.publish(
                    mqtt.desired_topic(probe.vin),
                    tag + b"x" * max(0, size - len(tag)),
                    qos=mqtt.QOS_DESIRED,
                )
                while await asyncio.wait_for(arrived.get(), 10) != tag:
                    pass
                if number >= WARM_UP_ROUND_TRIPS:
                    trips.append(time.perf_counter() - started)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return trips
