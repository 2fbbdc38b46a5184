"""Offers: the seed sells every feature in every country it may be sold in; the operator adds,
reprices, withdraws and reinstates offers (API, once per key, recorded); others only read."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from caas.catalog.models import Country, Feature, FeaturePrice, Platform
from caas.core.clock import FixedClock
from caas.core.errors import NotFound
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.seed import PLATFORM_FEATURES, load_demo_data, load_reference_data
from caas.store import offers, rules
from caas.store.models import Offer
from tests.files.customers import login, sold_customer

OPERATOR = "operator@caas.example"
DEALER = "sales.madrid@caas.example"
METERED = {
    "power_boost": {("metered", "", "hour")},
    "motorway_autopilot": {("metered", "", "km")},
}


def feature(db: Session, platform: str, code: str) -> Feature:
    return db.scalars(
        select(Feature)
        .join(Platform, Platform.id == Feature.platform_id)
        .where(Platform.code == platform, Feature.code == code)
    ).one()


def offers_url(platform: str, code: str) -> str:
    return f"/api/v1/platforms/{platform}/features/{code}/offers"


def create(client: TestClient, body: dict[str, Any], key: str = "offer-create-01") -> Any:
    return client.post(
        offers_url("AURA", "winter_traction"), json=body, headers={"Idempotency-Key": key}
    )


def change(client: TestClient, offer_id: int, body: dict[str, Any], key: str) -> Any:
    return client.patch(f"/api/v1/offers/{offer_id}", json=body, headers={"Idempotency-Key": key})


# --- the seed ------------------------------------------------------------------------------


def test_the_seed_offers_every_feature_in_every_country_it_may_be_sold_in(db: Session) -> None:
    countries = list(db.scalars(select(Country.code)))
    features = db.scalars(select(Feature)).all()
    assert len(features) == sum(len(codes) for codes in PLATFORM_FEATURES.values())
    every = db.scalars(select(Offer)).all()
    shapes: dict[tuple[int, str], set[tuple[str, str, str | None]]] = {}
    for offer in every:
        shapes.setdefault((offer.feature_id, offer.country), set()).add(
            (offer.kind, offer.duration, offer.unit)
        )
        assert offer.currency == "EUR" and offer.active
        assert offer.refund_policy == rules.DEFAULT_REFUND_POLICY[offer.kind]
        assert offer.apply_deadline_seconds == 600
        assert (offer.net_minor == 0) == (offer.kind == "trial")
    base = {
        ("trial", "1M", None),
        *(("window", d, None) for d in ("1D", "7D", "1M", "1Y", "3Y")),
        ("custom", "", None),
        ("subscription", "1M", None),
        ("subscription", "1Y", None),
        ("permanent", "", None),
    }
    for f in features:
        for country in countries:
            found = shapes.get((f.id, country), set())
            if f.code == "motorway_autopilot" and country == "PT":
                assert found == set()  # not approved there
                continue
            assert found == base | METERED.get(f.code, set()), (f.code, country)


def test_the_seeds_rules_make_the_store_interesting_but_coherent(db: Session) -> None:
    autopilot = feature(db, "CIRRUS", "motorway_autopilot")
    assert autopilot.requires == ["driver_assist"]
    assert autopilot.min_software_version == "7.3.0"  # the Cirrus leaves the factory with 7.3.1
    assert autopilot.countries == ["ES", "FR", "DE", "IT"]
    assert autopilot.requires_maintenance
    assert feature(db, "AURA", "power_boost").requires_maintenance
    assert not feature(db, "AURA", "winter_traction").requires_maintenance
    for code in ("power_boost", "winter_traction", "entertainment", "driver_assist"):
        aura = feature(db, "AURA", code)
        assert {"es", "en"} <= set(aura.names) and {"es", "en"} <= set(aura.descriptions)


def test_store_prices_scale_per_country_in_whole_euros_or_sensible_cents(db: Session) -> None:
    boost = feature(db, "AURA", "power_boost")
    month = {o.country: o.net_minor for o in db.scalars(
        select(Offer).where(Offer.feature_id == boost.id, Offer.kind == "window",
                            Offer.duration == "1M"))}  # fmt: skip
    assert month == {"ES": 5_900, "FR": 6_080, "DE": 6_200, "IT": 6_020, "PT": 5_840}
    yearly = offers.offers_for(db, [boost.id], "DE")
    assert all(o.net_minor % 100 == 0 for o in yearly if o.net_minor >= 10_000)
    per_km = feature(db, "CIRRUS", "motorway_autopilot")
    (metered,) = [o for o in offers.offers_for(db, [per_km.id], "ES") if o.kind == "metered"]
    assert (metered.unit, metered.net_minor) == ("km", 5)


def test_loading_the_seed_again_adds_nothing(db: Session, clock: FixedClock) -> None:
    def counts() -> tuple[int | None, ...]:
        return tuple(
            db.scalar(select(func.count()).select_from(table))
            for table in (Country, Platform, Feature, FeaturePrice, Offer)
        )

    before = counts()
    load_demo_data(db, now=clock.now())
    assert counts() == before


def test_offers_missing_from_an_older_catalog_are_added(db: Session, clock: FixedClock) -> None:
    db.execute(delete(Offer))
    load_reference_data(db, now=clock.now())
    # Ten ways to buy each of 13 features in 5 countries (not the autopilot in Portugal), plus
    # the power boost per hour (3 platforms, 5 countries) and the autopilot per km (4).
    assert db.scalar(select(func.count()).select_from(Offer)) == 10 * (13 * 5 - 1) + 3 * 5 + 4


# --- reading -------------------------------------------------------------------------------


def test_offers_for_lists_a_countrys_offers_in_kind_order(db: Session) -> None:
    boost = feature(db, "AURA", "power_boost")
    listed = offers.offers_for(db, [boost.id], "ES")
    assert [(o.kind, o.duration) for o in listed][:3] == [
        ("trial", "1M"),
        ("window", "1D"),
        ("window", "7D"),
    ]
    assert [o.kind for o in listed][-1] == "metered"
    listed[1].active = False
    db.flush()
    assert listed[1] not in offers.offers_for(db, [boost.id], "ES")
    assert listed[1] in offers.offers_for(db, [boost.id], "ES", active_only=False)
    assert offers.offers_for(db, [], "ES") == []


def test_get_offer_names_the_field_when_there_is_none(db: Session) -> None:
    with pytest.raises(NotFound) as raised:
        offers.get_offer(db, 987_654)
    assert raised.value.field == "offer_id"


def test_feature_text_falls_back_to_english_then_the_catalogs_name(db: Session) -> None:
    boost = feature(db, "AURA", "power_boost")
    assert offers.feature_text(boost, "es")[0] == "+50 % de potencia"
    boost.names = {"en": "More power"}
    boost.descriptions = {}
    assert offers.feature_text(boost, "it") == ("More power", boost.description)
    boost.names = {}
    assert offers.feature_text(boost, "it")[0] == boost.name


# --- the operator's management -------------------------------------------------------------


def test_the_operator_adds_an_offer_once_per_key_and_it_is_recorded(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, OPERATOR)
    body = {"country": "PT", "kind": "metered", "unit": "activation", "net_minor": 250}
    first = create(app_client, body)
    assert first.status_code == 201, first.text
    created = first.json()
    assert (created["kind"], created["unit"], created["duration"]) == ("metered", "activation", "")
    assert created["net"]["amount_minor"] == 250 and created["net"]["currency"] == "EUR"
    assert created["gross"]["amount_minor"] == 308  # 23 % VAT in Portugal, half up
    assert created["refund_policy"] == "none" and created["apply_deadline_seconds"] == 600
    assert create(app_client, body).json() == created
    assert create(app_client, body, key="offer-create-02").status_code == 409

    (entry,) = subject_history(db, "offer", created["id"])
    assert (entry.event, entry.actor_kind, entry.actor_label) == (
        "offer.created",
        "operator",
        OPERATOR,
    )
    assert entry.details["net_minor"] == 250 and entry.details["unit"] == "activation"


def test_a_trial_defaults_to_one_month_and_there_is_one_per_feature_and_country(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, OPERATOR)
    trial = db.scalars(select(Offer).where(
        Offer.feature_id == feature(db, "AURA", "winter_traction").id,
        Offer.country == "ES", Offer.kind == "trial")).one()  # fmt: skip
    again = create(app_client, {"country": "ES", "kind": "trial", "duration": "14D"})
    assert again.status_code == 409 and again.json()["code"] == "offer.trial_exists"
    db.delete(trial)
    db.commit()
    made = create(app_client, {"country": "ES", "kind": "trial"}, key="offer-trial-01")
    assert made.status_code == 201, made.text
    assert (made.json()["duration"], made.json()["net"]["amount_minor"]) == ("1M", 0)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"country": "ES", "kind": "window", "duration": "2W", "net_minor": 100},
         "duration", "offer.bad_duration"),
        ({"country": "ES", "kind": "window", "net_minor": 100}, "duration", "offer.bad_duration"),
        ({"country": "ES", "kind": "metered", "net_minor": 100}, "unit", "offer.unit_required"),
        ({"country": "ES", "kind": "metered", "unit": "litre", "net_minor": 100},
         "unit", "offer.unit_required"),
        ({"country": "ES", "kind": "permanent", "unit": "hour", "net_minor": 100},
         "unit", "offer.unit_not_allowed"),
        ({"country": "ES", "kind": "trial", "duration": "7D", "net_minor": 100},
         "net_minor", "offer.trial_not_free"),
        ({"country": "ES", "kind": "custom", "net_minor": 0}, "net_minor", "offer.price_required"),
        ({"country": "ES", "kind": "custom"}, "net_minor", "offer.price_required"),
        ({"country": "XX", "kind": "custom", "net_minor": 100}, "country", "invalid_input"),
        ({"country": "ES", "kind": "lease", "net_minor": 100}, "kind", "invalid_input"),
        ({"country": "ES", "kind": "metered", "unit": "hour", "net_minor": -5},
         "net_minor", "invalid_input"),
        ({"country": "ES", "kind": "metered", "unit": "hour", "net_minor": 5,
          "apply_deadline_seconds": 10}, "apply_deadline_seconds", "invalid_input"),
        ({"country": "ES", "kind": "metered", "unit": "hour", "net_minor": 5,
          "refund_policy": "sometimes"}, "refund_policy", "invalid_input"),
    ],
)  # fmt: skip
def test_a_wrong_offer_is_a_422_naming_the_field_and_the_reason(
    app_client: TestClient, body: dict[str, Any], field: str, code: str
) -> None:
    login(app_client, OPERATOR)
    response = create(app_client, body)
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["code"]) == (field, code)
    assert response.json()["message"]


def test_a_feature_is_not_offered_where_it_may_not_be_sold(app_client: TestClient) -> None:
    login(app_client, OPERATOR)
    response = app_client.post(
        offers_url("CIRRUS", "motorway_autopilot"),
        json={"country": "PT", "kind": "window", "duration": "1D", "net_minor": 1500},
        headers={"Idempotency-Key": "autopilot-pt-01"},
    )
    assert response.status_code == 422
    assert (response.json()["field"], response.json()["code"]) == (
        "country",
        "offer.country_not_allowed",
    )


def test_the_operator_reprices_withdraws_and_reinstates_an_offer(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, OPERATOR)
    listed = app_client.get(offers_url("AURA", "power_boost"), params={"country": "ES"}).json()
    week = next(o for o in listed if (o["kind"], o["duration"]) == ("window", "7D"))
    assert week["net"]["amount_minor"] == 2_900 and week["gross"]["amount_minor"] == 3_509

    body = {"net_minor": 3_400, "refund_policy": "unused_days", "apply_deadline_seconds": 900}
    repriced = change(app_client, week["id"], body, "reprice-week-01")
    assert repriced.status_code == 200, repriced.text
    assert repriced.json()["net"]["amount_minor"] == 3_400
    assert change(app_client, week["id"], body, "reprice-week-01").json() == repriced.json()
    withdrawn = change(app_client, week["id"], {"active": False}, "withdraw-week-01")
    assert withdrawn.json()["active"] is False
    assert change(app_client, week["id"], {"active": True}, "reinstate-week-01").json()["active"]

    entries = subject_history(db, "offer", week["id"])
    assert [e.event for e in entries] == ["offer.updated", "offer.withdrawn", "offer.reinstated"]
    assert entries[0].details["changes"] == {
        "net_minor": {"from": 2_900, "to": 3_400},
        "refund_policy": {"from": "none", "to": "unused_days"},
        "apply_deadline_seconds": {"from": 600, "to": 900},
    }
    assert all(e.actor_label == OPERATOR for e in entries)


def test_a_trial_stays_free(app_client: TestClient, db: Session) -> None:
    login(app_client, OPERATOR)
    trial = offers.offers_for(db, [feature(db, "AURA", "power_boost").id], "ES")[0]
    assert trial.kind == "trial"
    response = change(app_client, trial.id, {"net_minor": 500}, "price-trial-01")
    assert response.status_code == 422 and response.json()["code"] == "offer.trial_not_free"


def test_others_read_offers_on_sale_and_cannot_change_them(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    boost = feature(db, "AURA", "power_boost")
    week, day = offers.offers_for(db, [boost.id], "ES")[1:3]
    day.active = False
    sold = sold_customer(db, settings=settings, now=clock.now())
    db.commit()
    for email in (DEALER, sold.email):
        login(app_client, email)
        listed = app_client.get(offers_url("AURA", "power_boost")).json()
        assert Counter(o["country"] for o in listed)["ES"] == 10  # 11 less the withdrawn one
        assert app_client.get(f"/api/v1/offers/{week.id}").status_code == 200
        assert app_client.get(f"/api/v1/offers/{day.id}").status_code == 404
        assert change(app_client, week.id, {"net_minor": 1}, f"x-{email}").status_code == 403
        refused = app_client.post(
            offers_url("AURA", "power_boost"),
            json={"country": "ES", "kind": "custom", "net_minor": 1},
            headers={"Idempotency-Key": f"y-{email}"},
        )
        assert refused.status_code == 403
    app_client.post("/api/v1/auth/logout")
    assert app_client.get(offers_url("AURA", "power_boost")).status_code == 401
    assert change(app_client, 987_654, {"net_minor": 1}, "z-0000001").status_code == 401
