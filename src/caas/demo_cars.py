"""The demo's cars: every car the factory has built runs as a simulated vehicle agent on the
demo's broker, and its screen is served with the others'.

Two kinds of car, by how they got their broker password:

- **Born through the factory** (an order placed while the demo runs): at birth the platform
  hands the factory the car's provisioning bundle (`caas.factory.jobs.send_provisioning`) and
  keeps only the password's hash; the car starts as the factory flashed it
  (`caas_sim.vehicle.fleet.car_from_factory`): its own key pair, the bundle's password, broker
  and pinned root key. It joins once the factory has the bundle.
- **Older cars** (the demo's seed data, recorded without a factory, or before bundles existed):
  nobody holds their password, so the demo plays the end of line for them: a fresh broker
  password (`caas.iot.service.rotate_car_password`; the worker gives it to the broker), a new
  key pair and the root public key pinned.

Then each car connects and lives: its clock ticks (features switch on and off on time) and it
sends telemetry. Cars born while the demo runs join within `poll_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiomqtt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import FastAPI
from sqlalchemy import select

from caas.catalog.models import Platform
from caas.core.db import unit_of_work
from caas.iot.local import LocalBroker
from caas.iot.service import find_credential, provision_car, rotate_car_password
from caas.runtime import Runtime
from caas.vehicles.models import Vehicle
from caas.vehicles.twin import fitted_hardware
from caas_sim.vehicle import screen
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from caas_sim.vehicle.fleet import Fleet, car_from_factory

log = structlog.get_logger(__name__)

POLL_SECONDS = 2.0
TICK_SECONDS = 1.0
TELEMETRY_SECONDS = 10.0
INSTALL_SECONDS = 3.0


class GrowingFleet(Fleet):
    """A fleet that cars join while it runs."""

    def add(self, agent: VehicleAgent) -> None:
        self._agents[agent.vin] = agent
        agent.start()


@dataclass(frozen=True)
class _NewCar:
    vin: str
    model: str
    hardware: tuple[str, ...]
    software_version: str
    password: str | None  # a password the demo issued; None: flashed at the factory


class DemoCars:
    """The simulated cars of the demo and their screens (`create_app`)."""

    def __init__(
        self,
        runtime: Runtime,
        broker: LocalBroker,
        root_public_key: Ed25519PublicKey,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.root_public_key = root_public_key
        self.poll_seconds = poll_seconds
        protocol = (
            aiomqtt.ProtocolVersion.V311
            if broker.kind == "embedded"
            else aiomqtt.ProtocolVersion.V5
        )
        self.endpoint = BrokerEndpoint(broker.host, broker.port, protocol)
        self.fleet = GrowingFleet([])

    def create_app(self) -> FastAPI:
        """The cars' screens and key endpoints; the cars live as long as the app serves."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            living = asyncio.create_task(self.run(), name="demo-cars")
            try:
                yield
            finally:
                living.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await living
                await self.fleet.stop()

        app = FastAPI(
            title="caas demo cars",
            description="The simulated cars of the demo: their screens and local key endpoints",
            lifespan=lifespan,
        )
        app.mount("/", screen.create_app(self.fleet))
        return app

    async def run(self) -> None:
        """Until cancelled: new cars join, clocks tick, telemetry flows."""
        loop = asyncio.get_running_loop()
        next_poll = next_telemetry = loop.time()
        while True:
            now = loop.time()
            if now >= next_poll:
                next_poll = now + self.poll_seconds
                try:
                    for agent in await asyncio.to_thread(self._new_cars):
                        self.fleet.add(agent)
                        log.info("demo.car_joined", vin=agent.vin, model=agent.model)
                except Exception:  # the database may be busy or gone: try at the next poll
                    log.exception("demo.cars_poll_failed")
            self.fleet.tick()
            if now >= next_telemetry:
                next_telemetry = now + TELEMETRY_SECONDS
                await asyncio.gather(*(agent.send_telemetry() for agent in self.fleet))
            await asyncio.sleep(TICK_SECONDS)

    def _new_cars(self) -> list[VehicleAgent]:
        """Cars built since the last look, ready to start (the demo's passwords committed)."""
        clock, settings = self.runtime.clock, self.runtime.settings
        with unit_of_work(self.runtime.sessions) as session:
            rows = session.execute(
                select(Vehicle, Platform.code)
                .join(Platform, Platform.id == Vehicle.platform_id)
                .order_by(Vehicle.id)
            ).all()
            cars = []
            for vehicle, model in rows:
                if vehicle.vin in self.fleet:
                    continue
                credential = find_credential(session, vehicle.vin)
                if credential is not None and credential.bundle_secret is not None:
                    continue  # born at the factory: joins once the factory has its bundle
                password = None
                if credential is None or credential.bundle_delivered_at is None:
                    issue = rotate_car_password if credential is not None else provision_car
                    password = issue(session, vin=vehicle.vin, now=clock.now(), settings=settings)
                cars.append(
                    _NewCar(
                        vin=vehicle.vin,
                        model=model,
                        hardware=tuple(sorted(fitted_hardware(session, vehicle))),
                        software_version=vehicle.software_version,
                        password=password,
                    )
                )
        agents = []
        for car in cars:
            agent = self._agent(car)
            if agent is not None:
                agents.append(agent)
        return agents

    def _agent(self, car: _NewCar) -> VehicleAgent | None:
        if car.password is None:
            flashed = car_from_factory(self.runtime.settings.factory_url, car.vin)
            if flashed is None:
                log.warning("demo.car_not_flashed", vin=car.vin)
                return None
            identity = flashed.identity
            # A real broker keeps its address; the demo's listens on a new port at every start,
            # so a car flashed in an earlier run is pointed at today's (same accounts, kept in
            # the demo's data directory).
            endpoint = self.endpoint
            if (flashed.broker.host, flashed.broker.port) != (endpoint.host, endpoint.port):
                log.info("demo.car_broker_moved", vin=car.vin, flashed=flashed.broker.port)
        else:
            identity = CarIdentity(
                vin=car.vin,
                password=car.password,
                private_key=Ed25519PrivateKey.generate(),
                root_public_key=self.root_public_key,
            )
            endpoint = self.endpoint
        return VehicleAgent(
            identity,
            endpoint,
            hardware=car.hardware,
            software_version=car.software_version,
            model=car.model,
            # Software downloads come from the demo's platform; an install takes a few
            # seconds, so a rollout's progress can be followed on its page.
            platform_url=self.runtime.settings.public_url,
            install_seconds=INSTALL_SECONDS,
        )
