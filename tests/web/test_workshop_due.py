"""The workshop's home page lists the cars due or overdue for service in its area: the owner
lives in the workshop's country and postal-code area (the demo workshop user works at Taller
Norte, Madrid 28020). The clock stands at 2026-01-15; the plan is every 12 months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import Role
from caas.accounts.service import create_user
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from tests.files.customers import SoldCustomer, car_for, sold_customer
from tests.web.support import log_in, text_of

WORKSHOP = "workshop@caas.example"
DEALER = "sales.madrid@caas.example"


def _car(
    db: Session, settings: Settings, *, vin: str, delivered: datetime, **identity: str
) -> SoldCustomer:
    owner = sold_customer(db, settings=settings, now=delivered - timedelta(days=60), **identity)
    car_for(
        db, owner.sale, vin=vin, built_at=delivered - timedelta(days=30), delivered_at=delivered
    )
    db.commit()
    return owner


OVERDUE = "1M8GDM9AXKP042788"  # due 2025-12-01
SOON = "1M8GDM9AXKP042789"  # due 2026-02-01: within the 30 days' notice
LATER = "1M8GDM9AXKP042790"  # due 2026-10-01: follows the plan
FAR = "1M8GDM9AXKP042791"  # overdue, but the owner lives in Barcelona


def test_the_workshop_sees_the_cars_due_in_its_area_overdue_first(
    app_client: TestClient, db: Session, settings: Settings
) -> None:
    soon = _car(db, settings, vin=SOON, delivered=datetime(2025, 2, 1, 10, tzinfo=UTC),
                national_id="11111111H", email="soon@example.com", last_name="Pronto")  # fmt: skip
    late = _car(db, settings, vin=OVERDUE, delivered=datetime(2024, 12, 1, 10, tzinfo=UTC),
                national_id="22222222J", email="late@example.com", last_name="Tarde")  # fmt: skip
    _car(db, settings, vin=LATER, delivered=datetime(2025, 10, 1, 10, tzinfo=UTC),
         national_id="33333333P", email="later@example.com")  # fmt: skip
    _car(db, settings, vin=FAR, delivered=datetime(2024, 11, 1, 10, tzinfo=UTC),
         national_id="44444444A", email="far@example.com", postal_code="08001",
         city="Barcelona")  # fmt: skip

    log_in(app_client, WORKSHOP)
    page = app_client.get("/workshop")
    assert page.status_code == 200
    assert f'href="/workshop/cars/{OVERDUE}"' in page.text
    assert f'href="/workshop/cars/{SOON}"' in page.text
    assert LATER not in page.text
    assert FAR not in page.text
    assert page.text.index(OVERDUE) < page.text.index(SOON)
    text = text_of(page.text)
    assert "Due and overdue in your area" in text
    assert late.customer.full_name in text
    assert soon.customer.full_name in text
    assert "Overdue" in text and "Due soon" in text
    assert text.index("Due and overdue in your area") < text.index("VIN or plate")


def test_customers_and_dealers_cannot_open_the_workshop_page(
    app_client: TestClient, db: Session, settings: Settings
) -> None:
    owner = _car(db, settings, vin=OVERDUE, delivered=datetime(2024, 12, 1, 10, tzinfo=UTC))
    for email in (owner.user.email, DEALER):
        app_client.cookies.clear()
        log_in(app_client, email)
        page = app_client.get("/workshop", follow_redirects=False)
        assert page.status_code == 403
        assert OVERDUE not in page.text


def test_a_workshop_user_without_a_workshop_is_told_so(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    _car(db, settings, vin=OVERDUE, delivered=datetime(2024, 12, 1, 10, tzinfo=UTC))
    create_user(db, email="loose@caas.example", full_name="Sin Taller", role=Role.WORKSHOP,
                password=DEMO_PASSWORD, now=clock.now())  # fmt: skip
    db.commit()
    log_in(app_client, "loose@caas.example")
    page = app_client.get("/workshop")
    assert page.status_code == 200
    assert "Your account is not attached to a workshop." in text_of(page.text)
    assert OVERDUE not in page.text
