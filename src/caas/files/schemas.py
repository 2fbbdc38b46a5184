"""Shapes of the customer's file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from caas.billing.schemas import InvoiceSummary
from caas.core.schemas import MoneyRead
from caas.maintenance.schemas import VehicleServicesRead
from caas.sales.schemas import CustomerRead, QuoteRead


class DealershipRead(BaseModel):
    code: str = Field(examples=["MAD01"])
    name: str = Field(examples=["caas Madrid Castellana"])
    city: str = Field(examples=["Madrid"])
    address: str


class PurchaseRead(BaseModel):
    """One sale of the customer, as closed at the dealer, with where it stands now."""

    id: int
    number: str = Field(examples=["S2026-000001"])
    state: str = Field(examples=["in_transit"])
    state_label: str = Field(examples=["On its way to you"])
    created_at: datetime
    platform: str = Field(examples=["AURA"])
    platform_name: str = Field(examples=["Aura"])
    features: list[str] = Field(description="Options included for the whole service period")
    service_period_months: int
    maintenance_included: bool
    quote: QuoteRead = Field(description="Lines, net, VAT and total as priced at the sale")
    paid: MoneyRead = Field(description="Captured so far, less refunds")
    outstanding: MoneyRead = Field(description="Still to pay")
    dealership: DealershipRead
    salesperson: str
    vin: str | None = Field(description="Once the factory has built the car")
    plate: str | None = Field(description="Once the car is registered")


class ManualLink(BaseModel):
    platform: str = Field(examples=["AURA"])
    platform_name: str = Field(examples=["Aura"])
    language: str = Field(description="Language the link asks for", examples=["es"])
    url: str = Field(examples=["/api/v1/platforms/AURA/manual.pdf?lang=es"])


class TimelineEntryRead(BaseModel):
    at: datetime
    event: str = Field(examples=["order.shipped"])
    subject: str = Field(description="What changed: order, vehicle, payment...", examples=["order"])
    actor: str = Field(examples=["factory: factory"])
    actor_kind: str = Field(examples=["factory"])
    from_state: str | None
    to_state: str | None
    to_state_label: str | None = Field(description="For order moves: the state as people read it")
    details: dict[str, Any]


class CustomerFileRead(BaseModel):
    """Everything the customer has with the maker, in one place."""

    customer: CustomerRead
    purchases: list[PurchaseRead] = Field(description="Newest first")
    manuals: list[ManualLink] = Field(description="One per model bought")
    maintenance: list[VehicleServicesRead] = Field(description="Per car: services and what is due")
    invoices: list[InvoiceSummary] = Field(description="Oldest first, each with its PDF link")
    timeline: list[TimelineEntryRead] = Field(description="Every change, oldest first")
