"""The car's record: its birth at the factory and how other domains find it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.errors import Conflict, NotFound
from caas.core.history import Actor, record
from caas.protocol import vin as vin_rules
from caas.vehicles.models import Vehicle


def vehicle_for_sale(session: Session, sale_id: int) -> Vehicle | None:
    """The car built for a sale, once the factory has produced it."""
    return session.scalars(select(Vehicle).where(Vehicle.sale_id == sale_id)).first()


def find_vehicle_by_vin(session: Session, vin: str) -> Vehicle | None:
    return session.scalars(select(Vehicle).where(Vehicle.vin == vin.upper())).first()


def get_vehicle_by_vin(session: Session, vin: str) -> Vehicle:
    """The car with this VIN; 404 when there is none."""
    vehicle = find_vehicle_by_vin(session, vin)
    if vehicle is None:
        raise NotFound("no car with this VIN", code="vehicle.not_found")
    return vehicle


def record_birth(
    session: Session,
    *,
    vin: str,
    public_key: str,
    sale_id: int,
    platform_id: int,
    owner_customer_id: int,
    software_version: str,
    built_at: datetime,
    actor: Actor,
    now: datetime,
) -> Vehicle:
    """The car's twin begins: its identity as the factory built it, and `car.born` in history;
    it joins the IoT network (broker credentials) with configuration version 1, nothing on.

    The VIN must be valid (ISO 3779 check digit) and not already taken by another car.
    """
    from caas.iot.service import provision_car
    from caas.ota.service import request_configuration
    from caas.releases.service import car_built

    vin_rules.validate(vin)
    if find_vehicle_by_vin(session, vin) is not None:
        raise Conflict("another car already has this VIN", code="vehicle.vin_taken", vin=vin)
    vehicle = Vehicle(
        vin=vin,
        sale_id=sale_id,
        platform_id=platform_id,
        owner_customer_id=owner_customer_id,
        public_key=public_key,
        software_version=software_version,
        built_at=built_at,
    )
    session.add(vehicle)
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=owner_customer_id,
        event="car.born",
        details={
            "vin": vin,
            "sale_id": sale_id,
            "software_version": software_version,
            "built_at": built_at.isoformat(),
        },
    )
    provision_car(session, vin=vin, now=now)
    request_configuration(session, vehicle, reason="car.born", actor=actor, now=now)
    car_built(session, vehicle, now=now)  # joins a rollout under way of a release it can take
    return vehicle


def vehicles_of_owner(session: Session, customer_id: int) -> list[Vehicle]:
    """The cars a customer owns now, oldest first (a car sold on is no longer theirs)."""
    return list(
        session.scalars(
            select(Vehicle)
            .where(Vehicle.owner_customer_id == customer_id)
            .order_by(Vehicle.built_at, Vehicle.id)
        )
    )


def change_owner(
    session: Session, vehicle: Vehicle, *, new_owner_id: int, actor: Actor, now: datetime
) -> None:
    """The car is someone else's from `now`: the previous owner's file says it was sold, the
    new owner's file starts with it (`caas.ownership`)."""
    previous = vehicle.owner_customer_id
    if vehicle.state == "archived":
        raise Conflict("this car was scrapped", code="vehicle.archived")
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=previous,
        event="car.sold",
        details={"vin": vehicle.vin, "plate": vehicle.plate},
    )
    vehicle.owner_customer_id = new_owner_id
    vehicle.owner_since = now
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=new_owner_id,
        event="car.received",
        details={"vin": vehicle.vin, "plate": vehicle.plate},
    )


def archive(
    session: Session, vehicle: Vehicle, *, reason: str, actor: Actor, now: datetime
) -> None:
    """The car was scrapped: its twin becomes read-only, its whole history kept."""
    if vehicle.state == "archived":
        raise Conflict("this car was scrapped already", code="vehicle.archived")
    vehicle.state = "archived"
    vehicle.archived_at = now
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event="car.scrapped",
        from_state="in_service",
        to_state="archived",
        details={"vin": vehicle.vin, "reason": reason},
    )
