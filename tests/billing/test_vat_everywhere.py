"""Every price shown takes its VAT from the table of rates on its day, never a country's column."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.catalog.models import Country, VatRate
from caas.core.clock import FixedClock
from tests.files.customers import login

BEFORE = datetime(2027, 3, 31, 12, tzinfo=UTC)
AFTER = datetime(2027, 4, 1, 12, tzinfo=UTC)


def _raise_spanish_vat(db: Session) -> None:
    db.add(VatRate(country="ES", valid_from=date(2027, 4, 1), rate_bp=2200))
    db.flush()


def _aura_price(client: TestClient) -> dict[str, object]:
    platforms = client.get("/api/v1/platforms", params={"country": "ES"}).json()
    price: dict[str, object] = next(p for p in platforms if p["code"] == "AURA")["prices"][0]
    return price


def test_the_country_has_no_rate_of_its_own() -> None:
    assert "vat_rate_bp" not in Country.__table__.columns


def test_the_public_catalog_shows_the_rate_in_force_on_the_day(
    db: Session, app_client: TestClient, clock: FixedClock
) -> None:
    _raise_spanish_vat(db)
    clock.set(BEFORE)
    before = _aura_price(app_client)
    clock.set(AFTER)
    after = _aura_price(app_client)

    assert (before["vat_rate_percent"], after["vat_rate_percent"]) == ("21.00", "22.00")
    assert before["net"] == after["net"]
    assert after["total"]["amount_minor"] == 2_900_000 + 638_000  # type: ignore[index]


def test_an_offer_shows_its_gross_with_the_rate_in_force_on_the_day(
    db: Session, app_client: TestClient, clock: FixedClock
) -> None:
    _raise_spanish_vat(db)
    login(app_client, "operator@caas.example")
    clock.set(BEFORE)
    url = "/api/v1/platforms/AURA/features/power_boost/offers"
    before = {o["id"]: o for o in app_client.get(url, params={"country": "ES"}).json()}
    clock.set(AFTER)
    after = {o["id"]: o for o in app_client.get(url, params={"country": "ES"}).json()}

    assert before and before.keys() == after.keys()
    for offer_id, offer in after.items():
        assert (before[offer_id]["vat_rate_percent"], offer["vat_rate_percent"]) == (
            "21.00",
            "22.00",
        )
        net = offer["net"]["amount_minor"]
        assert offer["gross"]["amount_minor"] == net + (net * 2200 + 5_000) // 10_000
        one = app_client.get(f"/api/v1/offers/{offer_id}").json()
        assert one["vat_rate_percent"] == "22.00"
