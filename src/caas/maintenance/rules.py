"""The maintenance plan's arithmetic: when the next service is due and whether a car is late.

A model is serviced every N km or M months, whichever comes first, counted from the last
service or, before the first one, from delivery (at 0 km). Pure functions: no database.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Literal

Compliance = Literal["compliant", "overdue"]


@dataclass(frozen=True, slots=True)
class ServicePlan:
    every_km: int
    every_months: int


@dataclass(frozen=True, slots=True)
class ServicePoint:
    """Where a car stood at a moment that restarts the plan: a service, or its delivery."""

    on: date
    odometer_km: int


@dataclass(frozen=True, slots=True)
class NextService:
    due_on: date
    due_km: int
    counted_from: Literal["delivery", "last_service"]


def add_months(day: date, months: int) -> date:
    """The same day `months` later; the month's last day when that day does not exist."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_service(
    plan: ServicePlan, *, delivered: date | None, last_service: ServicePoint | None
) -> NextService | None:
    """When the next service is due; None for a car neither delivered nor ever serviced."""
    if last_service is not None:
        return NextService(
            due_on=add_months(last_service.on, plan.every_months),
            due_km=last_service.odometer_km + plan.every_km,
            counted_from="last_service",
        )
    if delivered is not None:
        return NextService(
            due_on=add_months(delivered, plan.every_months),
            due_km=plan.every_km,
            counted_from="delivery",
        )
    return None


def compliance(due: NextService, *, today: date, odometer_km: int | None) -> Compliance:
    """Overdue once the due date has passed or the car has driven past the due distance."""
    if today > due.due_on:
        return "overdue"
    if odometer_km is not None and odometer_km > due.due_km:
        return "overdue"
    return "compliant"


def follows_plan(
    plan: ServicePlan,
    *,
    delivered: date | None,
    last_service: ServicePoint | None,
    today: date,
    odometer_km: int | None,
) -> bool:
    """Whether the car follows the official plan right now (options may require it).

    A car not yet in service follows it trivially.
    """
    due = next_service(plan, delivered=delivered, last_service=last_service)
    return due is None or compliance(due, today=today, odometer_km=odometer_km) == "compliant"
