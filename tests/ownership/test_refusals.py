"""The registry refuses a change of holder or a deregistration: the operators and the dealer who
presented it are told in the app, the console shows the refusal, and it is sent again from the
operator's twin page or the dealer's car page once corrected; a dealer scraps a car their
dealership sold from the intranet's car page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import Dealership, User
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.keys import SigningMaterial
from caas.ownership.models import Scrapping, Transfer
from caas.registration.base import Registered
from caas.registration.client import RegistryClient
from caas.registration.countries import adapter_for
from caas.sales.models import Sale
from caas.vehicles.models import Vehicle
from tests.factories import customer_payload
from tests.ownership.conftest import log_in
from tests.registration.support import DEALERS, REGISTRY_API_KEY, RegistrySim, serve_registries
from tests.store.conftest import Owner, delivered_owner, run_all_due
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import fresh_dni
from tests.web.support import log_in as web_log_in
from tests.web.support import submit, text_of

__all__ = ["engine_keys", "signing"]

OPERATOR = "operator@caas.example"


@pytest.fixture
def registry() -> Iterator[RegistrySim]:
    yield from serve_registries(seed=12)


@pytest.fixture
def wired(settings: Settings, registry: RegistrySim) -> Settings:
    return settings.model_copy(
        update={"registry_url": registry.url, "registry_api_key": REGISTRY_API_KEY}
    )


@pytest.fixture
def registered(
    db: Session, wired: Settings, clock: FixedClock, signing: SigningMaterial, registry: RegistrySim
) -> Owner:
    """A delivered car registered at the DGT, sold by the Madrid dealership."""
    owner = delivered_owner(db, wired, clock)
    sale = db.get_one(Sale, owner.car.sale_id)
    sale.state = "delivered"
    adapter = adapter_for("ES")
    client = RegistryClient(base_url=registry.url, api_key=REGISTRY_API_KEY)
    request = adapter.build_request(
        owner.customer, owner.vehicle, db.get_one(Dealership, sale.dealership_id)
    )
    outcome = adapter.parse(*client.send(adapter, request))
    client.close()
    assert isinstance(outcome, Registered)
    owner.vehicle.plate, owner.vehicle.registered_country = outcome.plate, "ES"
    db.commit()
    return owner


def _told(db: Session, email: str) -> list[Notification]:
    user = db.scalars(select(User).where(User.email == email)).one()
    return list(
        db.scalars(
            select(Notification).where(
                Notification.user_id == user.id, Notification.kind == "ownership.registry_refused"
            )
        )
    )


def test_a_refused_change_of_holder_is_told_shown_and_sent_again_from_the_console(
    app_client: TestClient,
    db: Session,
    registered: Owner,
    wired: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    registry: RegistrySim,
) -> None:
    vin = registered.vehicle.vin
    dealer = log_in(app_client, DEALERS["ES"])
    buyer = customer_payload("ES", national_id=fresh_dni(), email="rosa.buyer@example.es")
    body = {
        "vin": vin,
        "seller_national_id": registered.customer.national_id,
        "buyer": buyer,
    }
    recorded = dealer.post("/api/v1/resales", json=body, headers={"Idempotency-Key": "resale-r1"})
    assert recorded.status_code == 201, recorded.text
    registry.reject_next("ES", "titular con cargas pendientes", "titular")
    run_all_due(wired, sessions, clock, db)
    transfer = db.get_one(Transfer, recorded.json()["id"])
    assert transfer.registry_state == "refused"
    # Every operator and the dealer who presented it are told; the owner's sides are not.
    assert len(_told(db, OPERATOR)) == 1
    (to_dealer,) = _told(db, DEALERS["ES"])
    assert "titular con cargas pendientes" in to_dealer.body
    assert _told(db, DEALERS["FR"]) == []

    # Another dealership cannot send it again; nothing refused elsewhere is a 409.
    other = log_in(app_client, DEALERS["FR"])
    path = f"/api/v1/vehicles/{vin}/registry/retry"
    assert other.post(path, headers={"Idempotency-Key": "retry-x1"}).status_code == 404

    web_log_in(app_client, OPERATOR)
    page = app_client.get(f"/operator/fleet/{vin}").text
    assert 'data-registry-refused="holder_change"' in page
    assert "titular con cargas pendientes" in text_of(page)
    sent = submit(
        app_client,
        f"/operator/fleet/{vin}",
        f"/operator/fleet/{vin}/registry-retry",
        {},
        with_key=True,
    )
    assert sent.status_code == 303, sent.text
    db.expire_all()
    assert db.get_one(Transfer, transfer.id).registry_state == "pending"
    run_all_due(wired, sessions, clock, db)
    assert db.get_one(Transfer, transfer.id).registry_state == "recorded"
    (entry,) = [r for r in registry.registrations() if r["vin"] == vin]
    assert entry["holder"] == f"{buyer['first_name']} {buyer['last_name']}"
    assert "data-registry-refused" not in app_client.get(f"/operator/fleet/{vin}").text

    operator = log_in(app_client, OPERATOR)
    again = operator.post(path, headers={"Idempotency-Key": "retry-o2"})
    assert (again.status_code, again.json()["code"]) == (409, "ownership.nothing_refused")


def test_a_dealer_scraps_from_the_intranet_car_page_and_sends_a_refused_deregistration_again(
    app_client: TestClient,
    db: Session,
    registered: Owner,
    wired: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    registry: RegistrySim,
) -> None:
    vin = registered.vehicle.vin
    web_log_in(app_client, DEALERS["FR"])
    assert app_client.get(f"/intranet/cars/{vin}").status_code == 404  # not their car

    web_log_in(app_client, DEALERS["ES"])
    page = f"/intranet/cars/{vin}"
    sale_page = app_client.get(f"/intranet/sales/{registered.car.sale_id}").text
    assert f'href="{page}"' in sale_page  # reached from the order's page
    assert "data-scrap" in app_client.get(page).text
    without_token = app_client.post(
        f"{page}/scrap", data={"reason": "Flood", "certificate_number": "CD-1"}
    )
    assert without_token.status_code == 403
    scrapped = submit(
        app_client,
        page,
        f"{page}/scrap",
        {"reason": "Total loss after a flood", "certificate_number": "CD-2026-0077"},
        with_key=True,
    )
    assert scrapped.status_code == 303, scrapped.text
    db.expire_all()
    assert db.get_one(Vehicle, registered.vehicle.id).state == "archived"

    registry.reject_next("ES", "certificado de destrucción no reconocido", "certificado")
    run_all_due(wired, sessions, clock, db)
    scrapping = db.scalars(
        select(Scrapping).where(Scrapping.vehicle_id == registered.vehicle.id)
    ).one()
    assert scrapping.registry_state == "refused"
    assert len(_told(db, DEALERS["ES"])) == 1 and len(_told(db, OPERATOR)) == 1

    shown = app_client.get(page).text
    assert 'data-registry-refused="deregistration"' in shown
    assert "data-scrap" not in shown  # archived: nothing more to scrap
    sent = submit(app_client, page, f"{page}/registry-retry", {}, with_key=True)
    assert sent.status_code == 303, sent.text
    run_all_due(wired, sessions, clock, db)
    assert db.get_one(Scrapping, scrapping.id).registry_state == "recorded"
    (entry,) = [r for r in registry.registrations() if r["vin"] == vin]
    assert entry["state"] == "deregistered"
