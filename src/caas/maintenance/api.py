"""Routes of maintenance: workshops record services; the car's readers see them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from caas.accounts.deps import CurrentUser, Workshop
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once
from caas.maintenance import service
from caas.maintenance.read import service_record_read, vehicle_services_read
from caas.maintenance.schemas import ServiceRecordCreate, ServiceRecordRead, VehicleServicesRead

router = APIRouter(prefix="/api/v1", tags=["maintenance"])

Vin = Annotated[
    str,
    Path(
        min_length=17,
        max_length=17,
        pattern="^[A-HJ-NPR-Za-hj-npr-z0-9]{17}$",
        description="The car's VIN",
        examples=["1M8GDM9AXKP042788"],
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]


@router.post(
    "/vehicles/{vin}/services",
    response_model=ServiceRecordRead,
    status_code=201,
    summary="Record a service performed on a car (workshops)",
    responses=error_responses(401, 403, 404, 409, 422),
)
def record_service(
    vin: Vin,
    body: ServiceRecordCreate,
    session: DbSession,
    clock: ClockDep,
    user: Workshop,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        record = service.record_service(
            session,
            vin=vin,
            workshop=user,
            performed_at=body.performed_at,
            odometer_km=body.odometer_km,
            work_description=body.work_description,
            included_in_plan=body.included_in_plan,
            now=now,
        )
        read = service_record_read(record, vin=vin.upper(), workshop=user.full_name)
        return read.model_dump(mode="json")

    response = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"maintenance.record:{vin.upper()}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
    return JSONResponse(response, status_code=201)


@router.get(
    "/vehicles/{vin}/services",
    response_model=VehicleServicesRead,
    summary="A car's services, the next one due and whether it follows the plan",
    description="For workshops, operators and the car's owner; anyone else gets 404.",
    responses=error_responses(401, 404, 422),
)
def list_services(
    vin: Vin, session: DbSession, clock: ClockDep, user: CurrentUser
) -> VehicleServicesRead:
    vehicle = service.vehicle_for_reader(session, user, vin)
    summary = service.maintenance_summary(session, vehicle, today=clock.now().date())
    return vehicle_services_read(session, summary)
