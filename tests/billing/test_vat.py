"""VAT from the table of rates: a change applies from its day, in the country's own calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from caas.billing import invoices, rules, service, vat
from caas.catalog.models import VatRate
from caas.core.clock import FixedClock
from caas.core.errors import Conflict
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.sales.schemas import CommercialPlan
from tests.billing.conftest import buyer

ACTOR = Actor(kind="customer", label="test")
# Midnight of 1 January 2027 in Madrid is 23:00 UTC the day before.
LAST_MINUTE_AT_21 = datetime(2026, 12, 31, 22, 59, tzinfo=UTC)
FIRST_MINUTE_AT_22 = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
PLAN = CommercialPlan(
    platform="AURA", features=["driver_assist"], service_period_months=48, maintenance_included=True
)


def _raise_spanish_vat(db: Session) -> None:
    db.add(VatRate(country="ES", valid_from=date(2027, 1, 1), rate_bp=2200))
    db.flush()


def test_the_seeded_rates_are_the_countries_rates(db: Session) -> None:
    at = datetime(2026, 6, 1, tzinfo=UTC)
    rates = {country: vat.rate_at(db, country, at) for country in rules.COUNTRY_ZONES}
    assert rates == {"ES": 2100, "FR": 2000, "DE": 1900, "IT": 2200, "PT": 2300}


def test_a_rate_change_applies_from_midnight_of_its_day_in_the_country(db: Session) -> None:
    _raise_spanish_vat(db)
    assert vat.rate_at(db, "ES", LAST_MINUTE_AT_21) == 2100
    assert vat.rate_at(db, "ES", FIRST_MINUTE_AT_22) == 2200
    # Lisbon is an hour behind Madrid: still 2026 there, and Portugal's rate is untouched.
    assert vat.rate_at(db, "PT", FIRST_MINUTE_AT_22) == 2300


def test_no_rate_before_the_first_one_is_a_conflict(db: Session) -> None:
    with pytest.raises(Conflict):
        vat.rate_at(db, "ES", datetime(1999, 12, 31, 12, tzinfo=UTC))


def test_a_sale_quoted_the_day_before_and_the_day_after_gets_different_vat(db: Session) -> None:
    _raise_spanish_vat(db)
    before = sales.price_plan(db, country_code="ES", plan=PLAN, at=LAST_MINUTE_AT_21)
    after = sales.price_plan(db, country_code="ES", plan=PLAN, at=FIRST_MINUTE_AT_22)
    assert (before.vat_rate_bp, after.vat_rate_bp) == (2100, 2200)
    assert before.net.amount_minor == after.net.amount_minor
    assert after.vat.amount_minor > before.vat.amount_minor


def test_store_invoices_keep_the_rate_of_the_day_the_purchase_was_priced(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    who = buyer(db, settings, clock)
    _raise_spanish_vat(db)
    customer = db.get_one(Customer, who.customer.id)
    issued = []
    for key, at in (("vat-before-0001", LAST_MINUTE_AT_21), ("vat-after-0001", FIRST_MINUTE_AT_22)):
        line = rules.priced_line("Winter traction, 1 month", 1_000, vat.rate_at(db, "ES", at))
        payment = service.begin_store_payment(
            db,
            customer_id=customer.id,
            kind="option",
            lines=[line],
            currency="EUR",
            country="ES",
            payment_method="tok_unused",
            idempotency_key=key,
            actor=ACTOR,
            now=at,
        )
        # Both invoiced after the change: each keeps the rate its purchase was priced at.
        invoice = invoices.issue_for_store_payment(
            db, payment=payment, customer=customer, now=FIRST_MINUTE_AT_22
        )
        issued.append(invoice)
    rates = [[line.vat_rate_bp for line in invoices.invoice_lines(db, i.id)] for i in issued]
    assert rates == [[2100], [2200]]
    assert [i.gross_minor for i in issued] == [1_210, 1_220]
