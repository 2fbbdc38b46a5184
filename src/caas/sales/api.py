"""Routes of the sale: quote, close, list and read orders, and their history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from caas.accounts.deps import CurrentUser, Dealer
from caas.core.api import ClockDep, DbSession, SettingsDep, display_language, error_responses
from caas.core.history import subject_history
from caas.core.idempotency import once
from caas.sales import service
from caas.sales.read import quote_read, sale_read, sale_summary
from caas.sales.schemas import (
    QuoteCreate,
    QuoteRead,
    SaleCreate,
    SaleRead,
    SaleSummary,
    TimelineEntry,
)

router = APIRouter(prefix="/api/v1", tags=["sales"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]
SaleId = Annotated[int, Path(description="Database id of the order", examples=[1])]


class SalePage(BaseModel):
    """One page of the orders the caller may see."""

    total: int = Field(description="How many orders match (all pages)", examples=[1])
    items: list[SaleSummary] = Field(description="Newest first")


@router.post(
    "/quotes",
    response_model=QuoteRead,
    summary="Price a commercial plan in a country (net, VAT, total, deposit)",
    responses=error_responses(401, 403, 422),
)
def create_quote(
    body: QuoteCreate,
    session: DbSession,
    user: Dealer,
    clock: ClockDep,
    accept_language: Annotated[
        str | None,
        Header(
            description="Language to format the amounts in (`es`, `en`...); the user's own when"
            " absent or not one the platform speaks",
            examples=["es"],
        ),
    ] = None,
) -> QuoteRead:
    priced = service.price_plan(session, country_code=body.country, plan=body.plan, at=clock.now())
    return quote_read(priced, display_language(accept_language, user.language))


@router.post(
    "/sales",
    response_model=SaleRead,
    status_code=201,
    summary="Close a sale: customer, plan, account and activation e-mail in one step",
    responses=error_responses(401, 403, 409, 422),
)
def create_sale(
    body: SaleCreate,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: Dealer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        sale = service.create_sale(
            session,
            salesperson=user,
            identity=body.customer,
            plan=body.plan,
            settings=settings,
            now=now,
        )
        return sale_read(session, sale, user.language).model_dump(mode="json")

    response = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation="sales.create",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
    return JSONResponse(response, status_code=201)


@router.get(
    "/sales",
    response_model=SalePage,
    summary="Orders the caller may see: a dealer its dealership's, a customer their own",
    responses=error_responses(401),
)
def list_sales(
    session: DbSession,
    user: CurrentUser,
    search: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Part of the order number, or of the customer's name, e-mail or "
            "national id",
            examples=["García"],
        ),
    ] = None,
    state: Annotated[
        str | None,
        Query(max_length=40, description="Only orders in this state", examples=["at_dealer"]),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many")] = 50,
    offset: Annotated[int, Query(ge=0, description="Skip this many first (paging)")] = 0,
) -> SalePage:
    sales, total = service.list_sales(
        session, user, service.SaleFilter(search=search, state=state, limit=limit, offset=offset)
    )
    return SalePage(total=total, items=[sale_summary(session, s, user.language) for s in sales])


@router.get(
    "/sales/{sale_id}",
    response_model=SaleRead,
    summary="One order with its plan, quote and state",
    responses=error_responses(401, 404),
)
def get_sale(sale_id: SaleId, session: DbSession, user: CurrentUser) -> SaleRead:
    sale = service.get_sale_for(session, user, sale_id)
    return sale_read(session, sale, user.language)


@router.get(
    "/sales/{sale_id}/history",
    response_model=list[TimelineEntry],
    summary="Every state change of the order, with time and actor",
    responses=error_responses(401, 404),
)
def sale_history(sale_id: SaleId, session: DbSession, user: CurrentUser) -> list[TimelineEntry]:
    sale = service.get_sale_for(session, user, sale_id)
    return [
        TimelineEntry(
            at=entry.at,
            event=entry.event,
            from_state=entry.from_state,
            to_state=entry.to_state,
            actor=f"{entry.actor_kind}: {entry.actor_label}",
            details=entry.details,
        )
        for entry in subject_history(session, "order", sale.id)
    ]
