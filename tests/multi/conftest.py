"""More than one of each: two `caas api` and two `caas worker` processes on one PostgreSQL
(a scratch database) and one Mosquitto, with simulated cars in a process of their own.

The processes are started as an operator starts them, from CAAS_* settings only; each
writes its JSON log to a file of its own, which is how a test tells which worker did what.
The cluster lives for the module: starting four processes costs seconds, and the tests of
the module read what they need from logs and the database relative to what was there before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.bench.harness import BenchCar, BenchPlatform, CarsProcess
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.net import free_port
from caas.core.settings import Settings
from caas.iot.broker import BrokerAddress
from caas.iot.local import LocalBroker
from caas.iot.service import find_credential
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial, ensure_demo_keys
from caas.ota.models import ConfigurationVersion
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET, PaymentSandbox, payment_sandbox
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.mqtt import mosquitto_broker
from tests.servers import wait_until
from tests.store.conftest import offer, owner_of
from tests.vehicles.support import Car, born_car, deliver

__all__ = ["mosquitto_broker", "payment_sandbox"]

CAAS = Path(sys.executable).with_name("caas")
START_SECONDS = 240.0  # a bound for four processes starting on a busy machine (cold imports)
WAIT_SECONDS = 60.0  # a bound for real concurrency between the processes, never a schedule
CARS = 12  # cars without an owner (telemetry, fleet-wide changes), plus one customer's car


@dataclass
class Process:
    """A `caas` process and the file its JSON log goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> list[dict[str, Any]]:
        """Every JSON line of its log so far (other lines, e.g. a traceback, are skipped)."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        """Its log lines of event `name` whose fields include `match`."""
        return [
            entry
            for entry in self.log()
            if entry.get("event") == name and all(entry.get(k) == v for k, v in match.items())
        ]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """`kill -9`: no cleanup, no goodbye to the broker or the database."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """Ask it to stop, as SIGTERM from an operator or an orchestrator does."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 15 s) and wait for it."""
        self.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]


@dataclass
class Cluster:
    """Two API processes, two workers, their database and broker, and the cars."""

    database_url: str
    sessions: sessionmaker[Session]
    broker: LocalBroker
    smtp: SmtpInbox
    payments: PaymentSandbox
    apis: list[Process]
    api_urls: list[str]
    workers: list[Process]
    platform: BenchPlatform
    cars: list[BenchCar]
    cars_process: CarsProcess
    buyer: Car
    buyer_offer_id: int

    @property
    def vehicle_ids(self) -> list[int]:
        return [car.vehicle_id for car in self.cars] + [self.buyer.vehicle_id]

    def run(self, work: Callable[[Session], Any]) -> Any:
        with unit_of_work(self.sessions) as session:
            return work(session)

    def newest_versions_applied(self) -> bool:
        """Every car's newest configuration is the one it runs."""
        ids = self.vehicle_ids

        def check(session: Session) -> bool:
            newest = (
                select(
                    ConfigurationVersion.vehicle_id,
                    func.max(ConfigurationVersion.version).label("version"),
                )
                .where(ConfigurationVersion.vehicle_id.in_(ids))
                .group_by(ConfigurationVersion.vehicle_id)
                .subquery()
            )
            states = session.scalars(
                select(ConfigurationVersion.state).join(
                    newest,
                    (ConfigurationVersion.vehicle_id == newest.c.vehicle_id)
                    & (ConfigurationVersion.version == newest.c.version),
                )
            ).all()
            return len(states) == len(ids) and all(state == "applied" for state in states)

        return bool(self.run(check))


def stop_all(processes: list[Process]) -> None:
    """Stop every process, all at once: each winds down while the others do."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


def environment(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without its CAAS_* variables, plus `settings`.

    Where bytecode may not be written beside the sources (PYTHONDONTWRITEBYTECODE), the
    processes keep it in a cache of their own under the temporary directory instead: compiling
    every module again in each of the five processes is most of their start-up.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("CAAS_")}
    if env.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in env:
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "caas-tests-pycache")
    env.update(settings)
    return env


def start_process(name: str, arguments: list[str], env: dict[str, str], logs: Path) -> Process:
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [str(CAAS), *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return Process(name, popen, log_path)


def wait_for(processes: list[Process], ready: Callable[[Process], bool], what: str) -> None:
    """Until `ready` holds for every process; an early exit fails with its log."""

    def all_ready() -> bool:
        for process in processes:
            if not process.alive():
                raise AssertionError(f"{process.name} exited early:\n{process.tail()}")
        return all(ready(process) for process in processes)

    try:
        wait_until(all_ready, timeout=START_SECONDS, interval=0.1)
    except AssertionError as error:
        tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in processes)
        raise AssertionError(f"{error} ({what})\n{tails}") from None


def api_ready(url: str) -> Callable[[Process], bool]:
    def ready(_: Process) -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def customer_car(settings: Settings, sessions: sessionmaker[Session]) -> Car:
    """A sold car with configuration version 1, whose broker password one of the workers
    delivers to the broker."""
    with unit_of_work(sessions) as session:
        car = born_car(session, settings=settings, now=datetime.now(UTC))

    def delivered() -> bool:
        with unit_of_work(sessions) as session:
            credential = find_credential(session, car.vin)
            return credential is not None and credential.pending_secret is None

    wait_until(delivered, timeout=WAIT_SECONDS, interval=0.1)
    return car


def hand_over(sessions: sessionmaker[Session], car: Car) -> int:
    """The car reaches its owner, who can log in (a new version with the plan's features);
    a one-day power boost offer for the owner to buy."""
    now = datetime.now(UTC)
    with unit_of_work(sessions) as session:
        deliver(session, car, now=now)
        owner = owner_of(session, car, now)
        return offer(session, owner.vehicle, "power_boost", "window", "1D", net_minor=999).id


@pytest.fixture(scope="module")
def cluster(
    scratch_databases: ScratchDatabases,
    mosquitto_broker: LocalBroker,
    smtp_server: SmtpInbox,
    payment_sandbox: PaymentSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Two `caas api` and two `caas worker` processes on one database and one broker, and
    `CARS` + 1 simulated cars online with their first configuration applied."""
    workdir = tmp_path_factory.mktemp("multi")
    database_url = scratch_databases.create()
    keys_dir = workdir / "keys"
    signing: SigningMaterial = ensure_demo_keys(keys_dir)
    broker = mosquitto_broker
    settings = {
        "CAAS_ENV": "test",
        "CAAS_DATABASE_URL": database_url,
        "CAAS_DATA_DIR": str(workdir),
        "CAAS_OTA_KEYS_DIR": str(keys_dir),
        "CAAS_MQTT_URL": broker.service_url,
        "CAAS_MQTT_ADMIN_USERNAME": broker.admin_username,
        "CAAS_MQTT_ADMIN_PASSWORD": broker.admin_password,
        "CAAS_SMTP_URL": f"smtp://127.0.0.1:{smtp_server.port}",
        "CAAS_PAYMENT_URL": payment_sandbox.url,
        "CAAS_PAYMENT_API_KEY": API_KEY,
        "CAAS_PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # Nothing here talks to the factory or the registry: nowhere to reach on purpose.
        "CAAS_FACTORY_URL": f"http://127.0.0.1:{free_port()}",
        "CAAS_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
        "CAAS_LOG_FORMAT": "json",
        # A car's answer in flight to a worker killed with kill -9 is lost with its session (the
        # broker does not hand it to the other member of the shared subscription): the
        # platform's re-send brings it again. Sooner than the default 30 s, so the tests wait
        # for it within their bound.
        "CAAS_OTA_RESEND_SECONDS": "5",
        # Debug: each worker's bridge says which telemetry batches it stored (`mqtt.batch_stored`).
        "CAAS_LOG_LEVEL": "DEBUG",
    }
    env = environment(settings)
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        ota.use_signing_material(signing)  # this process signs the versions it requests
        stack.callback(ota.use_signing_material, None)
        engine = make_engine(database_url, pool_size=4, max_overflow=4)
        stack.callback(engine.dispose)
        sessions = make_session_factory(engine)

        workers = [start_process(f"worker-{n}", ["worker"], env, workdir) for n in (1, 2)]
        apis = [
            start_process(f"api-{n}", ["api", "--port", str(port)], env, workdir)
            for n, port in enumerate(ports, start=1)
        ]
        stack.callback(stop_all, workers + apis)
        api_urls = [f"http://127.0.0.1:{port}" for port in ports]
        wait_for(workers, lambda p: bool(p.events("mqtt.bridge_connected")), "workers' bridges")
        for api, url in zip(apis, api_urls, strict=True):
            wait_for([api], api_ready(url), f"{api.name} ready")

        cluster_settings = Settings(
            env="test",
            database_url=database_url,
            mqtt_url=broker.service_url,
            mqtt_admin_username=broker.admin_username,
            mqtt_admin_password=broker.admin_password,
        )
        platform = BenchPlatform(
            settings=cluster_settings,
            engine=engine,
            sessions=sessions,
            broker=BrokerAddress.from_url(broker.service_url),
            broker_kind=broker.kind,
            signing=signing,
            _workdir=workdir,
        )
        stack.callback(platform.stop)
        cars = platform.add_cars(CARS)
        buyer = customer_car(cluster_settings, sessions)
        buyer_car = BenchCar(
            buyer.vehicle_id, buyer.vin, buyer.password, Ed25519PrivateKey.generate()
        )
        cars_process = platform.start_cars([*cars, buyer_car])
        offer_id = hand_over(sessions, buyer)
        cluster = Cluster(
            database_url=database_url,
            sessions=sessions,
            broker=broker,
            smtp=smtp_server,
            payments=payment_sandbox,
            apis=apis,
            api_urls=api_urls,
            workers=workers,
            platform=platform,
            cars=cars,
            cars_process=cars_process,
            buyer=buyer,
            buyer_offer_id=offer_id,
        )
        wait_until(cluster.newest_versions_applied, timeout=WAIT_SECONDS, interval=0.1)
        yield cluster
