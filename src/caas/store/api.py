"""Routes of the customer's store: a car's store, quotes, purchases and their state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from caas.accounts.deps import CustomerUser, actor_of
from caas.accounts.models import User
from caas.billing.provider import PaymentProvider, SandboxProvider
from caas.core.api import ClockDep, DbSession, SettingsDep, display_language, error_responses
from caas.core.errors import CaasError, PaymentFailed
from caas.core.idempotency import check_key
from caas.store import purchases
from caas.store.models import Purchase
from caas.store.read import purchase_read, quote_read, store_view
from caas.store.schemas import PurchaseCreate, PurchaseRead, QuoteCreate, QuoteRead, StoreRead

router = APIRouter(prefix="/api/v1", tags=["store"])

Vin = Annotated[str, Path(description="The car's VIN", examples=["WC9AURA1XTM500001"])]
PurchaseId = Annotated[int, Path(description="Database id of the purchase", examples=[4])]
AcceptLanguage = Annotated[
    str | None,
    Header(
        alias="Accept-Language",
        description="Language of the texts (else the customer's own)",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended purchase (8 to 200 characters): a retry or a double "
        "click with the same key charges once and gets the same purchase",
    ),
]


def _provider(settings: SettingsDep) -> Iterator[PaymentProvider]:
    with SandboxProvider.from_settings(settings) as provider:
        yield provider


Provider = Annotated[PaymentProvider, Depends(_provider)]


def _language(user: User, accept_language: str | None) -> str:
    return display_language(accept_language, user.language)


@router.get(
    "/vehicles/{vin}/store",
    response_model=StoreRead,
    summary="The store of your car: every option, its prices with VAT, and why not",
    description="Every option of the car's platform with its offers in your country (net, "
    "VAT at your country's rate, gross), the reasons the car cannot get it now (with a "
    "message in your language) and what the car has of it. Another customer's car answers "
    "404.",
    responses=error_responses(401, 403, 404),
)
def get_store(
    vin: Vin,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    accept_language: AcceptLanguage = None,
) -> StoreRead:
    customer, vehicle = purchases.customer_car(session, user, vin)
    return store_view(
        session,
        vehicle=vehicle,
        customer=customer,
        at=clock.now(),
        language=_language(user, accept_language),
    )


@router.post(
    "/vehicles/{vin}/store/quote",
    response_model=QuoteRead,
    summary="Price a cart for your car (writes nothing)",
    description="Validates every line as the purchase would: 422 per field for input that "
    "cannot be right (`field` is `items.<i>.<name>`), 409 `store.not_eligible.<reason>` when "
    "the car cannot get a line (every reason in `details.refusals`), 409 "
    "`store.already_subscribed`. A window of an option already running starts where it ends.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def post_quote(
    vin: Vin,
    body: QuoteCreate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    accept_language: AcceptLanguage = None,
) -> QuoteRead:
    customer, vehicle = purchases.customer_car(session, user, vin)
    language = _language(user, accept_language)
    priced = purchases.quote(
        session,
        vehicle=vehicle,
        customer=customer,
        items=body.items,
        at=clock.now(),
        language=language,
    )
    return quote_read(priced, language)


def _answer(session: Session, purchase: Purchase, language: str) -> JSONResponse:
    """The same answer for the first call and its retries, from the purchase's state."""
    body = purchase_read(session, purchase, language).model_dump(mode="json")
    if purchase.state == "authorising":
        return JSONResponse(body, status_code=202)
    if purchase.state != "failed":
        return JSONResponse(body, status_code=201)
    error: CaasError = PaymentFailed(
        purchase.failure_reason or "the payment failed",
        code="payment.declined"
        if purchase.failure_code == "card_declined"
        else f"payment.{purchase.failure_code or 'failed'}",
    )
    error.extra["purchase"] = body
    return JSONResponse(error.to_dict(), status_code=error.status)


@router.post(
    "/vehicles/{vin}/purchases",
    response_model=PurchaseRead,
    status_code=201,
    summary="Buy one or several options for your car",
    description="The payment is held on the card, the options go to the car and the money is "
    "taken when the car applies them (refunded, with the reason, when it refuses or does not "
    "apply them in time). 201 once paid (state `delivering`); 202 while the provider has not "
    "confirmed the payment: a retry with the same Idempotency-Key continues it, and never "
    "charges twice. A declined card answers 402 with the purchase in `details`; the "
    "validation answers of the quote apply, and then nothing is written.",
    responses={
        202: {"model": PurchaseRead, "description": "The provider has not confirmed yet"},
        **error_responses(401, 402, 403, 404, 409, 422, 503),
    },
)
def post_purchase(
    vin: Vin,
    body: PurchaseCreate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    provider: Provider,
    idempotency_key: IdempotencyKey = None,
    accept_language: AcceptLanguage = None,
) -> JSONResponse:
    purchase = purchases.begin_purchase(
        session,
        user=user,
        vin=vin,
        items=body.items,
        payment_method=body.payment_method,
        idempotency_key=check_key(idempotency_key),
        now=clock.now(),
    )
    # On record before any money moves: a timeout or a crash next leaves a row that a retry
    # with this key continues.
    session.commit()
    purchase = purchases.drive_purchase(
        session,
        purchase,
        provider=provider,
        actor=actor_of(user),
        now=clock.now(),
    )
    return _answer(session, purchase, _language(user, accept_language))


@router.get(
    "/vehicles/{vin}/purchases",
    response_model=list[PurchaseRead],
    summary="The purchases of your car, newest first",
    responses=error_responses(401, 403, 404),
)
def list_purchases(
    vin: Vin, session: DbSession, user: CustomerUser, accept_language: AcceptLanguage = None
) -> list[PurchaseRead]:
    _, vehicle = purchases.customer_car(session, user, vin)
    language = _language(user, accept_language)
    return [
        purchase_read(session, purchase, language)
        for purchase in purchases.purchases_of_car(session, vehicle.id)
    ]


@router.get(
    "/purchases/{purchase_id}",
    response_model=PurchaseRead,
    summary="One purchase: paid, delivering, active, or refunded with the reason",
    description="With its lines, the entitlements they became and the invoice number once "
    "the money is taken. Another customer's purchase answers 404.",
    responses=error_responses(401, 403, 404),
)
def get_purchase(
    purchase_id: PurchaseId,
    session: DbSession,
    user: CustomerUser,
    accept_language: AcceptLanguage = None,
) -> PurchaseRead:
    purchase = purchases.purchase_for(session, user, purchase_id)
    return purchase_read(session, purchase, _language(user, accept_language))
