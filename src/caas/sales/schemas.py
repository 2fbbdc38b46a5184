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

    country: CountryCode = Field(description="Country of residence; sets VAT, registry, plate")
    first_name: str = Field(min_length=1, max_length=100, examples=["Ana"])
    last_name: str = Field(min_length=1, max_length=100, examples=["García López"])
    national_id: str = Field(
        max_length=40,
        description="ES DNI/NIE, FR NIR, DE Steuer-IdNr, IT codice fiscale, PT NIF",
        examples=["12345678Z"],
    )
    email: str = Field(max_length=254, examples=["ana.garcia@example.es"])
    phone: str = Field(max_length=30, examples=["+34 612 345 678"])
    street: str = Field(min_length=3, max_length=200, examples=["Calle Mayor 1, 3º B"])
    postal_code: str = Field(max_length=20, examples=["28013"])
    city: str = Field(min_length=1, max_length=120, examples=["Madrid"])
    language: Literal["es", "en", "fr", "de", "it", "pt"] | None = Field(
        default=None, description="Language of e-mails; the country's language when omitted"
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
    platform: str = Field(description="Code of the platform model", examples=["AURA"])
    features: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Codes of options included for the whole service period",
        examples=[["driver_assist"]],
    )
    service_period_months: int = Field(
        ge=12, le=120, description="Length of the service period", examples=[48]
    )
    maintenance_included: bool = Field(description="Scheduled maintenance included in the price")

    @field_validator("features")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an option is listed twice")
        return value


class QuoteCreate(BaseModel):
    country: CountryCode
    plan: CommercialPlan


class SaleCreate(BaseModel):
    customer: CustomerIdentity
    plan: CommercialPlan


class QuoteLineRead(BaseModel):
    description: str
    net: MoneyRead


class QuoteRead(BaseModel):
    lines: list[QuoteLineRead]
    vat_rate_percent: str = Field(examples=["21.00"])
    net: MoneyRead
    vat: MoneyRead
    total: MoneyRead
    deposit: MoneyRead


class CustomerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    first_name: str
    last_name: str
    national_id: str
    email: str
    phone: str
    street: str
    postal_code: str
    city: str
    country: str
    language: str


class SaleRead(BaseModel):
    id: int
    number: str
    state: str
    state_label: str
    dealership: str
    salesperson: str
    customer: CustomerRead
    platform: str
    platform_name: str
    features: list[str]
    service_period_months: int
    maintenance_included: bool
    quote: QuoteRead
    created_at: datetime
    updated_at: datetime


class SaleSummary(BaseModel):
    id: int
    number: str
    state: str
    state_label: str
    customer_name: str
    platform: str
    total: MoneyRead
    created_at: datetime


class TimelineEntry(BaseModel):
    at: datetime
    event: str
    from_state: str | None
    to_state: str | None
    actor: str
    details: dict[str, object]
