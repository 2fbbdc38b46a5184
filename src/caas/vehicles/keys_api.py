"""Routes of the digital key: the owner pairs phones with their car, lists and revokes them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from caas.accounts.deps import CurrentUser, actor_of
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once
from caas.vehicles import keys
from caas.vehicles.key_schemas import PhoneKeyCreate, PhoneKeyRead

router = APIRouter(prefix="/api/v1", tags=["digital key"])

Vin = Annotated[str, Path(description="The car's VIN", examples=["VCAAURA02TM000001"])]
KeyId = Annotated[int, Path(description="Database id of the phone key (`id`)", examples=[7])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]


@router.post(
    "/vehicles/{vin}/phones",
    response_model=PhoneKeyRead,
    status_code=201,
    summary="Pair a phone with the car: its public key goes into the car's next manifest",
    description="Only the car's owner, once the car is delivered (409 before). The owner adds "
    "a second driver's phone the same way, with a label saying whose it is. The first phone "
    "paired ends the order's journey (`car.paired` in its history).",
    responses=error_responses(401, 404, 409, 422),
)
def pair_phone(
    vin: Vin,
    body: PhoneKeyCreate,
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        key = keys.pair_phone(
            session,
            user=user,
            vin=vin,
            algorithm=body.algorithm,
            public_key=body.public_key,
            label=body.label,
            actor=actor_of(user),
            now=now,
        )
        return PhoneKeyRead.of(key, vin.upper()).model_dump(mode="json")

    response = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"phone.pair:{vin.upper()}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
    return JSONResponse(response, status_code=201)


@router.get(
    "/vehicles/{vin}/phones",
    response_model=list[PhoneKeyRead],
    summary="The phones paired with the car, revoked ones included, newest first",
    responses=error_responses(401, 404, 422),
)
def list_phones(vin: Vin, session: DbSession, user: CurrentUser) -> list[PhoneKeyRead]:
    return [PhoneKeyRead.of(key, vin.upper()) for key in keys.phones_of(session, user, vin)]


@router.delete(
    "/vehicles/{vin}/phones/{key_id}",
    response_model=PhoneKeyRead,
    summary="Revoke a phone (lost, sold): the car gets a manifest without it",
    description="Only the car's owner. Revoking a revoked phone changes nothing, so a retry "
    "is harmless.",
    responses=error_responses(401, 404, 422),
)
def revoke_phone(
    vin: Vin, key_id: KeyId, session: DbSession, clock: ClockDep, user: CurrentUser
) -> PhoneKeyRead:
    key = keys.revoke_phone(
        session, user=user, vin=vin, key_id=key_id, actor=actor_of(user), now=clock.now()
    )
    return PhoneKeyRead.of(key, vin.upper())
