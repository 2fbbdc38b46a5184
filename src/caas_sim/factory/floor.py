"""The simulated factory's state: the orders it holds, the cars it builds, the events it owes.

Everything here is plain data (Pydantic models) so the whole floor can be written to a JSON
file and read back when the simulator restarts.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pydantic import BaseModel, Field

from caas.protocol import vin as vin_rules
from caas.protocol.factory import (
    PRODUCTION_STAGE,
    STAGES,
    CarProvisioning,
    FactoryOrderAck,
    FactoryOrderCreate,
    FactoryOrderRead,
    OrderStatus,
    StageEvent,
    has_car,
)

# The simulated maker's world manufacturer identifier and its one plant.
WMI = "VCA"
PLANT = "M"


class OrderConflict(Exception):
    """The order id is already used for a different order."""


class NoMoreStages(Exception):
    """The order has reached the last stage."""


class BuiltCar(BaseModel):
    """A car as it leaves the line; the private key is the one pinned inside the car."""

    vin: str
    public_key: str = Field(description="Ed25519, raw 32 bytes, base64")
    private_key: str = Field(description="Ed25519, raw 32 bytes, base64 (simulator only)")
    provisioning: CarProvisioning | None = Field(
        default=None,
        description="The bundle the platform sent for the car, flashed into it at the end of "
        "the line (None until the platform sends it)",
    )


class FlashedCar(BaseModel):
    """Simulator only: everything the factory put into a car, for the vehicle simulator to
    start it as built (its key pair, and the platform's provisioning bundle once sent)."""

    vin: str
    public_key: str = Field(description="Ed25519, raw 32 bytes, base64")
    private_key: str = Field(description="Ed25519, raw 32 bytes, base64: lives in the car")
    provisioning: CarProvisioning | None = Field(
        description="Broker account, password, broker address and pinned root key; null until "
        "the platform sent the car's bundle"
    )


class OwedEvent(BaseModel):
    """A stage event and how its delivery to the platform went."""

    event: StageEvent
    delivered: bool = False
    attempts: int = 0
    next_attempt_at: datetime
    last_status: int | None = Field(default=None, description="The platform's last answer")
    last_error: str | None = None


class SimOrder(BaseModel):
    order: FactoryOrderCreate
    factory_reference: str
    received_at: datetime
    next_stage_at: datetime | None = None
    stage_seconds: float | None = Field(
        default=None,
        description="This order's own pace (a stage every so many seconds, auto-advanced even "
        "when the factory is not); None: the factory's",
    )
    car: BuiltCar | None = None
    events: list[OwedEvent] = Field(default_factory=list)

    @property
    def status(self) -> OrderStatus:
        return self.events[-1].event.stage if self.events else "received"

    def ack(self) -> FactoryOrderAck:
        return FactoryOrderAck(
            order_id=self.order.order_id,
            factory_reference=self.factory_reference,
            status=self.status,
        )

    def read(self) -> FactoryOrderRead:
        return FactoryOrderRead(
            order_id=self.order.order_id,
            factory_reference=self.factory_reference,
            status=self.status,
            last_sequence=len(self.events),
            vin=self.car.vin if self.car else None,
            received_at=self.received_at,
        )

    def undelivered(self) -> list[OwedEvent]:
        return [owed for owed in self.events if not owed.delivered]


class FloorState(BaseModel):
    # Serial numbers start at a random point so two fresh simulators rarely repeat a VIN.
    last_serial: int = Field(default_factory=lambda: 100_000 + secrets.randbelow(800_000))
    orders: dict[str, SimOrder] = Field(default_factory=dict)


def vds_for(platform: str) -> str:
    """Positions 4-8 of the VIN from the model code (I, O, Q are not allowed in a VIN)."""
    cleaned = "".join(char for char in platform.upper() if char.isalnum())
    cleaned = cleaned.translate(str.maketrans("IOQ", "109"))
    return (cleaned + "00000")[:5]


def _same_order(first: FactoryOrderCreate, second: FactoryOrderCreate) -> bool:
    # The callback may move (a new platform address); what is built may not.
    return first.model_dump(exclude={"callback"}) == second.model_dump(exclude={"callback"})


class FactoryFloor:
    """The orders and the cars, kept in memory and (optionally) in a JSON file."""

    def __init__(self, *, state_file: Path | None, stage_seconds: float) -> None:
        self.state_file = state_file
        self.stage_seconds = stage_seconds
        if state_file is not None and state_file.exists():
            self.state = FloorState.model_validate_json(state_file.read_bytes())
        else:
            self.state = FloorState()

    def save(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        draft = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        draft.write_text(self.state.model_dump_json(indent=1))
        draft.replace(self.state_file)

    def get(self, order_id: str) -> SimOrder | None:
        return self.state.orders.get(order_id)

    def orders(self) -> list[SimOrder]:
        return sorted(self.state.orders.values(), key=lambda order: order.received_at)

    def place(
        self, order: FactoryOrderCreate, *, now: datetime, auto_advance: bool
    ) -> tuple[SimOrder, bool]:
        """The order under this id (created when new); `True` when it was just created."""
        existing = self.state.orders.get(order.order_id)
        if existing is not None:
            if not _same_order(existing.order, order):
                raise OrderConflict(order.order_id)
            return existing, False
        placed = SimOrder(
            order=order,
            factory_reference=f"FO-{uuid.uuid4().hex[:8].upper()}",
            received_at=now,
            next_stage_at=now + timedelta(seconds=self.stage_seconds) if auto_advance else None,
        )
        self.state.orders[order.order_id] = placed
        self.save()
        return placed, True

    def due(self, now: datetime) -> list[SimOrder]:
        """Orders whose next stage is due by the auto-advance schedule."""
        return [
            order
            for order in self.orders()
            if order.next_stage_at is not None and order.next_stage_at <= now
        ]

    def advance(self, order_id: str, *, now: datetime, auto_advance: bool) -> OwedEvent:
        """Move the order to its next stage and owe the platform the event."""
        order = self.state.orders[order_id]
        sequence = len(order.events) + 1
        if sequence > len(STAGES):
            order.next_stage_at = None
            raise NoMoreStages(order_id)
        stage = STAGES[sequence - 1]
        if stage == PRODUCTION_STAGE and order.car is None:
            order.car = self._build_car(order.order, now)
        car = order.car if has_car(stage) else None
        event = StageEvent(
            event_id=uuid.uuid4(),
            order_id=order_id,
            factory_reference=order.factory_reference,
            sequence=sequence,
            stage=stage,
            occurred_at=now,
            vin=car.vin if car else None,
            public_key=car.public_key if car else None,
        )
        owed = OwedEvent(event=event, next_attempt_at=now)
        order.events.append(owed)
        finished = sequence == len(STAGES)
        paced = auto_advance or order.stage_seconds is not None
        pace = order.stage_seconds or self.stage_seconds
        order.next_stage_at = None if finished or not paced else now + timedelta(seconds=pace)
        self.save()
        return owed

    def pace(self, order_id: str, stage_seconds: float, *, now: datetime) -> SimOrder:
        """From now on the order moves one stage every `stage_seconds` (its next stage no later
        than that from now), whatever the factory's own pace or auto-advance."""
        order = self.state.orders[order_id]
        order.stage_seconds = stage_seconds
        if len(order.events) < len(STAGES):
            soonest = now + timedelta(seconds=stage_seconds)
            if order.next_stage_at is None or order.next_stage_at > soonest:
                order.next_stage_at = soonest
        self.save()
        return order

    def flash(self, bundle: CarProvisioning) -> bool:
        """Flash the platform's bundle into the car it names; False when no such car was built
        here. The same bundle again changes nothing; a newer one replaces it."""
        car = self.car(bundle.vin)
        if car is None:
            return False
        if car.provisioning != bundle:
            car.provisioning = bundle
            self.save()
        return True

    def car(self, vin: str) -> BuiltCar | None:
        for order in self.state.orders.values():
            if order.car is not None and order.car.vin == vin:
                return order.car
        return None

    def _build_car(self, order: FactoryOrderCreate, now: datetime) -> BuiltCar:
        self.state.last_serial = self.state.last_serial % 999_999 + 1
        vin = vin_rules.make_vin(
            WMI,
            vds_for(order.platform),
            vin_rules.model_year_code(now.year),
            PLANT,
            self.state.last_serial,
        )
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return BuiltCar(
            vin=vin,
            public_key=base64.b64encode(public).decode(),
            private_key=base64.b64encode(private).decode(),
        )


def utc_now() -> datetime:
    return datetime.now(UTC)
