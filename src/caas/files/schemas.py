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
    """The dealership that sold the car."""

    code: str = Field(description="Short code of the dealership", examples=["MAD01"])
    name: str = Field(description="Name of the dealership", examples=["caas Madrid Castellana"])
    city: str = Field(description="Town or city", examples=["Madrid"])
    address: str = Field(
        description="Postal address", examples=["Paseo de la Castellana 100, 28046 Madrid"]
    )


class PurchaseRead(BaseModel):
    """One sale of the customer, as closed at the dealer, with where it stands now."""

    id: int = Field(description="Database id of the order", examples=[1])
    number: str = Field(description="Order number", examples=["S2026-000001"])
    state: str = Field(description="Where the order stands (machine name)", examples=["in_transit"])
    state_label: str = Field(
        description="The state as people read it", examples=["On its way to you"]
    )
    created_at: datetime = Field(description="When the sale was closed, with UTC offset")
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
    quote: QuoteRead = Field(description="Lines, net, VAT and total as priced at the sale")
    paid: MoneyRead = Field(description="Captured so far, less refunds")
    outstanding: MoneyRead = Field(description="Still to pay")
    dealership: DealershipRead = Field(description="Who sold it")
    salesperson: str = Field(description="Who closed the sale", examples=["Lucía Fernández"])
    vin: str | None = Field(
        description="Once the factory has built the car", examples=["VCAAURA02TM000001"]
    )
    plate: str | None = Field(description="Once the car is registered", examples=["1234 BCD"])


class ManualLink(BaseModel):
    """Where to read the owner's manual of a model the customer bought."""

    platform: str = Field(description="Code of the platform model", examples=["AURA"])
    platform_name: str = Field(description="Name of the platform model", examples=["Aura"])
    language: str = Field(description="Language the link asks for", examples=["es"])
    url: str = Field(
        description="The manual as a PDF (needs a login)",
        examples=["/api/v1/platforms/AURA/manual.pdf?lang=es"],
    )


class TimelineEntryRead(BaseModel):
    """One change in the customer's file, with its time and who made it."""

    at: datetime = Field(description="When it happened, with UTC offset")
    event: str = Field(description="What happened", examples=["order.shipped"])
    subject: str = Field(description="What changed: order, vehicle, payment...", examples=["order"])
    actor: str = Field(
        description="Who did it: the kind of actor, then their e-mail or name",
        examples=["factory: factory"],
    )
    actor_kind: str = Field(
        description="customer, dealer, operator, workshop, factory, registry, provider or system",
        examples=["factory"],
    )
    from_state: str | None = Field(
        description="State before; null when nothing changed state", examples=["paint"]
    )
    to_state: str | None = Field(
        description="State after; null when nothing changed state", examples=["shipped"]
    )
    to_state_label: str | None = Field(description="For order moves: the state as people read it")
    details: dict[str, Any] = Field(
        description="Facts of the change, varying per event",
        examples=[{"stage": "shipped", "sequence": 7, "factory_reference": "FO-8F3A2C91"}],
    )


class CustomerFileRead(BaseModel):
    """Everything the customer has with the maker, in one place."""

    customer: CustomerRead = Field(description="Who the file belongs to")
    purchases: list[PurchaseRead] = Field(description="Newest first")
    manuals: list[ManualLink] = Field(description="One per model bought")
    maintenance: list[VehicleServicesRead] = Field(description="Per car: services and what is due")
    invoices: list[InvoiceSummary] = Field(description="Oldest first, each with its PDF link")
    timeline: list[TimelineEntryRead] = Field(description="Every change, oldest first")
