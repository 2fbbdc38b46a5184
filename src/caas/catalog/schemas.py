"""Shapes of the public catalog: platform models, their options, prices and maintenance plan."""

from __future__ import annotations

from pydantic import BaseModel, Field

from caas.core.schemas import MoneyRead


class PriceRead(BaseModel):
    country: str = Field(description="ISO 3166-1 alpha-2", examples=["ES"])
    net: MoneyRead
    vat_rate_percent: str = Field(examples=["21.00"])
    vat: MoneyRead
    total: MoneyRead = Field(description="Net plus the country's VAT")


class PlatformPriceRead(PriceRead):
    maintenance_net: MoneyRead = Field(
        description="Scheduled maintenance for the whole service period, net, if included"
    )


class OptionRead(BaseModel):
    code: str = Field(examples=["driver_assist"])
    name: str = Field(examples=["Driver assistance"])
    description: str
    category: str = Field(examples=["safety"])
    needs_hardware: bool = Field(description="Uses hardware fitted at the factory")
    plan_prices: list[PriceRead] = Field(
        description="Price of including it for the whole service period, per country"
    )


class MaintenancePlanRead(BaseModel):
    every_km: int = Field(description="A service every this many kilometres...", examples=[20000])
    every_months: int = Field(description="...or every this many months, whichever comes first")


class PlatformRead(BaseModel):
    code: str = Field(examples=["AURA"])
    name: str = Field(examples=["Aura"])
    description: str
    software_version: str = Field(examples=["7.2.0"])
    maintenance_plan: MaintenancePlanRead
    prices: list[PlatformPriceRead] = Field(description="Base price per country")
    options: list[OptionRead] = Field(description="The options this platform supports")
    manual_url: str = Field(
        description="The owner's manual (PDF; needs a login); add `?lang=es` for Spanish",
        examples=["/api/v1/platforms/AURA/manual.pdf"],
    )
