"""Routes of upcoming charges: what the customer's cars will be charged, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from caas.accounts.deps import CustomerUser
from caas.core.api import ClockDep, DbSession, error_responses
from caas.store import upcoming
from caas.store.metering_api import Vin

router = APIRouter(prefix="/api/v1", tags=["store"])

Days = Annotated[
    int,
    Query(
        ge=1,
        le=upcoming.MAX_DAYS,
        description="How many days ahead to look",
        examples=[upcoming.DEFAULT_DAYS],
    ),
]


class UpcomingChargeRead(BaseModel):
    """One charge to come, VAT included, at today's prices."""

    kind: str = Field(
        description="renewal (a subscription), occurrence (a planned or recurring window) or "
        "metered (the month's pay per use, charged after the month ends)",
        examples=["renewal"],
    )
    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    code: str = Field(description="The option", examples=["power_boost"])
    feature: str = Field(description="The option's name in your language", examples=["Power"])
    due_at: datetime = Field(description="When it will be charged (UTC)")
    currency: str = Field(description="ISO 4217 currency", examples=["EUR"])
    net_minor: int = Field(description="Net, minor units", examples=[999])
    vat_minor: int = Field(description="VAT, minor units", examples=[210])
    gross_minor: int = Field(
        description="What will be charged, minor units, VAT included; for the metered month "
        "the estimate for the whole month at the pace so far (never above your cap)",
        examples=[1209],
    )
    so_far_gross_minor: int | None = Field(
        description="Metered month only: used so far, gross, minor units", examples=[605]
    )
    period_start: datetime | None = Field(description="Start of what it pays for (UTC)")
    period_end: datetime | None = Field(description="End of what it pays for (UTC)")


def _read(charges: list[upcoming.UpcomingCharge]) -> list[UpcomingChargeRead]:
    return [
        UpcomingChargeRead(
            kind=charge.kind,
            vin=charge.vin,
            code=charge.code,
            feature=charge.feature,
            due_at=charge.due_at,
            currency=charge.currency,
            net_minor=charge.net_minor,
            vat_minor=charge.vat_minor,
            gross_minor=charge.gross_minor,
            so_far_gross_minor=charge.so_far_gross_minor,
            period_start=charge.period_start,
            period_end=charge.period_end,
        )
        for charge in charges
    ]


@router.get(
    "/me/upcoming-charges",
    response_model=list[UpcomingChargeRead],
    summary="What your cars will be charged in the coming days, soonest first",
    description="Subscription renewals, scheduled windows charged one by one and the metered "
    "month, for every car you own. Customers only.",
    responses=error_responses(401, 403, 404, 422),
)
def my_upcoming_charges(
    session: DbSession, clock: ClockDep, user: CustomerUser, days: Days = upcoming.DEFAULT_DAYS
) -> list[UpcomingChargeRead]:
    return _read(upcoming.upcoming_charges(session, user=user, now=clock.now(), days=days))


@router.get(
    "/vehicles/{vin}/upcoming-charges",
    response_model=list[UpcomingChargeRead],
    summary="What one of your cars will be charged in the coming days, soonest first",
    description="For the car's owner; anyone else gets 404.",
    responses=error_responses(401, 403, 404, 422),
)
def car_upcoming_charges(
    vin: Vin,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    days: Days = upcoming.DEFAULT_DAYS,
) -> list[UpcomingChargeRead]:
    charges = upcoming.upcoming_charges(session, user=user, now=clock.now(), days=days, vin=vin)
    return _read(charges)
