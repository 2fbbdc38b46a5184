"""Shapes of the maintenance API: recording a service and reading a car's services."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator


class ServiceRecordCreate(BaseModel):
    performed_at: AwareDatetime = Field(
        description="When the service was done, with its UTC offset; not in the future",
        examples=["2027-03-02T10:30:00+01:00"],
    )
    odometer_km: int = Field(
        ge=0,
        le=2_000_000,
        description="Odometer reading; never lower than the last recorded service",
        examples=[19850],
    )
    work_description: str = Field(
        min_length=3,
        max_length=2000,
        description="What the workshop did",
        examples=["12-month service: brakes, tyres, cabin filter, software 7.3.1"],
    )
    included_in_plan: bool | None = Field(
        default=None,
        description="Covered by the maintenance package; when omitted, what the car's sale says",
    )

    @field_validator("work_description")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if len(value) < 3:
            raise ValueError("describe the work done")
        return value


class ServiceRecordRead(BaseModel):
    id: int
    vin: str = Field(examples=["1M8GDM9AXKP042788"])
    performed_at: datetime
    odometer_km: int
    workshop: str = Field(description="Who recorded it", examples=["Walter Workshop"])
    work_description: str
    included_in_plan: bool
    created_at: datetime


class MaintenancePlanRead(BaseModel):
    every_km: int = Field(examples=[20000])
    every_months: int = Field(examples=[12])


class NextServiceRead(BaseModel):
    due_on: date = Field(description="Due by this date...")
    due_km: int = Field(description="...or at this odometer reading, whichever comes first")
    counted_from: Literal["delivery", "last_service"]


class VehicleServicesRead(BaseModel):
    vin: str
    plate: str | None
    platform: str = Field(examples=["AURA"])
    delivered_at: datetime | None
    plan: MaintenancePlanRead
    next_service: NextServiceRead | None = Field(
        description="Null while the car is neither delivered nor ever serviced"
    )
    status: Literal["compliant", "overdue"] | None = Field(
        description="Whether the car follows the plan now; null while it is not in service"
    )
    services: list[ServiceRecordRead] = Field(description="Newest first")
