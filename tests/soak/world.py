"""The world the soak runs in: every real part on its own port, one clock for all of them.

- PostgreSQL: a scratch database of this run (schema by Alembic, demo data), with one engine for
  the API and another for the worker, as two processes would have.
- Mosquitto, started here, with the platform's service account and one account per car.
- The platform's API (uvicorn in a thread), its worker (`caas.worker.build_worker`: the relay
  woken by NOTIFY, the express publishing threads and the MQTT bridge) and the payment sandbox
  over HTTP, whose events reach the platform's webhook.
- `clock`, a `FixedClock` shared by the API, the worker and the cars: the soak moves it forward
  so that windows end and subscriptions renew within minutes.
- The cars: `caas_sim.vehicle.agent.VehicleAgent`s, real MQTT clients with their own broker
  passwords, on one asyncio loop in a thread of their own (`CarLoop`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.net import free_port
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.models import BrokerCredential
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial, ensure_demo_keys
from caas.seed import DEMO_PASSWORD
from caas.worker import Worker, build_worker
from caas_sim.payments import Sandbox
from caas_sim.payments import create_app as payments_app
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.mqtt import V5
from tests.servers import ServerThread
from tests.vehicles.support import Car, born_car, deliver, wait_until

T = TypeVar("T")

PAYMENT_API_KEY = "soak-payment-api-key"
PAYMENT_WEBHOOK_SECRET = "soak-payment-webhook-secret"
# Every car runs this software (the store's options need no newer one).
SOFTWARE = "7.2.0"
# How long a purchase of a week's window, a subscription or a trial waits for the car.
LONG_DEADLINE = timedelta(days=3)


class CarLoop:
    """An asyncio loop in a thread of its own, where every simulated car lives.

    The agents are not thread-safe: everything that touches one (`lose_network`, `tick`...)
    runs on this loop, through `call` or `run`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="soak-cars", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run `coroutine` on the cars' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, work: Callable[[], T], timeout: float = 30.0) -> T:
        """Run `work` on the cars' loop and wait for its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(work())
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                done.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass(frozen=True)
class Customer:
    """One car's owner as the soak drives them: their login and their car."""

    email: str
    car: Car


@dataclass
class World:
    settings: Settings
    clock: FixedClock
    api_sessions: sessionmaker[Session]
    worker_sessions: sessionmaker[Session]
    platform_url: str
    payments_url: str
    sandbox: Sandbox
    broker: LocalBroker
    signing: SigningMaterial
    worker: Worker
    cars: CarLoop
    customers: list[Customer] = field(default_factory=list)
    agents: dict[str, VehicleAgent] = field(default_factory=dict)

    def read(self, work: Callable[[Session], T]) -> T:
        """`work` in a transaction of its own (the soak's checks read committed data)."""
        with unit_of_work(self.worker_sessions) as session:
            return work(session)


@contextmanager
def running_world(
    scratch_databases: ScratchDatabases,
    smtp: SmtpInbox,
    broker: LocalBroker,
    keys_dir: Path,
    *,
    start: datetime,
) -> Iterator[World]:
    """Start every part (and stop it after): database, payment sandbox, API, worker, car loop.
    No cars yet: `add_customers` makes them."""
    url = scratch_databases.create()
    # Two pools, as the API and the worker are two processes in production.
    api_engine = make_engine(url)
    worker_engine = make_engine(url)
    clock = FixedClock(start)
    ports = {name: free_port() for name in ("platform", "payments")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    settings = Settings(
        env="test",
        database_url=url,
        public_url=urls["platform"],
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        payment_url=urls["payments"],
        payment_public_url=urls["payments"],
        payment_api_key=PAYMENT_API_KEY,
        payment_webhook_secret=PAYMENT_WEBHOOK_SECRET,
        mqtt_url=broker.service_url,
        mqtt_admin_username=broker.admin_username,
        mqtt_admin_password=broker.admin_password,
        ota_keys_dir=keys_dir,
        worker_threads=4,
    )
    _longer_deadlines(url)
    signing = ensure_demo_keys(keys_dir)
    ota.use_signing_material(signing)
    api_sessions = make_session_factory(api_engine)
    worker_sessions = make_session_factory(worker_engine)
    payments = payments_app(
        api_key=PAYMENT_API_KEY,
        webhook_url=f"{urls['platform']}/api/v1/webhooks/payments",
        webhook_secret=PAYMENT_WEBHOOK_SECRET,
    )
    servers = [
        ServerThread(
            create_app(settings=settings, sessions=api_sessions, clock=clock), ports["platform"]
        ),
        ServerThread(payments, ports["payments"]),
    ]
    for server in servers:
        server.start()
    worker = build_worker(settings, worker_sessions, clock)
    worker.start()
    cars = CarLoop()
    cars.start()
    world = World(
        settings=settings,
        clock=clock,
        api_sessions=api_sessions,
        worker_sessions=worker_sessions,
        platform_url=urls["platform"],
        payments_url=urls["payments"],
        sandbox=payments.state.sandbox,
        broker=broker,
        signing=signing,
        worker=worker,
        cars=cars,
    )
    try:
        assert worker.bridge is not None and worker.bridge.connected.wait(10)
        yield world
    finally:
        try:
            cars.run(_stop_agents(list(world.agents.values())))
        finally:
            cars.stop()
            worker.stop()
            for server in servers:
                server.stop()
            ota.use_signing_material(None)
            api_engine.dispose()
            worker_engine.dispose()


def _longer_deadlines(url: str) -> None:
    """Week windows, monthly subscriptions and trials wait `LONG_DEADLINE` for the car to apply
    them (an operator's setting per offer): the soak's clock jumps a day at a time, and with the
    seeded ten minutes every purchase still on its way at a jump would be refunded. Day windows
    keep the seeded deadline, so that race is run too."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE offers SET apply_deadline_seconds = :seconds "
                    "WHERE duration IN ('7D', '1M')"
                ),
                {"seconds": int(LONG_DEADLINE.total_seconds())},
            )
    finally:
        engine.dispose()


async def _stop_agents(agents: list[VehicleAgent]) -> None:
    await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)


def add_customers(world: World, count: int) -> None:
    """`count` customers, each with a car born at the factory and delivered (the plan's
    options on), able to log in; their cars connected to the broker and running the delivered
    configuration."""
    now = world.clock.now()
    for _ in range(count):
        car = world.read(lambda session: born_car(session, settings=world.settings, now=now))

        def delivered(session: Session, car: Car = car) -> str:
            deliver(session, car, now=now)
            user = session.get_one(User, car.customer_user_id)
            user.password_hash = hash_password(DEMO_PASSWORD)
            user.activated_at = now
            return user.email

        world.customers.append(Customer(email=world.read(delivered), car=car))
    vins = [customer.car.vin for customer in world.customers]

    def provisioned(session: Session) -> bool:
        # The worker created each car's broker account and then forgot its password.
        waiting = session.scalars(
            select(BrokerCredential.vin).where(
                BrokerCredential.vin.in_(vins), BrokerCredential.pending_secret.is_not(None)
            )
        ).all()
        found = session.scalars(
            select(BrokerCredential.vin).where(BrokerCredential.vin.in_(vins))
        ).all()
        return not waiting and len(found) == len(vins)

    wait_until(lambda: world.read(provisioned), timeout=60, what="the cars' broker accounts")
    root = world.signing.root_public_key
    endpoint = BrokerEndpoint(world.broker.host, world.broker.port, V5)

    async def connect() -> None:
        agents = [
            VehicleAgent(
                CarIdentity(
                    vin=customer.car.vin,
                    password=customer.car.password,
                    private_key=Ed25519PrivateKey.generate(),
                    root_public_key=root,
                ),
                endpoint,
                software_version=SOFTWARE,
                now=world.clock.now,
            )
            for customer in world.customers
        ]
        for agent in agents:
            world.agents[agent.vin] = agent
            agent.start()
        await asyncio.gather(*(agent.wait_online(30) for agent in agents))

    world.cars.run(connect(), timeout=90)
