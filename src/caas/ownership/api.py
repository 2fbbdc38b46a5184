"""Routes of a change of owner (the seller's code, the buyer's receipt, a dealership's resale)
and of a car's end of life."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse

from caas.accounts.deps import CurrentUser, Dealer, actor_of, require
from caas.accounts.models import Role, User
from caas.core.api import ClockDep, DbSession, SettingsDep, answer_once, error_responses
from caas.core.errors import NotFound
from caas.core.idempotency import check_key, claim, once, store
from caas.ownership import service
from caas.ownership.schemas import (
    RegistryRetryRead,
    ResaleCreate,
    ScrappingCreate,
    ScrappingRead,
    TransferAccept,
    TransferAcceptNew,
    TransferOpenedRead,
    TransferRead,
)

router = APIRouter(prefix="/api/v1", tags=["change of owner"])

Vin = Annotated[str, Path(description="The car's VIN", examples=["VCAAURA02TM000001"])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]
Scrapper = Annotated[User, Depends(require(Role.OPERATOR, Role.DEALER))]


@router.post(
    "/vehicles/{vin}/transfer",
    response_model=TransferOpenedRead,
    status_code=201,
    summary="Sell the car: open a transfer and get the code to give the buyer",
    description="Only the owner of a delivered car. The code is shown once (only its hash is "
    "kept) and works for 7 days; one transfer open at a time (409: cancel it first).",
    responses=error_responses(401, 404, 409, 422),
)
def open_transfer(
    vin: Vin,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    principal, key = f"user:{user.id}", check_key(idempotency_key)
    operation = f"transfer.open:{vin.upper()}"
    previous = claim(
        session, principal=principal, key=key, operation=operation, request={}, now=now
    )
    if previous is not None:  # a retry: the same transfer, without its code
        return JSONResponse(previous, status_code=201)
    opened = service.open_transfer(
        session, user=user, vin=vin, settings=settings, actor=actor_of(user), now=now
    )
    answer = TransferOpenedRead(
        **TransferRead.of(opened.transfer, vin.upper()).model_dump(), code=opened.code
    ).model_dump(mode="json")
    store(session, principal=principal, key=key, response={**answer, "code": None})
    return JSONResponse(answer, status_code=201)


@router.get(
    "/vehicles/{vin}/transfer",
    response_model=TransferRead,
    summary="The car's open transfer (the code is never shown again)",
    responses=error_responses(401, 404, 422),
)
def get_transfer(vin: Vin, session: DbSession, user: CurrentUser) -> TransferRead:
    _, transfer = service.seller_transfer(session, user=user, vin=vin)
    if transfer is None:
        raise NotFound("this car has no open transfer", code="transfer.not_found")
    return TransferRead.of(transfer, vin.upper())


@router.delete(
    "/vehicles/{vin}/transfer",
    response_model=TransferRead,
    summary="Cancel the car's open transfer: its code stops working",
    responses=error_responses(401, 404, 409, 422),
)
def cancel_transfer(
    vin: Vin,
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    now = clock.now()

    def act() -> dict[str, Any]:
        transfer = service.cancel_transfer(
            session, user=user, vin=vin, actor=actor_of(user), now=now
        )
        return TransferRead.of(transfer, vin.upper()).model_dump(mode="json")

    return once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"transfer.cancel:{vin.upper()}",
        request={},
        now=now,
        act=act,
    )


@router.post(
    "/transfers/receive",
    response_model=TransferRead,
    summary="Receive a car: its VIN and the seller's code make it yours",
    description="A logged-in customer. A wrong or expired code is 422 (field `code`); after "
    "5 wrong codes in 15 minutes (per buyer or per car) 429, with `Retry-After` (seconds) until "
    "the oldest of them is old enough. On success the car is yours: the "
    "seller's subscriptions end, their phones are revoked, the permanent options stay.",
    responses=error_responses(401, 409, 422, 429),
)
def receive_car(
    body: TransferAccept,
    request: Request,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    now = clock.now()

    def act() -> dict[str, Any]:
        transfer = service.receive_car(
            session,
            user=user,
            vin=body.vin,
            code=body.code,
            attempts=request.app.state.sessions,
            settings=settings,
            actor=actor_of(user),
            now=now,
        )
        return TransferRead.of(transfer, body.vin.upper()).model_dump(mode="json")

    return once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation="transfer.receive",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )


@router.post(
    "/transfers/receive-new",
    response_model=TransferRead,
    status_code=201,
    summary="Receive a car as a new customer: VIN, code and who you are",
    description="No login: for a buyer without an account, made now and activated from the "
    "e-mailed link. Someone who has an account logs in and uses `/transfers/receive` (409). "
    "Wrong codes are limited as there.",
    responses=error_responses(409, 422, 429),
)
def receive_car_as_new_customer(
    body: TransferAcceptNew,
    request: Request,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        transfer, _ = service.receive_car_as_new_customer(
            session,
            vin=body.vin,
            code=body.code,
            identity=body.buyer,
            attempts=request.app.state.sessions,
            settings=settings,
            now=now,
        )
        return TransferRead.of(transfer, body.vin.upper()).model_dump(mode="json")

    answer = once(
        session,
        principal=f"transfer:{body.vin.upper()}",
        key=idempotency_key,
        operation="transfer.receive_new",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
    return JSONResponse(answer, status_code=201)


@router.post(
    "/resales",
    response_model=TransferRead,
    status_code=201,
    summary="Record a resale at the dealership between the owner and a buyer",
    description="A salesperson, with both parties present: the seller's national id must be "
    "the owner's (404 otherwise). The buyer is found or created as in a new sale (a new one "
    "gets the activation e-mail). The car changes hands at once.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def record_resale(
    body: ResaleCreate,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: Dealer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        transfer = service.record_resale(
            session,
            dealer=user,
            vin=body.vin,
            seller_national_id=body.seller_national_id,
            identity=body.buyer,
            settings=settings,
            now=now,
        )
        return TransferRead.of(transfer, body.vin.upper()).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation="transfer.resale",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
        status_code=201,
    )


@router.post(
    "/vehicles/{vin}/scrap",
    response_model=ScrappingRead,
    status_code=201,
    summary="Scrap the car: deregistered, off the network, its twin archived",
    description="An operator, or a dealer for a car their dealership sold (404 for others). "
    "The registry deregisters it, its broker account is removed, nothing more is published to "
    "it, its subscriptions end with the refunds their offers define, the owner is told. "
    "409 when it was scrapped already.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def scrap(
    vin: Vin,
    body: ScrappingCreate,
    session: DbSession,
    clock: ClockDep,
    user: Scrapper,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        scrapping = service.scrap(
            session,
            user=user,
            vin=vin,
            reason=body.reason,
            certificate_number=body.certificate_number,
            actor=actor_of(user),
            now=now,
        )
        return ScrappingRead.of(scrapping, vin.upper()).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"vehicle.scrap:{vin.upper()}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
        status_code=201,
    )


@router.post(
    "/vehicles/{vin}/registry/retry",
    response_model=RegistryRetryRead,
    summary="Send a refused change of holder or deregistration to the registry again",
    description="An operator, or a dealer for a car their dealership sold (404 for others). "
    "The request goes again with the data as they are now (correct the holder's details "
    "first), by the same job, retried while the registry is down. 409 "
    "`ownership.nothing_refused` when the registry refused nothing for the car.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def retry_registry(
    vin: Vin,
    session: DbSession,
    clock: ClockDep,
    user: Scrapper,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        refusal = service.retry_registry(session, user=user, vin=vin, actor=actor_of(user), now=now)
        return RegistryRetryRead(
            vin=vin.upper(),
            request=refusal.kind,
            refused=refusal.reason,
            registry_state=refusal.row.registry_state,
        ).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"vehicle.registry_retry:{vin.upper()}",
        request={},
        now=now,
        act=act,
    )
