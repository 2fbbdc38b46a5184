"""The maintenance plan's arithmetic, without a database."""

from __future__ import annotations

from datetime import date

import pytest

from caas.maintenance.rules import (
    NextService,
    ServicePlan,
    ServicePoint,
    add_months,
    compliance,
    follows_plan,
    next_service,
)

AURA = ServicePlan(every_km=20_000, every_months=12)


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 15), 12, date(2027, 1, 15)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 6, 1), 24, date(2028, 6, 1)),
    ],
)
def test_adding_months_keeps_the_day_or_takes_the_months_last(
    day: date, months: int, expected: date
) -> None:
    assert add_months(day, months) == expected


def test_first_service_is_counted_from_delivery_at_zero_km() -> None:
    due = next_service(AURA, delivered=date(2026, 3, 10), last_service=None)
    assert due == NextService(due_on=date(2027, 3, 10), due_km=20_000, counted_from="delivery")


def test_later_services_are_counted_from_the_last_one() -> None:
    last = ServicePoint(on=date(2027, 2, 1), odometer_km=18_500)
    due = next_service(AURA, delivered=date(2026, 3, 10), last_service=last)
    assert due == NextService(due_on=date(2028, 2, 1), due_km=38_500, counted_from="last_service")


def test_a_car_not_yet_delivered_nor_serviced_has_no_service_due() -> None:
    assert next_service(AURA, delivered=None, last_service=None) is None
    assert follows_plan(
        AURA, delivered=None, last_service=None, today=date(2030, 1, 1), odometer_km=None
    )


def test_overdue_by_date_or_by_distance_whichever_comes_first() -> None:
    due = NextService(due_on=date(2027, 3, 10), due_km=20_000, counted_from="delivery")
    assert compliance(due, today=date(2027, 3, 10), odometer_km=20_000) == "compliant"
    assert compliance(due, today=date(2027, 3, 11), odometer_km=5_000) == "overdue"
    assert compliance(due, today=date(2026, 9, 1), odometer_km=20_001) == "overdue"
    assert compliance(due, today=date(2026, 9, 1), odometer_km=None) == "compliant"


def test_a_car_follows_the_plan_while_its_next_service_is_not_overdue() -> None:
    delivered = date(2026, 3, 10)
    assert follows_plan(
        AURA, delivered=delivered, last_service=None, today=date(2027, 1, 1), odometer_km=12_000
    )
    assert not follows_plan(
        AURA, delivered=delivered, last_service=None, today=date(2027, 4, 1), odometer_km=12_000
    )
    serviced = ServicePoint(on=date(2027, 4, 2), odometer_km=13_000)
    assert follows_plan(
        AURA, delivered=delivered, last_service=serviced, today=date(2027, 5, 1), odometer_km=None
    )
