"""What both benchmarks share: a scratch platform and its cars, started and cleaned up.

`BenchPlatform.start` gives a benchmark what `caas worker` runs on, built for this run only:

- PostgreSQL: the server of `CAAS_DATABASE_URL` when set, else the embedded one (pgserver, as
  in `caas demo`), with a scratch database made (migrated, catalog seeded) and dropped here;
- MQTT: the broker of `CAAS_MQTT_URL` (and `CAAS_MQTT_ADMIN_*`) when set, else a private
  Mosquitto (or the embedded broker where Mosquitto is not installed), stopped at the end;
- the worker as `caas worker` builds it (`caas.worker.build_worker`): relay threads woken by
  NOTIFY, the express relay of `ota.publish`, the MQTT bridge; the bridge's sinks are wrapped
  so the benchmark sees when each report and batch is stored (after its commit);
- cars as the factory makes them (`add_cars`): the car's record, broker credentials (loaded
  into the run's own Mosquitto at once, else delivered by the worker), configuration version
  1; and their agents in a process of their own (`start_cars`, see `caas.bench.cars`).
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from caas.bench.cars import LINE_PREFIX
from caas.catalog.models import Platform
from caas.core.clock import SystemClock
from caas.core.db import make_engine, make_session_factory, normalise_url, unit_of_work
from caas.core.history import Actor, record
from caas.core.migrate import upgrade
from caas.core.settings import Settings
from caas.iot.bridge import Sinks
from caas.iot.broker import BrokerAddress
from caas.iot.local import LocalBroker, start_local_broker
from caas.iot.models import BrokerCredential
from caas.iot.passwords import hash_password, new_password
from caas.iot.service import provision_car
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial, ensure_demo_keys
from caas.ota.models import ConfigurationVersion
from caas.protocol.manifest import private_key_to_pem, public_key_b64
from caas.protocol.mqtt import Reported
from caas.protocol.vin import make_vin, model_year_code
from caas.runtime import StartupError, read_settings
from caas.seed import load_reference_data
from caas.vehicles.models import Vehicle
from caas.worker import Worker, build_worker
from caas_sim.vehicle.fleet import FleetFile, ProvisionedCar

ACTOR = Actor.system("bench")
PLATFORM = "AURA"
SOFTWARE = "7.2.0"
# Setting up cars waits for the worker and the cars as long as they make progress, and gives up
# after this long without any (ten thousand cars take many minutes on a busy machine).
WAIT_SECONDS = 120.0
CHUNK = 500  # cars made in one transaction

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class BenchCar:
    vehicle_id: int
    vin: str
    password: str
    private_key: Ed25519PrivateKey


class Stored:
    """When the worker's bridge stored what the cars sent (perf_counter, after the commit)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: dict[tuple[str, int], float] = {}
        self.telemetry_batches: list[tuple[float, int]] = []

    def wrap(self, sinks: Sinks) -> Sinks:
        def report(session: Session, item: Reported, now: datetime) -> object:
            result = sinks.report(session, item, now)
            if item.status == "applied":
                key = (item.vin, item.version)
                event.listen(session, "after_commit", lambda _: self._applied(key), once=True)
            return result

        def telemetry(session: Session, items: list[Any], now: datetime) -> int:
            stored = sinks.telemetry(session, items, now)
            event.listen(session, "after_commit", lambda _: self._batch(len(items)), once=True)
            return stored

        return replace(sinks, report=report, telemetry=telemetry)

    def _applied(self, key: tuple[str, int]) -> None:
        with self.lock:
            self.applied.setdefault(key, time.perf_counter())

    def _batch(self, size: int) -> None:
        with self.lock:
            self.telemetry_batches.append((time.perf_counter(), size))

    def wait_applied(self, keys: list[tuple[str, int]], timeout: float) -> bool:
        """Until every (VIN, version) of `keys` is stored as applied, or `timeout` seconds pass
        without one more stored (a fleet of ten thousand takes minutes, in steady progress).
        The times are taken as each is stored (`_applied`), not when this notices them."""
        missing, deadline = set(keys), time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                still = {key for key in missing if key not in self.applied}
            if not still:
                return True
            if len(still) < len(missing):
                missing, deadline = still, time.monotonic() + timeout
            time.sleep(0.05)  # watching the worker's threads, not a schedule
        return False


@dataclass
class CarsProcess:
    """A process of `caas.bench.cars` and the lines it says."""

    process: subprocess.Popen[str]

    @classmethod
    def start(cls, role: str, *arguments: str) -> CarsProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "caas.bench.cars", role, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        return cls(process)

    def send(self, **command: Any) -> None:
        stdin = self._pipe(self.process.stdin)
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def expect(self, event_name: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        """The next message `event_name` (other output is skipped); RuntimeError when the
        process ends first. `timeout` is enforced by the caller's own bound on the run."""
        stdout = self._pipe(self.process.stdout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"the bench's {event_name!r} process ended early")
            if line.startswith(LINE_PREFIX):
                message: dict[str, Any] = json.loads(line[len(LINE_PREFIX) :])
                if message.get("event") == event_name:
                    return message
        raise RuntimeError(f"no {event_name!r} from the bench's process in {timeout} s")

    @staticmethod
    def _pipe(pipe: IO[str] | None) -> IO[str]:
        if pipe is None:
            raise RuntimeError("the process has no pipe")
        return pipe

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send(command="stop")
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@dataclass
class BenchPlatform:
    """A scratch platform for one benchmark run (see the module's docstring)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker: BrokerAddress
    broker_kind: str
    signing: SigningMaterial
    stored: Stored = field(default_factory=Stored)
    worker: Worker | None = None
    local: LocalBroker | None = None  # the broker started for this run (None when given)
    cars: list[BenchCar] = field(default_factory=list)
    _cars_process: CarsProcess | None = None
    _workdir: Path | None = None

    @classmethod
    @contextlib.contextmanager
    def start(cls, progress: Progress = _quiet) -> Iterator[BenchPlatform]:
        with contextlib.ExitStack() as stack:
            workdir = Path(tempfile.mkdtemp(prefix="caas-bench-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            settings = read_settings()
            progress("starting PostgreSQL")
            server_url = settings.database_url or _embedded_postgres(settings, stack)
            database_url = stack.enter_context(scratch_database(server_url))
            progress("migrating the scratch database")
            upgrade(database_url)
            progress("starting the MQTT broker")
            local: LocalBroker | None = None
            if settings.mqtt_url is not None:
                mqtt_url, kind = settings.mqtt_url, "given"
                admin = (settings.mqtt_admin_username, settings.mqtt_admin_password)
            else:
                local = stack.enter_context(start_local_broker(workdir / "mqtt"))
                mqtt_url, kind = local.service_url, local.kind
                admin = (local.admin_username, local.admin_password)
            settings = read_settings(
                database_url=database_url,
                mqtt_url=mqtt_url,
                mqtt_admin_username=admin[0],
                mqtt_admin_password=admin[1],
                ota_keys_dir=workdir / "keys",
                data_dir=workdir,
            )
            signing = ensure_demo_keys(workdir / "keys")
            ota.use_signing_material(signing)
            stack.callback(ota.use_signing_material, None)
            engine = make_engine(database_url)
            stack.callback(engine.dispose)
            sessions = make_session_factory(engine)
            with unit_of_work(sessions) as session:
                load_reference_data(session)
            platform = cls(
                settings=settings,
                engine=engine,
                sessions=sessions,
                broker=BrokerAddress.from_url(mqtt_url),
                broker_kind=kind,
                signing=signing,
                local=local,
                _workdir=workdir,
            )
            stack.callback(platform.stop)
            progress("starting the worker")
            platform.start_worker()
            yield platform

    # --- the worker ---------------------------------------------------------------------------

    def start_worker(self) -> Worker:
        worker = build_worker(self.settings, self.sessions, SystemClock())
        if worker.bridge is None:
            raise StartupError("the worker has no MQTT bridge")
        worker.bridge.sinks = self.stored.wrap(worker.bridge.sinks)
        worker.start()
        if not worker.bridge.connected.wait(10):
            worker.stop()
            raise StartupError(f"the worker could not connect to the broker {self.broker.host}")
        self.worker = worker
        return worker

    def stop_worker(self) -> None:
        """Stop the worker and wait for it, however long its jobs in hand take on a loaded
        machine: a worker still storing after the run would write into the next one's time
        (and into a dropped database)."""
        if self.worker is not None:
            if not self.worker.stop(timeout=WAIT_SECONDS):
                raise RuntimeError(f"the worker did not stop within {WAIT_SECONDS} s")
            self.worker = None

    def stop(self) -> None:
        if self._cars_process is not None:
            self._cars_process.stop()
            self._cars_process = None
        self.stop_worker()

    # --- cars ---------------------------------------------------------------------------------

    def add_cars(self, count: int, progress: Progress = _quiet) -> list[BenchCar]:
        """`count` cars as the factory builds them: the car's record, its broker credentials,
        configuration version 1 signed and queued for the worker to publish.

        On the private Mosquitto of the run the broker accounts are loaded all at once
        (`LocalBroker.load_cars`: the worker is stopped, the broker restarted with them), as
        its plugin's API takes minutes for thousands of cars; on any other broker the worker
        delivers each account, as in production, and this waits for it."""
        serial = secrets.randbelow(900_000)
        made = [
            (
                make_vin("VCB", "AURA0", model_year_code(2026), "B", serial + number),
                new_password(),
                Ed25519PrivateKey.generate(),
            )
            for number in range(count)
        ]
        loaded = self._load_accounts([(vin, password) for vin, password, _ in made], progress)
        cars: list[BenchCar] = []
        for start in range(0, count, CHUNK):
            with unit_of_work(self.sessions) as session:
                cars += self._records(session, made[start : start + CHUNK], delivered=loaded)
            progress(f"made {len(cars):,} of {count:,} cars")
        if not loaded:
            self._wait_for_accounts([car.vin for car in cars], progress)
        self.cars.extend(cars)
        return cars

    def _load_accounts(self, accounts: list[tuple[str, str]], progress: Progress) -> bool:
        """The cars' accounts loaded into the run's own Mosquitto at once; False when the
        broker is not one (the worker then delivers them)."""
        if self.local is None or self.local.kind != "mosquitto":
            return False
        progress(f"loading {len(accounts):,} car accounts into the broker")
        self.stop_worker()
        self.local.load_cars(accounts)
        self.start_worker()
        return True

    def _records(
        self, session: Session, made: list[tuple[str, str, Ed25519PrivateKey]], *, delivered: bool
    ) -> list[BenchCar]:
        now = SystemClock().now()
        platform_id = session.scalars(select(Platform.id).where(Platform.code == PLATFORM)).one()
        hashes: list[str | None] = [None] * len(made)
        if delivered:
            with ThreadPoolExecutor() as pool:  # scrypt frees the GIL
                hashes = list(pool.map(hash_password, [password for _, password, _ in made]))
        cars: list[BenchCar] = []
        for (vin, password, private_key), password_hash in zip(made, hashes, strict=True):
            vehicle = Vehicle(
                vin=vin,
                platform_id=platform_id,
                public_key=public_key_b64(private_key),
                software_version=SOFTWARE,
                built_at=now,
                delivered_at=now,
            )
            session.add(vehicle)
            session.flush()
            if password_hash is not None:
                _loaded_credential(session, vin, password_hash, now)
            else:
                password = provision_car(session, vin=vin, now=now, settings=self.settings)
            ota.request_configuration(session, vehicle, reason="bench", actor=ACTOR, now=now)
            cars.append(BenchCar(vehicle.id, vin, password, private_key))
        return cars

    def _wait_for_accounts(self, vins: list[str], progress: Progress) -> None:
        progress(f"waiting for the broker to know {len(vins):,} cars")
        self._wait(
            lambda session: (
                session.scalar(
                    select(func.count()).where(
                        BrokerCredential.vin.in_(vins), BrokerCredential.delivered_at.is_(None)
                    )
                )
                or 0
            ),
            what="broker credentials",
            progress=progress,
        )

    def _wait(
        self, remaining: Callable[[Session], int], *, what: str, progress: Progress = _quiet
    ) -> None:
        """Until `remaining` is 0; RuntimeError after `WAIT_SECONDS` without it going down."""
        deadline, last = time.monotonic() + WAIT_SECONDS, None
        while time.monotonic() < deadline:
            with unit_of_work(self.sessions) as session:
                left = remaining(session)
            if left == 0:
                return
            if last is None or left < last:
                deadline, last = time.monotonic() + WAIT_SECONDS, left
                progress(f"waiting for {what}: {left:,} left")
            time.sleep(0.2)  # real concurrency with other processes, not a schedule
        raise RuntimeError(f"the bench waited {WAIT_SECONDS} s for {what} ({last:,} left)")

    def start_cars(self, cars: list[BenchCar], progress: Progress = _quiet) -> CarsProcess:
        """Run `cars` as vehicle agents in a process of their own; return when every car is
        online and has applied its newest version."""
        assert self._workdir is not None
        fleet = FleetFile(
            cars=[
                ProvisionedCar(
                    vin=car.vin,
                    password=car.password,
                    private_key_pem=private_key_to_pem(car.private_key).decode(),
                    root_public_key=public_key_b64(self.signing.root_public_key),
                    model=PLATFORM,
                    software_version=SOFTWARE,
                )
                for car in cars
            ]
        )
        fleet_file = self._workdir / "fleet.json"
        fleet.write(fleet_file)
        progress(f"connecting {len(cars)} simulated cars")
        process = CarsProcess.start("cars", str(fleet_file), self.broker_url)
        self._cars_process = process
        # Batches of 50 connect one after the other: allow a tenth of a second a car.
        online = process.expect("online", timeout=WAIT_SECONDS + len(cars) * 0.1)
        if online["count"] != len(cars):
            raise RuntimeError(f"only {online['count']} of {len(cars)} cars came online")
        ids = [car.vehicle_id for car in cars]
        progress("waiting for every car to apply its configuration")
        self._wait(
            lambda session: (
                session.scalar(
                    select(func.count()).where(
                        ConfigurationVersion.vehicle_id.in_(ids),
                        ConfigurationVersion.state != "applied",
                    )
                )
                or 0
            ),
            what="the cars' first configuration",
            progress=progress,
        )
        return process

    @property
    def broker_url(self) -> str:
        return f"mqtt://{self.broker.host}:{self.broker.port}"


def _loaded_credential(session: Session, vin: str, password_hash: str, now: datetime) -> None:
    """The car's credentials as `caas.iot.service.provision_car` issues them, already on the
    broker (`LocalBroker.load_cars`): only the hash, nothing left for the worker to deliver."""
    credential = BrokerCredential(
        vin=vin, password_hash=password_hash, generation=1, created_at=now, delivered_at=now
    )
    session.add(credential)
    session.flush()
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="broker_credential",
        subject_id=credential.id,
        event="car.broker_credentials_issued",
        details={"vin": vin, "loaded": True},
    )


def _embedded_postgres(settings: Settings, stack: contextlib.ExitStack) -> str:
    """The embedded PostgreSQL under the data directory (kept between runs, like the demo's)."""
    from caas.core.embedded import start_embedded_postgres

    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pgserver copes.
        warnings.simplefilter("ignore")
        import pgserver  # noqa: F401

    try:
        server, uri = start_embedded_postgres(settings.data_dir / "bench" / "pg")
    except Exception as error:  # noqa: BLE001 - any failure here is reported in one line
        raise StartupError(
            f"the embedded PostgreSQL did not start ({type(error).__name__}: {error}); "
            "set CAAS_DATABASE_URL"
        ) from None
    stack.callback(server.cleanup)
    return uri


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server of `server_url`, dropped at the end."""
    name = f"caas_bench_{uuid.uuid4().hex[:10]}"
    admin_url = make_url(normalise_url(server_url)).set(drivername="postgresql")
    connect_to = admin_url.render_as_string(hide_password=False)
    try:
        with psycopg.connect(connect_to, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        raise StartupError(f"cannot create a scratch database: {error}".strip()) from None
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(connect_to, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def percentile(values: list[float], share: float) -> float:
    """The `share` (0..1) percentile of `values`, nearest rank; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(share * len(ordered))))
    return ordered[rank - 1]
