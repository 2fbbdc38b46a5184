"""Routes of the owner's options: the car's options, and switching one off and on at will."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path

from caas.accounts.deps import CurrentUser
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once
from caas.store import entitlements
from caas.store.options_schemas import OptionRead, OptionUpdate

router = APIRouter(prefix="/api/v1", tags=["options"])

Vin = Annotated[str, Path(description="The car's VIN", examples=["VCAAURA02TM000001"])]
EntitlementId = Annotated[
    int, Path(description="Id of the option's entitlement (`entitlement_id`)", examples=[42])
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]


@router.get(
    "/vehicles/{vin}/options",
    response_model=list[OptionRead],
    summary="The car's options, current and to come, switched off ones too",
    description="Only the car's owner; anyone else finds no such car (404).",
    responses=error_responses(401, 404, 422),
)
def list_options(
    vin: Vin, session: DbSession, clock: ClockDep, user: CurrentUser
) -> list[OptionRead]:
    vehicle = entitlements.owned_vehicle(session, user, vin)
    options = entitlements.owned_options(session, vehicle, at=clock.now())
    return [OptionRead.of(option) for option in options]


@router.put(
    "/vehicles/{vin}/options/{entitlement_id}",
    response_model=OptionRead,
    summary="Switch one of the car's options off or on, without a charge; the car follows",
    description="Only the car's owner (404 for anyone else, or an option of another car). "
    "409 `entitlement.not_switchable.over` when its window is over or it was revoked, "
    "`entitlement.not_switchable.delivering` while it is still on its way to the car, "
    "`entitlement.not_switchable.trial` for a free trial (it runs its whole window). "
    "Switching an option to the state it is in changes nothing.",
    responses=error_responses(401, 404, 409, 422),
)
def switch_option(
    vin: Vin,
    entitlement_id: EntitlementId,
    body: OptionUpdate,
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    now = clock.now()

    def act() -> dict[str, Any]:
        switched = entitlements.switch(
            session,
            user=user,
            vin=vin,
            entitlement_id=entitlement_id,
            enabled=body.enabled,
            now=now,
        )
        return OptionRead.of(entitlements.option_of(switched, at=now)).model_dump(mode="json")

    return once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"option.switch:{vin.upper()}:{entitlement_id}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
