"""Shapes of the digital twin API: one car as the platform knows it, and the fleet."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from caas.protocol.mqtt import FeatureState

ConfigurationStateText = Literal["pending", "applied", "rejected", "deferred", "superseded"]


class ModelRead(BaseModel):
    """The car's base platform."""

    code: str = Field(description="Platform code in the catalog", examples=["AURA"])
    name: str = Field(description="Model name", examples=["Aura"])


class OwnerRead(BaseModel):
    """Who owns the car."""

    customer_id: int = Field(description="Database id of the customer", examples=[12])
    name: str = Field(description="The owner's full name", examples=["Ana García"])


class ConnectionRead(BaseModel):
    """Whether the car is on the network, by its last status message."""

    online: bool = Field(description="Connected to the broker now (its last status said so)")
    status_at: datetime | None = Field(
        description="When the car said it, by the car's clock; null: it never has"
    )
    last_seen_at: datetime | None = Field(
        description="When the platform last heard from the car (any message), by its clock"
    )


class TelemetryRead(BaseModel):
    """The car's newest telemetry as kept (speed and position only with the owner's consent)."""

    at: datetime | None = Field(description="When the car measured it, by its clock")
    odometer_km: float | None = Field(description="Distance driven", examples=[12345.6])
    parked: bool | None = Field(description="Parked (configuration that affects driving waits)")
    battery_percent: float | None = Field(description="Battery charge", examples=[81.5])
    speed_kmh: float | None = Field(description="Speed; null without consent to driving style")
    latitude: float | None = Field(description="Position; null without consent to location")
    longitude: float | None = Field(description="Position; null without consent to location")


class PhoneKeyBrief(BaseModel):
    """A phone a configuration authorises as the car's key."""

    key_id: str = Field(description="The key's id in the manifest", examples=["pk-7"])
    label: str = Field(description="Whose phone", examples=["Lucía's phone"])


class ConfigurationRead(BaseModel):
    """One signed version of the car's configuration and what became of it."""

    version: int = Field(description="Strictly increasing per car", examples=[3])
    state: ConfigurationStateText = Field(
        description="`pending` (sent, no answer yet), `deferred` (the car has it and waits to "
        "be parked), `applied`, `rejected` (see `report_reason`) or `superseded` (a newer "
        "version replaced it before the car answered)"
    )
    reason: str = Field(description="Why it was issued", examples=["delivered"])
    created_at: datetime = Field(description="When it was signed")
    published_at: datetime | None = Field(
        description="When the broker first acknowledged it; null: not published yet"
    )
    last_published_at: datetime | None = Field(description="Its latest publication (re-sends)")
    publish_count: int = Field(description="How many times it was published", examples=[1])
    reported_at: datetime | None = Field(description="When the car's answer arrived")
    report_reason: str | None = Field(
        description="The car's reason: why it rejected it, or why it waits",
        examples=["bad_signature"],
    )


class DesiredRead(ConfigurationRead):
    """The newest configuration: what the car must run."""

    features: list[FeatureState] = Field(description="Every feature's state in the manifest")
    phone_keys: list[PhoneKeyBrief] = Field(description="The phones it authorises")


class ReportedRead(BaseModel):
    """The newest configuration the car said it applied."""

    version: int = Field(description="The version applied", examples=[2])
    reported_at: datetime | None = Field(description="When the car's answer arrived")
    active_features: list[str] = Field(
        description="Codes of the features on in the car, as it reported them",
        examples=[["driver_assist"]],
    )


class PendingRead(BaseModel):
    """A change that has not reached the car yet, and since when."""

    version: int = Field(description="The version waiting", examples=[3])
    waiting_for: Literal["car", "park"] = Field(
        description="`car`: sent, the car has not answered (offline?); `park`: the car has it "
        "and applies it once parked"
    )
    since: datetime = Field(description="When the change was made")
    published_at: datetime | None = Field(description="When the broker first acknowledged it")


class CapabilityRead(BaseModel):
    """A feature of the car's platform, and whether this car could run it."""

    code: str = Field(description="Feature code", examples=["driver_assist"])
    name: str = Field(description="Feature name", examples=["Driver assistance"])
    category: str = Field(description="Catalog category", examples=["safety"])
    affects_driving: bool = Field(description="Switched only while the car is parked")
    runnable: bool = Field(description="The car has what the feature needs")
    reason_code: str | None = Field(
        description="Why it cannot run, a stable code",
        examples=["feature.not_eligible.hardware_missing"],
    )
    reason: str | None = Field(
        description="Why it cannot run, for a person",
        examples=["Its hardware was not fitted at the factory"],
    )
    desired: bool = Field(description="On in the newest configuration")
    on_in_car: bool = Field(description="On in the car by its last report")


class TwinEvent(BaseModel):
    """One thing that happened to the car."""

    at: datetime = Field(description="When, by the platform's clock")
    event: str = Field(description="What happened", examples=["configuration.applied"])
    from_state: str | None = Field(description="State before, if any", examples=["pending"])
    to_state: str | None = Field(description="State after, if any", examples=["applied"])
    actor: str = Field(description="Who: kind, then name", examples=["vehicle: VCAAURA02TM000001"])
    details: dict[str, object] = Field(
        description="Facts of the event", examples=[{"version": 3, "reason": None}]
    )


class TwinRead(BaseModel):
    """The digital twin: one car as the platform knows it, from the line to now."""

    vin: str = Field(description="The car's VIN", examples=["VCAAURA02TM000001"])
    model: ModelRead = Field(description="The car's base platform")
    plate: str | None = Field(description="Registration plate", examples=["1234 LMN"])
    registered_country: str | None = Field(description="Country of registration", examples=["ES"])
    owner: OwnerRead | None = Field(description="The owner; null: the maker's")
    built_at: datetime = Field(description="When it left the production line")
    delivered_at: datetime | None = Field(description="When it was handed over")
    software_version: str = Field(description="Software the car runs", examples=["7.2.0"])
    fitted_hardware: list[str] = Field(
        description="Codes of the features whose hardware was fitted at the factory",
        examples=[["driver_assist"]],
    )
    connection: ConnectionRead = Field(description="Online or offline")
    telemetry: TelemetryRead | None = Field(description="The newest telemetry; null: none yet")
    desired: DesiredRead | None = Field(description="What the car must run; null: nothing yet")
    reported: ReportedRead | None = Field(
        description="What the car said it runs; null: it never applied a configuration"
    )
    pending: PendingRead | None = Field(description="A change not yet in force in the car")
    capabilities: list[CapabilityRead] = Field(
        description="Every feature of the platform: whether this car could run it, and why not"
    )
    versions: list[ConfigurationRead] = Field(
        description="Every configuration version, newest first"
    )
    state: str = Field(
        default="in_service",
        description="`in_service`, or `archived` once scrapped (read-only, history kept)",
    )
    archived_at: datetime | None = Field(default=None, description="When it was scrapped")
    history: list[TwinEvent] = Field(
        description="What happened to the car, oldest first: birth, configurations, the car's "
        "answers and refusals, delivery, phones"
    )


class FleetCar(BaseModel):
    """One car of the fleet, in a line."""

    vin: str = Field(description="The car's VIN", examples=["VCAAURA02TM000001"])
    model: str = Field(description="Platform code", examples=["AURA"])
    plate: str | None = Field(description="Registration plate", examples=["1234 LMN"])
    owner_name: str | None = Field(description="The owner's name", examples=["Ana García"])
    online: bool = Field(description="Connected now, by its last status")
    last_seen_at: datetime | None = Field(description="When the platform last heard from it")
    software_version: str = Field(description="Software the car runs", examples=["7.2.0"])
    desired_version: int | None = Field(description="Newest configuration", examples=[3])
    applied_version: int | None = Field(description="Newest the car applied", examples=[2])
    pending_since: datetime | None = Field(
        description="Since when a change waits for the car; null: none waits"
    )
    pending_state: Literal["pending", "deferred"] | None = Field(
        description="`pending` (waits for the car) or `deferred` (waits for it to be parked)"
    )


class FleetPage(BaseModel):
    """One page of the fleet."""

    total: int = Field(description="How many cars match (all pages)", examples=[200])
    items: list[FleetCar] = Field(description="Ordered by VIN")
