"""`caas bench memory`: the worker's peak resident memory with N cars connected, beside the
same worker's with none.

The platform is a scratch one (`caas.bench.harness.BenchPlatform`: PostgreSQL, the broker).
The N cars are made as the factory makes them (their records, broker accounts delivered by a
worker, configuration version 1 signed and published); that worker, in this process, is then
stopped, and the worker measured is `caas worker` in a process of its own, as it runs in
production (`caas.worker.build_worker`: relay threads, the express relay, the MQTT bridge).

1. Baseline: once its bridge is connected (it logs `mqtt.bridge_connected`), the worker's
   resident memory (`VmRSS` in `/proc/<pid>/status`, sampled every `SAMPLE_SECONDS`) at its
   highest over `SETTLE_SECONDS` with 0 cars connected: `baseline_rss_mb`.
2. The N cars connect (vehicle agents in a process of their own, `caas.bench.cars`), each
   takes its retained configuration and reports `applied`, which the worker's bridge stores;
   then every car sends telemetry once a second for `seconds` seconds, which the bridge
   batches and stores. The highest resident memory sampled from the cars' first connection
   until the last telemetry is stored: `peak_rss_mb`. (`VmHWM`, the kernel's own peak, is
   given too as `hwm_rss_mb`; it includes the start-up's imports, which can be higher than
   anything after, so it hides what the cars add.)

`ratio` = peak / baseline; `mb_per_1000_cars` = (peak - baseline) / N * 1,000.

Ten thousand cars need as many sockets in the cars' process and in the broker: this process
raises its open-files limit to the hard limit first (the broker and the cars inherit it).
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from caas.bench.harness import BenchPlatform
from caas.bench.telemetry import _rows
from caas.core.settings import Settings
from caas.runtime import StartupError

SETTLE_SECONDS = 3.0  # how long the idle worker is watched for the baseline
SAMPLE_SECONDS = 0.1
START_SECONDS = 300.0  # a machine shared with test suites imports slowly
TELEMETRY_SECONDS = 5.0
DRAIN_SECONDS = 60.0
QUIET_SECONDS = 3.0  # nothing new stored for this long: the worker is done with the telemetry
SOCKETS_PER_CAR = 2  # the car's socket in the cars' process, and its peer in the broker

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class MemoryResult:
    """The figures of one run; `as_json` is what `--json` prints."""

    cars: int
    seconds: float
    broker: str
    baseline_rss_mb: float
    peak_rss_mb: float
    rss_mb: float
    hwm_rss_mb: float
    ratio: float
    mb_per_1000_cars: float
    connect_seconds: float
    cars_process_rss_mb: float
    telemetry_sent: int
    telemetry_stored: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def raise_open_files_limit(wanted: int) -> int:
    """The soft limit of open files raised towards `wanted` (at most the hard limit); the
    limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def memory_of(pid: int) -> dict[str, float]:
    """`VmRSS` and `VmHWM` (peak) of process `pid`, in MB, from `/proc/<pid>/status`."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024  # kB
    return found


class Sampler:
    """The highest `VmRSS` of a process, sampled in a thread every `SAMPLE_SECONDS`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.highest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caas-bench-rss", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.highest = max(self.highest, memory_of(self.pid)["VmRSS"])

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `caas worker` run on the bench's platform."""
    return {
        **os.environ,
        "CAAS_DATABASE_URL": str(settings.database_url),
        "CAAS_MQTT_URL": str(settings.mqtt_url),
        "CAAS_MQTT_ADMIN_USERNAME": settings.mqtt_admin_username,
        "CAAS_MQTT_ADMIN_PASSWORD": settings.mqtt_admin_password,
        "CAAS_OTA_KEYS_DIR": str(settings.ota_keys_path),
        "CAAS_DATA_DIR": str(settings.data_dir),
        "CAAS_LOG_FORMAT": "json",
        "CAAS_LOG_LEVEL": "INFO",
    }


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`caas worker` in a process of its own, once its MQTT bridge is connected."""
    import sys

    command = [str(Path(sys.executable).with_name("caas")), "worker"]
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        while b"mqtt.bridge_connected" not in log_file.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_file.read_text(errors="replace")[-500:]
                raise StartupError(f"caas worker did not connect to the broker: {tail}")
            time.sleep(0.1)  # real concurrency with another process, not a schedule
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _until_stored(platform: BenchPlatform, sent: int) -> int:
    """Until the worker has stored the `sent` samples, or stored nothing new for
    `QUIET_SECONDS` after its first one (it may drop some: its backlog bound), or
    `DRAIN_SECONDS` in all; the rows stored. A worker still busy with a thousand cars'
    online statuses stores its first telemetry late: waiting only for a quiet second ended
    one run before anything was stored (2026-12-04: 0 of 3,775)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    last, quiet_since = _rows(platform), time.monotonic()
    while time.monotonic() < deadline and last < sent:
        time.sleep(0.2)  # watching another process's progress, not a schedule
        rows = _rows(platform)
        if rows != last:
            last, quiet_since = rows, time.monotonic()
        elif last > 0 and time.monotonic() - quiet_since >= QUIET_SECONDS:
            break
    return last


def run(
    cars: int, *, seconds: float = TELEMETRY_SECONDS, progress: Progress = _quiet
) -> MemoryResult:
    raise_open_files_limit(cars * SOCKETS_PER_CAR + 1024)
    with BenchPlatform.start(progress) as platform:
        fleet = platform.add_cars(cars, progress)
        platform.stop_worker()  # the one measured runs in a process of its own
        assert platform._workdir is not None
        log_file = platform._workdir / "worker.log"
        progress("starting caas worker")
        with running_worker(worker_env(platform.settings), log_file) as worker:
            progress("the worker with 0 cars connected")
            with Sampler(worker.pid) as idle:
                time.sleep(SETTLE_SECONDS)  # watching the idle worker, not a schedule
            with Sampler(worker.pid) as busy:
                started = time.perf_counter()
                cars_process = platform.start_cars(fleet, progress)
                connected = time.perf_counter() - started
                progress(f"{cars:,} cars sending telemetry once a second for {seconds:g} s")
                cars_process.send(command="telemetry", seconds=seconds, rate=1.0)
                sent = cars_process.expect("telemetry", timeout=seconds + 120)["sent"]
                stored = _until_stored(platform, sent)
            measured = memory_of(worker.pid)
            cars_rss = memory_of(cars_process.process.pid)["VmHWM"]
        broker = platform.broker_kind
    baseline, peak = idle.highest, busy.highest
    return MemoryResult(
        cars=cars,
        seconds=seconds,
        broker=broker,
        baseline_rss_mb=round(baseline, 1),
        peak_rss_mb=round(peak, 1),
        rss_mb=round(measured["VmRSS"], 1),
        hwm_rss_mb=round(measured["VmHWM"], 1),
        ratio=round(peak / baseline, 2) if baseline else 0.0,
        mb_per_1000_cars=round((peak - baseline) / cars * 1000, 2),
        connect_seconds=round(connected, 1),
        cars_process_rss_mb=round(cars_rss, 1),
        telemetry_sent=int(sent),
        telemetry_stored=stored,
    )
