"""Many simulated cars in one asyncio loop, loaded from a fleet file, connected in batches.

The fleet file is JSON, written by whoever provisions the cars (the factory's part of the
platform): each car's VIN, broker password, its own Ed25519 private key (PEM) and the maker's
root public key pinned at production (base64 of the raw 32 bytes, as in `root.pub`):

    {"cars": [{"vin": "VCAAURA02TM000001", "password": "...",
               "private_key_pem": "-----BEGIN PRIVATE KEY-----\\n...",
               "root_public_key": "base64...", "model": "AURA",
               "hardware": ["heated_seats"], "software_version": "7.2.0", "odometer_km": 12}]}
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from caas.protocol.manifest import load_public_key_b64, private_key_from_pem
from caas.protocol.mqtt import SoftwareVersion, Vin
from caas_sim.factory.floor import FlashedCar as FlashedCarRead
from caas_sim.vehicle.agent import (
    BrokerEndpoint,
    CarIdentity,
    Clock,
    VehicleAgent,
    detect_protocol,
    system_clock,
)

log = structlog.get_logger(__name__)

BATCH_SIZE = 50
BATCH_TIMEOUT_SECONDS = 10.0
TICK_SECONDS = 1.0
TELEMETRY_SECONDS = 10.0


class FleetFileError(ValueError):
    """The fleet file cannot be read or is not a fleet file; the message says where."""


class ProvisionedCar(BaseModel):
    """One car as the factory built it: what the car knows about itself."""

    model_config = ConfigDict(extra="forbid")

    vin: Vin
    password: str = Field(min_length=1, description="The car's broker password")
    private_key_pem: str = Field(description="The car's own Ed25519 private key, PKCS #8 PEM")
    root_public_key: str = Field(description="The maker's root public key, base64 raw 32 bytes")
    model: str | None = None
    hardware: list[str] = Field(default_factory=list)
    software_version: SoftwareVersion = "1.0.0"
    odometer_km: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("private_key_pem")
    @classmethod
    def _an_ed25519_key(cls, value: str) -> str:
        private_key_from_pem(value.encode())
        return value

    @field_validator("root_public_key")
    @classmethod
    def _a_root_key(cls, value: str) -> str:
        load_public_key_b64(value)
        return value

    def identity(self) -> CarIdentity:
        return CarIdentity(
            vin=self.vin,
            password=self.password,
            private_key=private_key_from_pem(self.private_key_pem.encode()),
            root_public_key=load_public_key_b64(self.root_public_key),
        )


# The factory simulator's view of a car it built (`caas_sim.factory.app`, simulator only).
FLASHED_CAR_PATH = "/sim/cars/{vin}"


@dataclass(frozen=True)
class FlashedCar:
    """A car as the factory flashed it at the end of its line: ready to connect."""

    identity: CarIdentity
    broker: BrokerEndpoint


def car_from_factory(factory_url: str, vin: str, *, timeout: float = 5.0) -> FlashedCar | None:
    """The car `vin` as the factory simulator built and flashed it: its own key pair, and the
    platform's provisioning bundle (broker account and password, broker address, pinned root
    key). None while the factory has no bundle for it (or never built it); httpx.HTTPError
    when the factory cannot be asked."""
    response = httpx.get(
        factory_url.rstrip("/") + FLASHED_CAR_PATH.format(vin=vin), timeout=timeout
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    built = FlashedCarRead.model_validate_json(response.content)
    bundle = built.provisioning
    if bundle is None:
        return None
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(built.private_key))
    identity = CarIdentity(
        vin=bundle.vin,
        password=bundle.mqtt_password,
        private_key=private,
        root_public_key=load_public_key_b64(bundle.root_public_key),
    )
    return FlashedCar(identity, BrokerEndpoint.from_url(bundle.broker_url))


class FleetFile(BaseModel):
    """Every car the simulator runs."""

    model_config = ConfigDict(extra="forbid")

    cars: list[ProvisionedCar]

    @field_validator("cars")
    @classmethod
    def _one_entry_per_car(cls, value: list[ProvisionedCar]) -> list[ProvisionedCar]:
        vins = [car.vin for car in value]
        if len(set(vins)) != len(vins):
            raise ValueError("a VIN is listed twice")
        return value

    @classmethod
    def read(cls, path: Path) -> FleetFile:
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as error:
            raise FleetFileError(f"{path}: {error.strerror}") from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "file"
            raise FleetFileError(f"{path}: {where}: {first['msg']}") from None

    def write(self, path: Path) -> None:
        """Write the file readable by its owner only (it holds passwords and private keys)."""
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))


class Fleet:
    """Cars sharing one asyncio loop: `start` connects them in batches, `run` keeps their
    clocks ticking and their telemetry flowing, `stop` says goodbye for each."""

    def __init__(
        self,
        agents: Iterable[VehicleAgent],
        *,
        batch_size: int = BATCH_SIZE,
        batch_timeout: float = BATCH_TIMEOUT_SECONDS,
    ) -> None:
        self._agents = {agent.vin: agent for agent in agents}
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout

    @classmethod
    def from_file(
        cls,
        fleet_file: FleetFile | Path,
        broker: BrokerEndpoint,
        *,
        count: int | None = None,
        now: Clock = system_clock,
        batch_size: int = BATCH_SIZE,
        platform_url: str | None = None,
        install_failure_rate: float = 0.0,
    ) -> Fleet:
        """The first `count` cars of the file (all when None); they download software from
        `platform_url` and fail that share of their installs."""
        loaded = fleet_file if isinstance(fleet_file, FleetFile) else FleetFile.read(fleet_file)
        cars = loaded.cars if count is None else loaded.cars[:count]
        return cls(
            (
                VehicleAgent(
                    car.identity(),
                    broker,
                    hardware=car.hardware,
                    software_version=car.software_version,
                    odometer_km=car.odometer_km,
                    model=car.model,
                    now=now,
                    platform_url=platform_url,
                    install_failure_rate=install_failure_rate,
                )
                for car in cars
            ),
            batch_size=batch_size,
        )

    def __len__(self) -> int:
        return len(self._agents)

    def __iter__(self) -> Iterator[VehicleAgent]:
        return iter(self._agents.values())

    def __contains__(self, vin: object) -> bool:
        return vin in self._agents

    def agent(self, vin: str) -> VehicleAgent:
        """The car `vin` (KeyError when it is not in the fleet)."""
        return self._agents[vin]

    @property
    def online_count(self) -> int:
        return sum(agent.online for agent in self._agents.values())

    async def start(self) -> None:
        """Connect every car, `batch_size` at a time: a batch starts when the previous one is
        online (or after `batch_timeout`), so a thousand cars do not storm the broker."""
        agents = list(self._agents.values())
        if not agents:
            return
        await self._agree_on_protocol(agents)
        for first in range(0, len(agents), self.batch_size):
            batch = agents[first : first + self.batch_size]
            for agent in batch:
                agent.start()
            waiting = [
                asyncio.create_task(agent.wait_online(self.batch_timeout)) for agent in batch
            ]
            await asyncio.wait(waiting)
            late = sum(1 for task in waiting if task.exception() is not None)
            if late:
                log.warning("fleet.cars_not_online_yet", count=late, batch_start=first)
        log.info("fleet.started", cars=len(agents), online=self.online_count)

    async def _agree_on_protocol(self, agents: list[VehicleAgent]) -> None:
        """Ask the broker once which MQTT version it speaks, instead of once per car."""
        broker = agents[0].broker
        if broker.protocol is not None:
            return
        with contextlib.suppress(OSError):  # unreachable now: each car finds out on its own
            protocol = await detect_protocol(
                broker.host,
                broker.port,
                username=agents[0].vin,
                password=agents[0].identity.password,
                tls_context=broker.tls_context(),
            )
            for agent in agents:
                if agent.broker.protocol is None:
                    agent.broker = replace(agent.broker, protocol=protocol)

    async def stop(self) -> None:
        await asyncio.gather(*(agent.stop() for agent in self._agents.values()))

    def tick(self) -> None:
        for agent in self._agents.values():
            agent.tick()

    async def run(
        self, *, tick_seconds: float = TICK_SECONDS, telemetry_seconds: float = TELEMETRY_SECONDS
    ) -> None:
        """Until cancelled: every `tick_seconds` each car's clock acts (`VehicleAgent.tick`);
        each car sends telemetry every `telemetry_seconds`, spread over the interval."""
        rounds_per_sample = max(1, round(telemetry_seconds / tick_seconds))
        agents = list(self._agents.values())
        loop = asyncio.get_running_loop()
        started, round_number = loop.time(), 0
        while True:
            self.tick()
            turn = round_number % rounds_per_sample
            await asyncio.gather(
                *(
                    agent.send_telemetry()
                    for index, agent in enumerate(agents)
                    if index % rounds_per_sample == turn
                )
            )
            round_number += 1
            await asyncio.sleep(max(0.0, started + round_number * tick_seconds - loop.time()))
