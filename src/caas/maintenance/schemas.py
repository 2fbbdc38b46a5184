"""Shapes of the maintenance API: recording a service and reading a car's services."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator


class ServiceRecordCreate(BaseModel):
    """A service a workshop has performed on a car."""

    performed_at: AwareDatetime = Field(
        description="When the service was done, with its UTC offset; not in the future, nor "
        "before the car was built or the last recorded service",
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
        description="Covered by the maintenance package; when omitted, covered if the sale "
        "included maintenance and the service falls within the service period",
        examples=[True],
    )

    @field_validator("work_description")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if len(value) < 3:
            raise ValueError("describe the work done")
        return value


class ServiceRecordRead(BaseModel):
    """A service recorded on a car."""

    id: int = Field(description="Database id of the service record", examples=[5])
    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    performed_at: datetime = Field(description="When the service was done, with UTC offset")
    odometer_km: int = Field(description="Odometer reading at the service", examples=[19850])
    workshop: str = Field(description="Who recorded it", examples=["Walter Workshop"])
    work_description: str = Field(
        description="What the workshop did",
        examples=["12-month service: brakes, tyres, cabin filter, software 7.3.1"],
    )
    included_in_plan: bool = Field(description="Covered by the maintenance package")
    created_at: datetime = Field(description="When it was recorded, with UTC offset")


class MaintenancePlanRead(BaseModel):
    """How often the car's model is serviced."""

    every_km: int = Field(description="A service every this many kilometres...", examples=[20000])
    every_months: int = Field(
        description="...or every this many months, whichever comes first", examples=[12]
    )


class NextServiceRead(BaseModel):
    """When the next service is due."""

    due_on: date = Field(description="Due by this date...")
    due_km: int = Field(description="...or at this odometer reading, whichever comes first")
    counted_from: Literal["delivery", "last_service"] = Field(
        description="Counted from the last recorded service or, before the first one, from "
        "delivery (at 0 km)"
    )


class VehicleServicesRead(BaseModel):
    """A car's maintenance: its plan, its services and what is due next."""

    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    plate: str | None = Field(description="Number plate, once registered", examples=["1234 BCD"])
    platform: str = Field(description="Code of the platform model", examples=["AURA"])
    delivered_at: datetime | None = Field(
        description="When the car was handed over to the customer, with UTC offset; null before"
    )
    plan: MaintenancePlanRead = Field(description="The model's maintenance plan")
    next_service: NextServiceRead | None = Field(
        description="Null while the car is neither delivered nor ever serviced"
    )
    status: Literal["compliant", "overdue"] | None = Field(
        description="Whether the car follows the plan now (by date, and by `odometer_km`); "
        "null while it is not in service"
    )
    odometer_km: int | None = Field(
        description="The highest odometer reading known, in km: the car's latest telemetry, or "
        "the last service's when higher; null while neither exists",
        examples=[21450],
    )
    services: list[ServiceRecordRead] = Field(description="Newest first")
