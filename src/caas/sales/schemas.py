"""Shapes of the sales API: the customer's identity, the commercial plan, quotes and orders."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caas.core.schemas import MoneyRead
from caas.sales import identity

CountryCode = Literal["ES", "FR", "DE", "IT", "PT"]


class CustomerIdentity(BaseModel):
    """Who buys. `country` comes first: the other fields are checked for that country."""

    country: CountryCode = Field(
        description="Country of residence (ISO 3166-1 alpha-2); sets VAT, registry and plate",
        examples=["ES"],
    )
    first_name: str = Field(
        min_length=1, max_length=100, description="Given name", examples=["Ana"]
    )
    last_name: str = Field(
        min_length=1,
        max_length=100,
        description="Family name(s), as on the identity document",
        examples=["García López"],
    )
    national_id: str = Field(
        max_length=40,
        description="ES DNI/NIE, FR NIR, DE Steuer-IdNr, IT codice fiscale, PT NIF; checked "
        "for `country` and kept in its compact form",
        examples=["12345678Z"],
    )
    email: str = Field(
        max_length=254,
        description="Where the activation link and every notification go; kept in lower case",
        examples=["ana.garcia@example.es"],
    )
    phone: str = Field(
        max_length=30,
        description="Phone number, international or national to `country`; kept as E.164",
        examples=["+34 612 345 678"],
    )
    street: str = Field(
        min_length=3,
        max_length=200,
        description="Street, number, floor and door",
        examples=["Calle Mayor 1, 3º B"],
    )
    postal_code: str = Field(
        max_length=20,
        description="Postal code in the format of `country`",
        examples=["28013"],
    )
    city: str = Field(min_length=1, max_length=120, description="Town or city", examples=["Madrid"])
    language: Literal["es", "en", "fr", "de", "it", "pt"] | None = Field(
        default=None,
        description="Language of e-mails and pages; the country's language when omitted",
        examples=["es"],
    )

    @field_validator("first_name", "last_name", "street", "city")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value

    @field_validator("national_id")
    @classmethod
    def _national_id(cls, value: str, info: ValidationInfo) -> str:
        country = info.data.get("country")
        return identity.normalise_national_id(country, value) if country else value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return identity.normalise_email(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str, info: ValidationInfo) -> str:
        country = info.data.get("country")
        return identity.normalise_phone(country, value) if country else value

    @field_validator("postal_code")
    @classmethod
    def _postal_code(cls, value: str, info: ValidationInfo) -> str:
        country = info.data.get("country")
        return identity.normalise_postal_code(country, value) if country else value


class CommercialPlan(BaseModel):
    """What the customer buys: a platform model, options for the whole period, maintenance."""

    platform: str = Field(description="Code of the platform model", examples=["AURA"])
    features: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Codes of options included for the whole service period",
        examples=[["driver_assist"]],
    )
    service_period_months: int = Field(
        ge=12, le=120, description="Length of the service period, in months", examples=[48]
    )
    maintenance_included: bool = Field(
        description="Scheduled maintenance included in the price", examples=[True]
    )

    @field_validator("features")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an option is listed twice")
        return value


class QuoteCreate(BaseModel):
    """A commercial plan to price in a country, before closing the sale."""

    country: CountryCode = Field(
        description="Country of the customer (ISO 3166-1 alpha-2): its prices, VAT and deposit",
        examples=["ES"],
    )
    plan: CommercialPlan = Field(description="What the customer buys")


class SaleCreate(BaseModel):
    """A sale closed at the dealership: who buys and what."""

    customer: CustomerIdentity = Field(
        description="Who buys; a customer already known by national id and country is reused "
        "(with the same e-mail)"
    )
    plan: CommercialPlan = Field(description="What the customer buys")


class QuoteLineRead(BaseModel):
    """One priced line of a quote."""

    description: str = Field(description="What the line is for", examples=["Aura base platform"])
    net: MoneyRead = Field(description="Price of the line without VAT")


class QuoteRead(BaseModel):
    """A priced plan: lines, VAT of the customer's country, total and the deposit due."""

    lines: list[QuoteLineRead] = Field(
        description="Base platform, each included option, maintenance if included"
    )
    vat_rate_percent: str = Field(description="VAT rate of the country", examples=["21.00"])
    net: MoneyRead = Field(description="Sum of the lines, without VAT")
    vat: MoneyRead = Field(description="VAT, rounded half up on each line")
    total: MoneyRead = Field(description="Net plus VAT: what the customer pays in all")
    deposit: MoneyRead = Field(
        description="Paid first to reserve the car: the country's share of the total"
    )


class CustomerRead(BaseModel):
    """A customer's identity and address, as the sale and later corrections left them."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Database id of the customer", examples=[7])
    first_name: str = Field(description="Given name", examples=["Ana"])
    last_name: str = Field(description="Family name(s)", examples=["García López"])
    national_id: str = Field(
        description="National id, in its compact form, valid for `country`",
        examples=["12345678Z"],
    )
    email: str = Field(description="E-mail, lower case", examples=["ana.garcia@example.es"])
    phone: str = Field(description="Phone number, E.164", examples=["+34612345678"])
    street: str = Field(description="Street, number, floor and door", examples=["Calle Mayor 1"])
    postal_code: str = Field(description="Postal code", examples=["28013"])
    city: str = Field(description="Town or city", examples=["Madrid"])
    country: str = Field(description="Country of residence, ISO 3166-1 alpha-2", examples=["ES"])
    language: str = Field(
        description="Language of the customer's e-mails and pages (ISO 639-1)", examples=["es"]
    )


class SaleRead(BaseModel):
    """An order: the sale as closed at the dealership, and where it stands now."""

    id: int = Field(description="Database id of the order", examples=[1])
    number: str = Field(
        description="Order number: `S`, the year and the id", examples=["S2026-000001"]
    )
    state: str = Field(description="Where the order stands (machine name)", examples=["paint"])
    state_label: str = Field(description="The state as people read it", examples=["Paint shop"])
    dealership: str = Field(
        description="Name of the dealership that sold it", examples=["caas Madrid Castellana"]
    )
    salesperson: str = Field(description="Who closed the sale", examples=["Lucía Fernández"])
    customer: CustomerRead = Field(description="Who bought it")
    platform: str = Field(description="Code of the platform model", examples=["AURA"])
    platform_name: str = Field(description="Name of the platform model", examples=["Aura"])
    features: list[str] = Field(
        description="Codes of the options included for the whole service period",
        examples=[["driver_assist"]],
    )
    service_period_months: int = Field(
        description="Length of the service period, in months", examples=[48]
    )
    maintenance_included: bool = Field(description="Scheduled maintenance included in the price")
    quote: QuoteRead = Field(description="Lines, net, VAT, total and deposit as priced at the sale")
    created_at: datetime = Field(description="When the sale was closed, with UTC offset")
    updated_at: datetime = Field(description="When the order last changed, with UTC offset")


class SaleSummary(BaseModel):
    """One line of the order list."""

    id: int = Field(description="Database id of the order", examples=[1])
    number: str = Field(description="Order number", examples=["S2026-000001"])
    state: str = Field(description="Where the order stands (machine name)", examples=["paint"])
    state_label: str = Field(description="The state as people read it", examples=["Paint shop"])
    customer_name: str = Field(
        description="The customer's full name", examples=["Ana García López"]
    )
    platform: str = Field(description="Name of the platform model", examples=["Aura"])
    total: MoneyRead = Field(description="What the customer pays in all, VAT included")
    created_at: datetime = Field(description="When the sale was closed, with UTC offset")


class TimelineEntry(BaseModel):
    """One change of an order, with its time and who made it."""

    at: datetime = Field(description="When it happened, with UTC offset")
    event: str = Field(description="What happened", examples=["order.shipped"])
    from_state: str | None = Field(
        description="State before; null for a creation", examples=["paint"]
    )
    to_state: str | None = Field(description="State after", examples=["assembly"])
    actor: str = Field(
        description="Who did it: the kind of actor, then their e-mail or name",
        examples=["factory: factory"],
    )
    details: dict[str, object] = Field(
        description="Facts of the change, varying per event",
        examples=[{"stage": "shipped", "sequence": 7, "factory_reference": "FO-8F3A2C91"}],
    )
