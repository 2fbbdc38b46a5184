"""Two customers with a delivered car each (Spain and France), able to log in; the Spanish one
has an invoice for their order."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from caas.billing import invoices
from caas.billing.models import Invoice
from caas.billing.rules import LineDraft
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.sales.models import Customer, Sale
from tests.registration.support import let_customer_log_in
from tests.vehicles.cars import Fleet, owned_fleet


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock) -> Fleet:
    fleet = owned_fleet(db, settings=settings, now=clock.now(), country="ES")
    let_customer_log_in(db, fleet.order, clock.now())
    return fleet


@pytest.fixture
def other(db: Session, settings: Settings, clock: FixedClock) -> Fleet:
    fleet = owned_fleet(db, settings=settings, now=clock.now(), country="FR")
    let_customer_log_in(db, fleet.order, clock.now())
    return fleet


def invoice_for(db: Session, fleet: Fleet, clock: FixedClock) -> Invoice:
    """An advance invoice of the fleet's order, issued by billing (committed)."""
    sale = db.get_one(Sale, fleet.order.sale_id)
    customer = db.get_one(Customer, fleet.customer_id)
    invoice = invoices.issue(
        db,
        kind="advance",
        customer=customer,
        country=sale.country,
        lines=[LineDraft("Deposit", 100_000, 2_100, 21_000)],
        now=clock.now(),
        sale=sale,
    )
    db.commit()
    return invoice
