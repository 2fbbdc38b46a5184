"""The phone is the key: pairing a phone with a car, revoking it, and the keys a manifest carries.

A phone makes its own key pair (WebCrypto in the web app) and sends only the public half. The
platform keeps it and asks for a new signed manifest (`caas.ota.service.request_configuration`),
which carries every active key to the car; the car then starts and unlocks only for a challenge
signed by one of them, even without a network. Revoking a lost phone is the same road: a new
manifest without it.

Only the car's owner pairs or revokes, and only once the car is delivered; a second driver's
phone is added by the owner (the label says whose it is). Anyone else finds no such car (404).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.protocol import mqtt
from caas.sales import service as sales
from caas.vehicles.models import PhoneKey, Vehicle

# WebCrypto in the phone app makes ECDSA P-256 keys; Ed25519 for phones that have it.
Algorithm = Literal["ECDSA-P256-SHA256", "Ed25519"]
# The manifest carries at most 20 keys; a car rarely needs more than a family's phones.
MAX_ACTIVE_KEYS: Final = 10


def wire_key(key_id: str, algorithm: str, public_key: str, label: str) -> mqtt.PhoneKey:
    """The key as the manifest carries it; ValueError when it is not a key of `algorithm`
    (an ECDSA P-256 SubjectPublicKeyInfo DER, or 32 raw Ed25519 bytes, in base64)."""
    fields = {"key_id": key_id, "algorithm": algorithm, "public_key": public_key, "label": label}
    try:
        return mqtt.PhoneKey.model_validate(fields)
    except ValidationError as error:
        raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None


def normalised_public_key(algorithm: Algorithm, public_key: str) -> str:
    """The one base64 text of the key, so the same key sent twice compares equal (ValueError
    when it is not a key of `algorithm`)."""
    public_key = "".join(public_key.split())
    wire_key("new", algorithm, public_key, "phone")
    if algorithm == "Ed25519":
        return public_key
    der = load_der_public_key(base64.b64decode(public_key))
    spki = der.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(spki).decode()


def _owned_vehicle(session: Session, user: User, vin: str, *, lock: bool = False) -> Vehicle:
    """The car if `user` is its owner; anyone else gets the same 404 as for no car at all."""
    query = select(Vehicle).where(Vehicle.vin == vin.upper())
    if lock:
        query = query.with_for_update()
    vehicle = session.scalars(query).first()
    if vehicle is not None and vehicle.owner_customer_id is not None and user.role is Role.CUSTOMER:
        customer = sales.customer_of_user(session, user)
        if customer.id == vehicle.owner_customer_id:
            return vehicle
    raise NotFound("no car with this VIN", code="vehicle.not_found")


def _delivered(session: Session, vehicle: Vehicle, owner: User, *, lock: bool = False) -> bool:
    """Whether the car is in its owner's hands: delivered, and its order says so."""
    if vehicle.delivered_at is None or vehicle.state == "archived":
        return False
    if vehicle.sale_id is None or vehicle.owner_since is not None:
        return True  # a car bought second-hand was delivered to its first owner
    sale = sales.get_sale_for(session, owner, vehicle.sale_id, lock=lock)
    return sale.state == "delivered"


def _check_delivered(session: Session, vehicle: Vehicle, owner: User) -> None:
    """Keys only for a delivered car (409 before); the order's row stays locked meanwhile, so
    the first pairing is recognised once."""
    if not _delivered(session, vehicle, owner, lock=True):
        raise Conflict(
            "a phone can be paired once the car is delivered",
            code="phone_key.not_delivered",
        )


@dataclass(frozen=True)
class CarKeys:
    """One of the owner's cars with its phones, as the digital key page shows it."""

    vehicle: Vehicle
    may_pair: bool  # delivered: phones can be paired
    phones: list[PhoneKey]  # newest first, revoked ones too


def keys_of_owner(session: Session, user: User) -> list[CarKeys]:
    """Every car the customer owns, oldest first, with its phones."""
    if user.role is not Role.CUSTOMER:
        return []
    customer = sales.customer_of_user(session, user)
    cars = session.scalars(
        select(Vehicle)
        .where(Vehicle.owner_customer_id == customer.id)
        .order_by(Vehicle.built_at, Vehicle.id)
    ).all()
    return [CarKeys(car, _delivered(session, car, user), _phones(session, car.id)) for car in cars]


def _phones(session: Session, vehicle_id: int) -> list[PhoneKey]:
    query = (
        select(PhoneKey)
        .where(PhoneKey.vehicle_id == vehicle_id)
        .order_by(PhoneKey.created_at.desc(), PhoneKey.id.desc())
    )
    return list(session.scalars(query))


def phones_of(session: Session, user: User, vin: str) -> list[PhoneKey]:
    """Every phone ever paired with the owner's car (revoked ones too), newest first."""
    return _phones(session, _owned_vehicle(session, user, vin).id)


def _active(session: Session, vehicle_id: int) -> list[PhoneKey]:
    query = (
        select(PhoneKey)
        .where(PhoneKey.vehicle_id == vehicle_id, PhoneKey.revoked_at.is_(None))
        .order_by(PhoneKey.id)
    )
    return list(session.scalars(query))


def active_phone_keys(session: Session, vehicle_id: int) -> list[mqtt.PhoneKey]:
    """The keys the car's next manifest must carry: every phone paired and not revoked."""
    return [
        wire_key(key.car_key_id, key.algorithm, key.public_key, key.label)
        for key in _active(session, vehicle_id)
    ]


def _history(
    session: Session, vehicle: Vehicle, key: PhoneKey, event: str, *, actor: Actor, now: datetime
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event=event,
        details={
            "vin": vehicle.vin,
            "key_id": key.car_key_id,
            "label": key.label,
            "algorithm": key.algorithm,
        },
    )


def pair_phone(
    session: Session,
    *,
    user: User,
    vin: str,
    algorithm: Algorithm,
    public_key: str,
    label: str,
    actor: Actor,
    now: datetime,
) -> PhoneKey:
    """Pair a phone with the owner's delivered car and send the car a manifest carrying it.

    The first phone ever paired ends the order's journey: it stays `delivered`, and the
    order's history says `car.paired`. 409 before delivery, for a key already active on this
    car, or when the car has `MAX_ACTIVE_KEYS`; 422 for a key that is not one.
    """
    # Imported here: caas.ota.service reads this module's `active_phone_keys`.
    from caas.ota.service import request_configuration

    try:
        public_key = normalised_public_key(algorithm, public_key)
    except ValueError as error:
        raise InvalidInput(str(error), field="public_key", code="phone_key.invalid") from None
    vehicle = _owned_vehicle(session, user, vin, lock=True)
    _check_delivered(session, vehicle, user)
    active = _active(session, vehicle.id)
    if any(key.public_key == public_key for key in active):
        raise Conflict("this phone is already paired with the car", code="phone_key.already_paired")
    if len(active) >= MAX_ACTIVE_KEYS:
        raise Conflict(
            f"the car has {MAX_ACTIVE_KEYS} phones already; revoke one first",
            code="phone_key.too_many",
        )
    first = session.scalar(select(func.count(PhoneKey.id)).where(PhoneKey.vehicle_id == vehicle.id))
    key = PhoneKey(
        vehicle_id=vehicle.id,
        user_id=user.id,
        label=label,
        algorithm=algorithm,
        public_key=public_key,
        created_at=now,
    )
    session.add(key)
    session.flush()
    _history(session, vehicle, key, "phone.paired", actor=actor, now=now)
    if first == 0 and vehicle.sale_id is not None:
        record(
            session,
            at=now,
            actor=actor,
            subject_type="order",
            subject_id=vehicle.sale_id,
            customer_id=vehicle.owner_customer_id,
            event="car.paired",
            details={"vin": vehicle.vin, "key_id": key.car_key_id, "label": key.label},
        )
    request_configuration(session, vehicle, reason="phone.paired", actor=actor, now=now)
    return key


def revoke_phone(
    session: Session, *, user: User, vin: str, key_id: int, actor: Actor, now: datetime
) -> PhoneKey:
    """Revoke a phone (lost, sold, a driver no longer welcome): the car gets a manifest without
    it and refuses it from then on. Revoking a revoked key changes nothing."""
    from caas.ota.service import request_configuration

    vehicle = _owned_vehicle(session, user, vin, lock=True)
    key = session.scalars(
        select(PhoneKey).where(PhoneKey.id == key_id, PhoneKey.vehicle_id == vehicle.id)
    ).first()
    if key is None:
        raise NotFound("no such phone on this car", code="phone_key.not_found")
    if key.revoked_at is not None:
        return key
    key.revoked_at = now
    session.flush()
    _history(session, vehicle, key, "phone.revoked", actor=actor, now=now)
    request_configuration(session, vehicle, reason="phone.revoked", actor=actor, now=now)
    return key


def revoke_every_phone(
    session: Session, vehicle: Vehicle, *, reason: str, actor: Actor, now: datetime
) -> list[PhoneKey]:
    """Revoke every phone of the car (sold, scrapped): the caller signs the next manifest,
    which carries none of them. Returns the phones revoked."""
    revoked = _active(session, vehicle.id)
    for key in revoked:
        key.revoked_at = now
        record(
            session,
            at=now,
            actor=actor,
            subject_type="vehicle",
            subject_id=vehicle.id,
            customer_id=vehicle.owner_customer_id,
            event="phone.revoked",
            details={"vin": vehicle.vin, "key_id": key.car_key_id, "reason": reason},
        )
    session.flush()
    return revoked
