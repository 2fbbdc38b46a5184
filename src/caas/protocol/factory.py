"""The Factory Order API, version 1: how the platform orders a car and hears how it is built.

Two directions, both JSON over HTTPS:

* **Platform -> factory.** `POST /v1/orders` with a `FactoryOrderCreate`, the platform's API key
  in `X-Api-Key` and the order id in `Idempotency-Key`. The order id (the sale number) *is*
  the idempotency key: the factory answers `201` with a `FactoryOrderAck` the first time and
  `200` with the same acknowledgement for every repeat, so a retried order is never built
  twice. `GET /v1/orders/{order_id}` reads an order back (`FactoryOrderRead`). Errors are
  `FactoryError` bodies: `401` bad key, `404` unknown order, `409` the order id was already used
  for a different order, `422` malformed order, `503` the factory is down (retry later).
* **Factory -> platform.** Each manufacturing stage is a `StageEvent` POSTed to the platform's
  events endpoint (`EVENTS_PATH`), signed with `caas.protocol.webhooks` (header
  `X-Caas-Signature`, HMAC-SHA256 with the secret shared with the factory). Events carry a
  unique `event_id` (retries resend the same id) and a `sequence` that strictly increases per
  order; the platform applies each event once and ignores one older than the last it applied.
  The factory retries until the platform answers 2xx. A stage may be skipped: later stages
  are still applied.

The car is produced at the `assembly` stage (`PRODUCTION_STAGE`): from that event on every
event carries the car's VIN (ISO 3779, valid check digit) and the Ed25519 public key of the
key pair generated inside the car (raw 32 bytes, base64). The private key never leaves the car.

* **Platform -> factory, end of line.** Once the car is born, the platform gives the factory the
  car's provisioning bundle to flash into it: `PUT /v1/cars/{vin}/provisioning`
  (`provisioning_path`) with a `CarProvisioning` (its broker account and password, the
  broker's address and the maker's root public key to pin), API key as above. Idempotent: the
  same bundle again answers `200` as the first time; a newer one (a rotated password) replaces
  it. `404` when the factory built no car with this VIN, `422` for a malformed bundle or a VIN
  that does not match the path. The factory flashes it and keeps no copy the platform needs:
  the platform wipes its own copy of the password once the factory answered 2xx.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal, get_args
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from caas.protocol import vin as vin_rules

API_VERSION = "v1"
ORDERS_PATH = f"/{API_VERSION}/orders"
API_KEY_HEADER = "X-Api-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Where the platform receives stage events (relative to its public URL).
EVENTS_PATH = "/api/v1/factory/events"

Stage = Literal[
    "accepted",
    "scheduled",
    "body",
    "paint",
    "assembly",
    "quality_check",
    "shipped",
    "at_dealer",
]
# The stages in the order a car goes through them.
STAGES: tuple[Stage, ...] = get_args(Stage)
PRODUCTION_STAGE: Stage = "assembly"
# What the factory says about an order: received (no stage yet) or its last stage.
OrderStatus = Literal["received", Stage]

PUBLIC_KEY_BYTES = 32
PROVISIONING_PATH = f"/{API_VERSION}/cars/{{vin}}/provisioning"


def provisioning_path(vin: str) -> str:
    """Where the platform PUTs a car's provisioning bundle."""
    return PROVISIONING_PATH.format(vin=vin)


_ORDER_ID = Field(
    min_length=1,
    max_length=30,
    pattern=r"^[A-Za-z0-9._-]+$",
    description="The platform's order id (the sale number); also the idempotency key",
    examples=["S2026-000042"],
)


def stage_index(stage: str) -> int:
    """Position of `stage` in `STAGES` (ValueError for an unknown stage)."""
    return STAGES.index(stage)


def has_car(stage: str) -> bool:
    """Whether events of `stage` carry the built car's identity (production and later)."""
    return stage_index(stage) >= stage_index(PRODUCTION_STAGE)


def decode_public_key(value: str) -> bytes:
    """The raw Ed25519 public key from its base64 text; ValueError when it is not one."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    return raw


class Destination(BaseModel):
    """The dealership the finished car is shipped to."""

    dealership_code: str = Field(max_length=20, examples=["MAD01"])
    name: str = Field(max_length=200, examples=["caas Madrid Castellana"])
    address: str = Field(max_length=300, examples=["Paseo de la Castellana 100, 28046 Madrid"])
    city: str = Field(max_length=120, examples=["Madrid"])
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1", examples=["ES"])


class Callback(BaseModel):
    """Where the platform wants this order's stage events."""

    url: str = Field(
        max_length=500,
        pattern=r"^https?://",
        description="The platform's events endpoint; events are signed with the shared secret",
        examples=["https://caas.example/api/v1/factory/events"],
    )


class FactoryOrderCreate(BaseModel):
    """An order for one car, placed when the customer's deposit is captured."""

    order_id: str = _ORDER_ID
    platform: str = Field(
        max_length=20, description="Code of the platform model to build", examples=["AURA"]
    )
    hardware_features: list[str] = Field(
        default_factory=list,
        max_length=40,
        description="Codes of the options whose hardware must be fitted on the line",
        examples=[["driver_assist"]],
    )
    software_version: str = Field(
        max_length=20, description="Software to flash at the end of the line", examples=["7.2.0"]
    )
    destination: Destination
    callback: Callback


class FactoryOrderAck(BaseModel):
    """The factory has the order (first time: `201`; every repeat: `200`, same body)."""

    order_id: str = _ORDER_ID
    factory_reference: str = Field(
        max_length=60, description="The factory's own id of the order", examples=["FO-8F3A2C91"]
    )
    status: OrderStatus = Field(description="`received`, or the last stage reached")


class FactoryOrderRead(FactoryOrderAck):
    """An order as the factory sees it now."""

    last_sequence: int = Field(ge=0, description="Sequence of the last stage event sent")
    vin: str | None = Field(default=None, description="Set once the car is built")
    received_at: datetime


class FactoryError(BaseModel):
    """Every error answer of the Factory Order API."""

    code: str = Field(examples=["factory.unavailable"])
    message: str


class StageEvent(BaseModel):
    """One manufacturing stage of one order, as the factory reports it (signed webhook)."""

    event_id: UUID = Field(
        description="Unique per event; a retried delivery keeps it",
        examples=["0f6a2b1c-3d4e-4f50-8a9b-7c6d5e4f3a21"],
    )
    order_id: str = _ORDER_ID
    factory_reference: str = Field(
        max_length=60,
        description="The factory's own id of the order, as in its acknowledgement",
        examples=["FO-8F3A2C91"],
    )
    sequence: int = Field(
        ge=1,
        le=1_000_000,
        description="Strictly increasing per order; an event older than the last applied is "
        "ignored",
        examples=[5],
    )
    stage: Stage = Field(description="The stage the order has reached", examples=["paint"])
    occurred_at: AwareDatetime = Field(
        description="When the stage happened at the factory, with its UTC offset",
        examples=["2026-01-20T14:05:00Z"],
    )
    vin: str | None = Field(
        default=None,
        description=f"From `{PRODUCTION_STAGE}` on: the car's VIN (ISO 3779, check digit in "
        "position 9)",
        examples=["VCAAURA02TM000001"],
    )
    public_key: str | None = Field(
        default=None,
        description=f"From `{PRODUCTION_STAGE}` on: the car's Ed25519 public key, raw "
        f"{PUBLIC_KEY_BYTES} bytes in base64",
        examples=["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    )

    @field_validator("vin")
    @classmethod
    def _vin(cls, value: str | None) -> str | None:
        return None if value is None else vin_rules.validate(value)

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is not None:
            decode_public_key(value)
        return value

    @model_validator(mode="after")
    def _car_from_production_on(self) -> StageEvent:
        carries = self.vin is not None, self.public_key is not None
        if has_car(self.stage) and carries != (True, True):
            raise ValueError(f"a {self.stage} event carries the car's vin and public_key")
        if not has_car(self.stage) and any(carries):
            raise ValueError(f"the car is built at {PRODUCTION_STAGE}: no vin before it")
        return self


class CarProvisioning(BaseModel):
    """What the factory flashes into a car at the end of the line: its account on the maker's
    IoT network and the key it trusts. The password exists in clear only here, on its way."""

    model_config = ConfigDict(extra="forbid")

    vin: str = Field(
        description="The car's VIN (ISO 3779, check digit in position 9)",
        examples=["VCAAURA02TM000001"],
    )
    mqtt_username: str = Field(
        min_length=1,
        max_length=64,
        description="The car's broker account (and client id): its VIN",
        examples=["VCAAURA02TM000001"],
    )
    mqtt_password: str = Field(
        min_length=16,
        max_length=200,
        repr=False,
        description="The car's broker password, made at its birth; the platform keeps only a hash",
    )
    broker_url: str = Field(
        max_length=300,
        pattern=r"^mqtts?://[^/@\s]+$",
        description="Where the car connects: `mqtt://host:port` (or `mqtts://`), no credentials",
        examples=["mqtt://iot.caas.example:1883"],
    )
    root_public_key: str = Field(
        description=f"The maker's root Ed25519 public key to pin (raw {PUBLIC_KEY_BYTES} bytes, "
        "base64): every manifest must be certified by it",
        examples=["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    )

    @field_validator("vin")
    @classmethod
    def _vin(cls, value: str) -> str:
        return vin_rules.validate(value)

    @field_validator("root_public_key")
    @classmethod
    def _root_key(cls, value: str) -> str:
        decode_public_key(value)
        return value

    @model_validator(mode="after")
    def _account_is_the_vin(self) -> CarProvisioning:
        if self.mqtt_username != self.vin:
            raise ValueError("mqtt_username must be the car's VIN")
        return self


class CarProvisioned(BaseModel):
    """The factory's answer to a provisioning bundle: flashed into the car."""

    vin: str = Field(description="The car's VIN", examples=["VCAAURA02TM000001"])
    flashed: bool = Field(description="Always true: the car carries this bundle now")
