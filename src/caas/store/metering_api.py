"""Route of pay per use: what the owner's car has spent on metered options this month."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from caas.accounts.deps import CustomerUser
from caas.core.api import ClockDep, DbSession, error_responses
from caas.store import metering

router = APIRouter(prefix="/api/v1", tags=["store"])

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


class UsageLineRead(BaseModel):
    code: str = Field(description="The metered option", examples=["power_boost"])
    unit: str = Field(description="What is counted: hour, km or activation", examples=["hour"])
    quantity: str = Field(description="How much was used this month", examples=["37"])
    unit_price_minor: int = Field(description="Net price of one unit, minor units", examples=[150])
    net_minor: int = Field(description="Net so far, minor units", examples=[5550])
    vat_rate_bp: int = Field(description="VAT rate in basis points", examples=[2100])
    vat_minor: int = Field(description="VAT so far, minor units", examples=[1166])
    gross_minor: int = Field(description="Gross so far, minor units", examples=[6716])
    spending_cap_minor: int | None = Field(
        description="The owner's monthly cap (gross), if any", examples=[10000]
    )


class UsageRead(BaseModel):
    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    month: str = Field(description="The month, in the owner's zone (YYYY-MM)", examples=["2026-11"])
    currency: str = Field(description="ISO 4217 currency", examples=["EUR"])
    gross_minor: int = Field(description="Total so far this month, gross", examples=[6716])
    lines: list[UsageLineRead] = Field(description="One line per option and unit price")


@router.get(
    "/vehicles/{vin}/usage",
    response_model=UsageRead,
    summary="What your car's pay-per-use options have cost so far this month",
    description="For the car's owner; anyone else gets 404. Amounts include VAT per line.",
    responses=error_responses(401, 403, 404, 422),
)
def month_usage(vin: Vin, session: DbSession, clock: ClockDep, user: CustomerUser) -> UsageRead:
    usage = metering.usage_of(session, user=user, vin=vin, now=clock.now())
    return UsageRead(
        vin=usage.vin,
        month=usage.month,
        currency=usage.currency,
        gross_minor=usage.gross_minor,
        lines=[
            UsageLineRead(
                code=line.code,
                unit=line.unit,
                quantity=str(line.quantity),
                unit_price_minor=line.unit_price_minor,
                net_minor=line.priced.net_minor,
                vat_rate_bp=line.priced.vat_rate_bp,
                vat_minor=line.priced.vat_minor,
                gross_minor=line.priced.gross_minor,
                spending_cap_minor=line.spending_cap_minor,
            )
            for line in usage.lines
        ],
    )
