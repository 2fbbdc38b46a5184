"""Routes of the digital twin: the owner's view of their car, the operator's view of the fleet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from caas.accounts.deps import CurrentUser, require
from caas.accounts.models import Role
from caas.core.api import DbSession, error_responses
from caas.vehicles import twin
from caas.vehicles.twin_schemas import FleetPage, TwinRead

router = APIRouter(prefix="/api/v1", tags=["digital twin"])

Vin = Annotated[str, Path(description="The car's VIN", examples=["VCAAURA02TM000001"])]


@router.get(
    "/vehicles/{vin}/twin",
    response_model=TwinRead,
    summary="The car's digital twin: identity, configuration desired and applied, connection, "
    "telemetry, what it could run, history",
    description="The owner sees their own cars, an operator any car; for anyone else the car "
    "does not exist (404).",
    responses=error_responses(401, 404, 422),
)
def get_twin(vin: Vin, session: DbSession, user: CurrentUser) -> TwinRead:
    vehicle = twin.visible_vehicle(session, user, vin)
    return twin.twin_of(session, vehicle, since=twin.shown_since(user, vehicle))


@router.get(
    "/fleet",
    response_model=FleetPage,
    summary="The fleet for the operator: every car's connection and configuration, filterable",
    responses=error_responses(401, 403, 422),
    dependencies=[Depends(require(Role.OPERATOR))],
)
def list_fleet(
    session: DbSession,
    online: Annotated[
        bool | None, Query(description="Only cars online (true) or offline (false)")
    ] = None,
    model: Annotated[
        str | None,
        Query(max_length=20, description="Only cars of this platform", examples=["AURA"]),
    ] = None,
    pending: Annotated[
        bool | None,
        Query(description="Only cars with (true) or without (false) a change waiting for them"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many")] = 50,
    offset: Annotated[int, Query(ge=0, description="Skip this many first (paging)")] = 0,
) -> FleetPage:
    return twin.fleet(
        session,
        twin.FleetFilter(online=online, model=model, pending=pending, limit=limit, offset=offset),
    )
