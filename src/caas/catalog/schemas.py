"""Shapes of the public catalog: platform models, their options, prices and maintenance plan."""

from __future__ import annotations

from pydantic import BaseModel, Field

from caas.core.schemas import MoneyRead


class PriceRead(BaseModel):
    """A net price in one country, with that country's VAT."""

    country: str = Field(description="ISO 3166-1 alpha-2", examples=["ES"])
    net: MoneyRead = Field(description="Price without VAT, in the country's currency")
    vat_rate_percent: str = Field(description="The country's VAT rate", examples=["21.00"])
    vat: MoneyRead = Field(description="VAT on the net price, rounded half up")
    total: MoneyRead = Field(description="Net plus the country's VAT")


class PlatformPriceRead(PriceRead):
    """The base price of a platform model in one country."""

    maintenance_net: MoneyRead = Field(
        description="Scheduled maintenance for the whole service period, net, if included"
    )


class OptionRead(BaseModel):
    """An option a platform supports."""

    code: str = Field(description="Stable code of the option", examples=["driver_assist"])
    name: str = Field(description="Name shown to people", examples=["Driver assistance"])
    description: str = Field(
        description="What the option does, for the customer",
        examples=["Driver assistance for the Aura."],
    )
    category: str = Field(
        description="Kind of option, e.g. performance, safety, autonomy, traction, comfort",
        examples=["safety"],
    )
    needs_hardware: bool = Field(description="Uses hardware fitted at the factory")
    plan_prices: list[PriceRead] = Field(
        description="Price of including it for the whole service period, per country"
    )


class MaintenancePlanRead(BaseModel):
    """How often a platform model is serviced."""

    every_km: int = Field(description="A service every this many kilometres...", examples=[20000])
    every_months: int = Field(
        description="...or every this many months, whichever comes first", examples=[12]
    )


class PlatformRead(BaseModel):
    """A platform model of the catalog: its options, maintenance plan and prices."""

    code: str = Field(description="Stable code of the model", examples=["AURA"])
    name: str = Field(description="Name shown to people", examples=["Aura"])
    description: str = Field(
        description="The model in a sentence or two, for the customer",
        examples=["Compact electric hatchback for the city and beyond."],
    )
    software_version: str = Field(
        description="Software the factory installs on new cars", examples=["7.2.0"]
    )
    maintenance_plan: MaintenancePlanRead = Field(description="How often the model is serviced")
    prices: list[PlatformPriceRead] = Field(description="Base price per country")
    options: list[OptionRead] = Field(description="The options this platform supports")
    manual_url: str = Field(
        description="The owner's manual (PDF; needs a login); add `?lang=es` for Spanish",
        examples=["/api/v1/platforms/AURA/manual.pdf"],
    )
