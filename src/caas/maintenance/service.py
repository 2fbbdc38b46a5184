"""The rules of maintenance: recording a service, who may read a car's services, what is due."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.catalog.models import Platform
from caas.core.errors import InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.maintenance.models import MaintenanceRecord
from caas.maintenance.rules import (
    Compliance,
    NextService,
    ServicePlan,
    ServicePoint,
    add_months,
    compliance,
    next_service,
)
from caas.sales import service as sales
from caas.sales.models import Sale
from caas.vehicles import ingest
from caas.vehicles import service as vehicles
from caas.vehicles.models import Vehicle


def service_records(session: Session, vehicle_id: int) -> list[MaintenanceRecord]:
    """A car's services, newest first."""
    return list(
        session.scalars(
            select(MaintenanceRecord)
            .where(MaintenanceRecord.vehicle_id == vehicle_id)
            .order_by(MaintenanceRecord.performed_at.desc(), MaintenanceRecord.id.desc())
        )
    )


def plan_of(session: Session, vehicle: Vehicle) -> ServicePlan:
    platform = session.get_one(Platform, vehicle.platform_id)
    return ServicePlan(
        every_km=platform.service_every_km, every_months=platform.service_every_months
    )


@dataclass(frozen=True)
class MaintenanceSummary:
    """A car's maintenance as its file shows it: the plan, the services, what is due next."""

    vehicle: Vehicle
    plan: ServicePlan
    records: list[MaintenanceRecord]
    next_service: NextService | None
    status: Compliance | None  # None while the car is not in service yet
    odometer_km: int | None  # the highest reading known (telemetry or a service); None: none


def known_odometer(
    session: Session, vehicle: Vehicle, last: MaintenanceRecord | None
) -> int | None:
    """The highest odometer reading known, in whole km: the car's own (telemetry, through
    `caas.vehicles.ingest.latest_odometer`) or the last service's, whichever is higher."""
    readings = [last.odometer_km] if last else []
    reported = ingest.latest_odometer(session, vehicle.id)
    if reported is not None:
        readings.append(math.floor(reported))
    return max(readings) if readings else None


def maintenance_summary(session: Session, vehicle: Vehicle, *, today: date) -> MaintenanceSummary:
    """The plan, the services (newest first), the next one due and whether the car is late.

    Late by date, or by distance: the odometer is the car's latest reading from telemetry
    when it reports one (a car driven past its due km is overdue before any workshop sees it),
    else the last service's.
    """
    plan = plan_of(session, vehicle)
    records = service_records(session, vehicle.id)
    last = records[0] if records else None
    last_point = (
        ServicePoint(on=last.performed_at.date(), odometer_km=last.odometer_km) if last else None
    )
    delivered = vehicle.delivered_at.date() if vehicle.delivered_at else None
    due = next_service(plan, delivered=delivered, last_service=last_point)
    odometer = known_odometer(session, vehicle, last)
    status = compliance(due, today=today, odometer_km=odometer) if due else None
    return MaintenanceSummary(vehicle, plan, records, due, status, odometer)


def vehicle_for_reader(session: Session, user: User, vin: str) -> Vehicle:
    """The car if `user` may read its maintenance: workshops, operators and its owner.

    Anyone else gets the same 404 as for a car that does not exist.
    """
    vehicle = vehicles.get_vehicle_by_vin(session, vin)
    if user.role in (Role.WORKSHOP, Role.OPERATOR):
        return vehicle
    if user.role is Role.CUSTOMER and vehicle.owner_customer_id is not None:
        customer = sales.customer_of_user(session, user)
        if customer.id == vehicle.owner_customer_id:
            return vehicle
    raise NotFound("no car with this VIN", code="vehicle.not_found")


def _included_by_default(session: Session, vehicle: Vehicle, performed_at: datetime) -> bool:
    """A service is covered when the sale included maintenance and it falls in the period."""
    if vehicle.sale_id is None:
        return False
    sale = session.get_one(Sale, vehicle.sale_id)
    if not sale.maintenance_included:
        return False
    start = vehicle.delivered_at or vehicle.built_at
    return performed_at.date() <= add_months(start.date(), sale.service_period_months)


def included_in_plan(session: Session, vehicle: Vehicle, at: datetime) -> bool:
    """Whether work on the car at `at` is covered by the maintenance its sale included."""
    return _included_by_default(session, vehicle, at)


def record_service(
    session: Session,
    *,
    vin: str,
    workshop: User,
    performed_at: datetime,
    odometer_km: int,
    work_description: str,
    included_in_plan: bool | None,
    now: datetime,
) -> MaintenanceRecord:
    """Keep one service of a car, after checking it fits the car's story so far.

    A service cannot be in the future, before the car was built, before the last recorded one,
    nor at fewer kilometres than it. `included_in_plan` defaults to what the car's sale says.
    """
    vehicle = session.scalars(
        select(Vehicle).where(Vehicle.vin == vin.upper()).with_for_update()
    ).first()
    if vehicle is None:
        raise NotFound("no car with this VIN", code="vehicle.not_found")
    if performed_at > now:
        raise InvalidInput(
            "a service cannot be recorded in the future",
            field="performed_at",
            code="maintenance.performed_in_future",
        )
    # Forms give the time to the minute: a car built this minute is not "not built yet".
    if performed_at < vehicle.built_at.replace(second=0, microsecond=0):
        raise InvalidInput(
            "the car had not been built yet at that time",
            field="performed_at",
            code="maintenance.before_car_built",
        )
    records = service_records(session, vehicle.id)
    if records:
        last = records[0]
        if odometer_km < last.odometer_km:
            raise InvalidInput(
                f"the odometer cannot go back: the last service recorded {last.odometer_km} km",
                field="odometer_km",
                code="maintenance.odometer_decreased",
                last_odometer_km=last.odometer_km,
            )
        if performed_at < last.performed_at:
            raise InvalidInput(
                "the last service recorded for this car is more recent",
                field="performed_at",
                code="maintenance.before_last_service",
                last_performed_at=last.performed_at.isoformat(),
            )
    if included_in_plan is None:
        included_in_plan = _included_by_default(session, vehicle, performed_at)
    service = MaintenanceRecord(
        vehicle_id=vehicle.id,
        performed_at=performed_at,
        odometer_km=odometer_km,
        workshop_user_id=workshop.id,
        work_description=work_description,
        included_in_plan=included_in_plan,
        created_at=now,
    )
    session.add(service)
    session.flush()
    record(
        session,
        at=now,
        actor=Actor(kind=workshop.role.value, label=workshop.email, user_id=workshop.id),
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event="maintenance.recorded",
        details={
            "vin": vehicle.vin,
            "service_id": service.id,
            "performed_at": performed_at.isoformat(),
            "odometer_km": odometer_km,
            "work": work_description,
            "included_in_plan": included_in_plan,
        },
    )
    return service


def workshop_names(session: Session, records: list[MaintenanceRecord]) -> dict[int, str]:
    """The name of each workshop user who recorded one of `records`."""
    ids = {r.workshop_user_id for r in records}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(ids))).all())


def car_follows_plan(session: Session, vehicle: Vehicle, *, today: date) -> bool:
    """Whether the car follows the official maintenance plan now (some options require it):
    not overdue by date nor by the odometer it reports (`maintenance_summary`). A car not in
    service yet follows it trivially."""
    return maintenance_summary(session, vehicle, today=today).status != "overdue"


# The same question under the name the store's eligibility imports.
follows_plan_now = car_follows_plan
