"""The car's record, born when the factory builds it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Vehicle(Base):
    __tablename__ = "vehicles"

    id: Mapped[int] = mapped_column(primary_key=True)
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"), unique=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    owner_customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    # Ed25519 public key of the car (PEM/base64 as the factory sent it); pins its identity.
    public_key: Mapped[str] = mapped_column(Text)
    software_version: Mapped[str] = mapped_column(String(20))
    plate: Mapped[str | None] = mapped_column(String(20), unique=True)
    registered_country: Mapped[str | None] = mapped_column(ForeignKey("countries.code"))
    built_at: Mapped[datetime]
    registered_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # in_service, or archived once scrapped: read-only, its whole history kept
    # (`caas.ownership`).
    state: Mapped[str] = mapped_column(
        String(20), default="in_service", server_default="in_service"
    )
    archived_at: Mapped[datetime | None]
    # When the current owner got the car second-hand (None: its first owner); what happened
    # before belongs to the previous owners' files.
    owner_since: Mapped[datetime | None]


class PhoneKey(Base):
    """A phone paired with a car as its key: the public half of a key pair made on the phone.

    The car learns the active keys from its next signed manifest (`caas.vehicles.keys`); a
    revoked key stays here, with when it was revoked, so the file keeps the whole story.
    """

    __tablename__ = "phone_keys"
    __table_args__ = (Index("ix_phone_keys_vehicle", "vehicle_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    # Who paired it: always the car's owner (a second driver's phone is added by the owner).
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    label: Mapped[str] = mapped_column(String(80))
    algorithm: Mapped[str] = mapped_column(String(20))  # ECDSA-P256-SHA256 or Ed25519
    # Base64: SubjectPublicKeyInfo DER (ECDSA P-256) or the raw 32 bytes (Ed25519).
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    @property
    def car_key_id(self) -> str:
        """How the manifest, the car and its screen name this key."""
        return f"pk-{self.id}"


class TelemetrySample(Base):
    """One telemetry message of a car, as much of it as the owner allows us to keep.

    Ready to be partitioned by time: the primary key and the unique key both carry `at`
    (PostgreSQL wants the partition key in every unique index). A (VIN, seq) is one message
    sent at one moment by the car's clock, so a message delivered twice is stored once.
    Without the owner's consent `speed_kmh`, `readings` (driving style) and the position
    (location history) stay empty.
    """

    __tablename__ = "telemetry_samples"
    __table_args__ = (UniqueConstraint("vin", "at", "seq", name="uq_telemetry_samples_vin_at_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True)
    vin: Mapped[str] = mapped_column(String(17))
    seq: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime]
    odometer_km: Mapped[float] = mapped_column(Double)
    software_version: Mapped[str] = mapped_column(String(20))
    parked: Mapped[bool]
    battery_percent: Mapped[float | None] = mapped_column(Double)
    speed_kmh: Mapped[float | None] = mapped_column(Double)
    readings: Mapped[dict[str, float] | None] = mapped_column(JSONB)
    latitude: Mapped[float | None] = mapped_column(Double)
    longitude: Mapped[float | None] = mapped_column(Double)


class FeatureUsage(Base):
    """Use of a metered feature as the car counted it; one row per (VIN, seq), never edited."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("vin", "seq"),
        Index("ix_usage_events_vin_feature_at", "vin", "feature", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    vin: Mapped[str] = mapped_column(String(17))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]
    received_at: Mapped[datetime]
    feature: Mapped[str] = mapped_column(String(40))
    unit: Mapped[str] = mapped_column(String(20))
    quantity: Mapped[float] = mapped_column(Double)


class VehicleState(Base):
    """The car's latest reported state (the twin's "now"): newest telemetry and online status."""

    __tablename__ = "vehicle_state"

    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), primary_key=True)
    odometer_km: Mapped[float | None] = mapped_column(Double)
    software_version: Mapped[str | None] = mapped_column(String(20))
    parked: Mapped[bool | None]
    battery_percent: Mapped[float | None] = mapped_column(Double)
    # Only with the owner's consent (driving style; location history), like the samples.
    speed_kmh: Mapped[float | None] = mapped_column(Double)
    latitude: Mapped[float | None] = mapped_column(Double)
    longitude: Mapped[float | None] = mapped_column(Double)
    telemetry_at: Mapped[datetime | None]  # by the car's clock
    telemetry_seq: Mapped[int | None] = mapped_column(BigInteger)
    online: Mapped[bool] = mapped_column(default=False)
    status_at: Mapped[datetime | None]  # by the car's clock
    # The connection the status belongs to (`caas.protocol.mqtt.Status.session`).
    status_session: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_at: Mapped[datetime | None]  # by the platform's clock
