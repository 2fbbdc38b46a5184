"""The workshop's pages: find a car by VIN or plate, read its maintenance, record a service."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.catalog import service as catalog
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError, InvalidInput, NotFound
from caas.maintenance import service as maintenance
from caas.maintenance.read import vehicle_services_read
from caas.maintenance.schemas import ServiceRecordCreate
from caas.sales.models import Customer
from caas.store.reminders import maintenance_due_soon
from caas.upkeep.models import Workshop, WorkshopStaff
from caas.vehicles import service as vehicles
from caas.vehicles.models import Vehicle
from caas.web.csrf import CSRF_FIELD, csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import FormErrors, FormValues, PostedForm, once_per_form, values_of
from caas.web.pages import PageRoute, WorkshopPage, flash, language_of, render, see_other
from caas.web.strings import translate

router = APIRouter(
    prefix="/workshop",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

VIN_LENGTH = 17  # no plate of any country we sell in is this long
_PLATE_NOISE = re.compile(r"[\s\-]")
# Whether the maintenance package covers the service: what the sale says, or the workshop's word.
INCLUDED_CHOICES = {"": None, "yes": True, "no": False}


def _compact_plate(plate: str) -> str:
    return _PLATE_NOISE.sub("", plate).upper()


def find_car(session: Session, query: str) -> Vehicle | None:
    """The car with this VIN or plate (a plate as typed: spaces, hyphens and case ignored)."""
    query = query.strip()
    if len(query) == VIN_LENGTH:
        return vehicles.find_vehicle_by_vin(session, query)
    compact = _compact_plate(query)
    if not compact:
        return None
    # Plates are written per country (`1234 BCD`, `AB-123-CD`, `M-AB 1234`): compare them bare.
    stored = func.upper(func.replace(func.replace(Vehicle.plate, " ", ""), "-", ""))
    return session.scalars(select(Vehicle).where(stored == compact)).first()


AREA_PREFIX = 2  # a workshop's area: its country and the first characters of its postal code


@dataclass(frozen=True)
class DueCar:
    vin: str
    plate: str | None
    model: str
    owner: str
    due_on: date
    due_km: int
    status: str  # "overdue" or "due_soon"


def cars_due_in_area(session: Session, workshop: Workshop, *, now: datetime) -> list[DueCar]:
    """Delivered cars whose owner lives in the workshop's area (same country, same postal-code
    prefix) and whose next service is overdue or due soon (the owners' reminder's notice:
    `maintenance_due_soon`); overdue first, then by due date. The area is selected in one
    query; only its cars have their plan worked out."""
    today = now.astimezone(ZoneInfo(workshop.timezone)).date()
    prefix = workshop.postal_code[:AREA_PREFIX]
    rows = session.execute(
        select(Vehicle, Customer)
        .join(Customer, Customer.id == Vehicle.owner_customer_id)
        .where(
            Vehicle.delivered_at.is_not(None),
            Customer.country == workshop.country,
            func.substr(Customer.postal_code, 1, AREA_PREFIX) == prefix,
        )
    ).all()
    due: list[DueCar] = []
    for vehicle, customer in rows:
        summary = maintenance.maintenance_summary(session, vehicle, today=today)
        point = summary.next_service
        if point is None or not maintenance_due_soon(
            point.due_on, point.due_km, today=today, odometer_km=summary.odometer_km
        ):
            continue
        due.append(
            DueCar(
                vin=vehicle.vin,
                plate=vehicle.plate,
                model=catalog.get_platform(session, vehicle.platform_id).name,
                owner=customer.full_name,
                due_on=point.due_on,
                due_km=point.due_km,
                status="overdue" if summary.status == "overdue" else "due_soon",
            )
        )
    return sorted(due, key=lambda car: (car.status != "overdue", car.due_on, car.vin))


def workshop_of(session: Session, user: User) -> Workshop | None:
    return session.scalars(
        select(Workshop)
        .join(WorkshopStaff, WorkshopStaff.workshop_id == Workshop.id)
        .where(WorkshopStaff.user_id == user.id)
    ).first()


@router.get("")
def search_page(
    request: Request,
    session: DbSession,
    clock: ClockDep,
    user: WorkshopPage,
    q: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    errors = FormErrors()
    if q.strip():
        car = find_car(session, q)
        if car is not None:
            return see_other(f"/workshop/cars/{car.vin}")
        errors.add("q", translate(language_of(request, user), "workshop.not_found"))
    workshop = workshop_of(session, user)
    due = cars_due_in_area(session, workshop, now=clock.now()) if workshop else None
    context = {"values": {"q": q}, "errors": errors, "workshop": workshop, "due": due}
    return render(request, "workshop/search.html", context)


def _car_zone(car: Vehicle) -> str:
    return zone_of_country(car.registered_country)


def _render_car(
    request: Request,
    session: Session,
    user: User,
    vin: str,
    now: datetime,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    car = maintenance.vehicle_for_reader(session, user, vin)
    zone = _car_zone(car)
    today = now.astimezone(ZoneInfo(zone)).date()
    summary = maintenance.maintenance_summary(session, car, today=today)
    platform = catalog.get_platform(session, car.platform_id)
    local_now = now.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")
    context = {
        "car": vehicle_services_read(session, summary),
        "vehicle": car,
        "platform": platform,
        "zone": zone,
        "values": values or {"idempotency_key": uuid.uuid4().hex, "performed_at": local_now},
        "errors": errors or FormErrors(),
        "max_performed_at": local_now,
    }
    return render(request, "workshop/car.html", context, status_code=status_code)


@router.get("/cars/{vin}")
def car_page(
    request: Request, vin: str, session: DbSession, clock: ClockDep, user: WorkshopPage
) -> Response:
    return _render_car(request, session, user, vin, clock.now())


def _performed_at(value: str, zone: str) -> datetime:
    """The form's local date and time, in the zone the car lives in."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("give the date and time of the service", field="performed_at") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


@router.post("/cars/{vin}/services")
def record_service(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: WorkshopPage,
) -> Response:
    values = values_of(form)
    now = clock.now()
    car = maintenance.vehicle_for_reader(session, user, vin)  # an unknown car is a 404 page
    request_body = {k: v for k, v in values.items() if k not in (CSRF_FIELD, "idempotency_key")}

    def act() -> dict[str, Any]:
        body = ServiceRecordCreate.model_validate(
            {
                "performed_at": _performed_at(values.get("performed_at", ""), _car_zone(car)),
                "odometer_km": values.get("odometer_km", ""),
                "work_description": values.get("work_description", ""),
                "included_in_plan": INCLUDED_CHOICES.get(values.get("included_in_plan", "")),
            }
        )
        record = maintenance.record_service(
            session,
            vin=car.vin,
            workshop=user,
            performed_at=body.performed_at,
            odometer_km=body.odometer_km,
            work_description=body.work_description,
            included_in_plan=body.included_in_plan,
            now=now,
        )
        return {"service_id": record.id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.maintenance.record:{car.vin}",
            request=request_body,
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        status = error.status if isinstance(error, CaasError) else 422
        return _render_car(
            request,
            session,
            user,
            car.vin,
            now,
            values=values,
            errors=FormErrors.of(error),
            status_code=status,
        )
    flash(request, "flash.service_recorded")
    return see_other(f"/workshop/cars/{car.vin}")
