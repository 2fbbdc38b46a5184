"""Upcoming charges: the customer's renewals, scheduled windows and metered month in the coming
days, with dates and amounts VAT included; their own cars only; shown in their file."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.catalog.models import VatRate
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.mqtt import UsageEvent
from caas.store import entitlements
from caas.store.models import Offer, Schedule
from caas.store.upcoming import estimate_month
from caas.vehicles.ingest import store_usage_events
from tests.billing.conftest import login
from tests.store.conftest import Owner, delivered_owner, feature_of, offer, subscribed
from tests.store.engine import engine_keys, signing
from tests.web.support import log_in, text_of

__all__ = ["engine_keys", "signing"]

# The test clock: Monday 2 March 2026, 10:00 UTC (11:00 in Madrid).
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
# Spain's VAT goes up on 1 April 2026, midnight in Madrid (31 March, 22:00 UTC).
RAISED_FROM = date(2026, 4, 1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    clock.set(NOW)
    return delivered_owner(db, settings, clock)


def _monthly(db: Session, owner: Owner, clock: FixedClock) -> None:
    monthly = offer(db, owner.vehicle, "entertainment", "subscription", "1M", net_minor=1_000)
    subscribed(db, owner, monthly, token="tok_saved", clock=clock)


def _weekends(db: Session, owner: Owner) -> Schedule:
    """Power boost every Saturday 08:00 to Sunday 22:00 in Madrid, charged each time."""
    custom = offer(db, owner.vehicle, "power_boost", "custom", net_minor=500)
    schedule = Schedule(
        vehicle_id=owner.vehicle.id,
        customer_id=owner.customer.id,
        offer_id=custom.id,
        code="power_boost",
        recurrence="weekly",
        timezone="Europe/Madrid",
        start_date=date(2026, 3, 7),
        start_time=time(8, 0),
        end_date=date(2026, 3, 8),
        end_time=time(22, 0),
        charge="each",
        payment_method="tok_saved",
        state="active",
        created_at=NOW,
        updated_at=NOW,
    )
    db.add(schedule)
    db.commit()
    return schedule


def _metered(db: Session, owner: Owner, hours: list[tuple[datetime, float]]) -> Offer:
    metered = offer(
        db, owner.vehicle, "power_boost", "metered", net_minor=150, unit="hour", country="ES"
    )
    entitlements.grant(
        db,
        vehicle=owner.vehicle,
        feature=feature_of(db, owner.vehicle, "power_boost"),
        source="metered",
        valid_from=at("2026-02-01T00:00"),
        valid_until=None,
        customer_id=owner.customer.id,
        offer_id=metered.id,
        actor=owner.actor(),
        now=NOW,
    )
    events = [
        UsageEvent(
            vin=owner.vehicle.vin,
            seq=seq,
            at=moment,
            feature="power_boost",
            unit="hour",
            quantity=quantity,
        )
        for seq, (moment, quantity) in enumerate(hours, start=1)
    ]
    store_usage_events(db, events, now=NOW)
    db.commit()
    return metered


def _charges(client: TestClient, url: str = "/api/v1/me/upcoming-charges", **params: int) -> list:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return [
        (
            charge["kind"],
            charge["code"],
            charge["due_at"],
            charge["gross_minor"],
            charge["so_far_gross_minor"],
        )
        for charge in response.json()
    ]


def test_the_estimate_follows_the_pace_and_stops_at_the_cap() -> None:
    month = timedelta(days=30)
    assert estimate_month(1_000, elapsed=timedelta(days=10), month=month, **_no_cap()) == 3_000
    assert estimate_month(1_000, elapsed=timedelta(0), month=month, **_no_cap()) == 1_000
    # A 24.20 gross cap is 20.00 net at 21 %.
    capped = estimate_month(
        1_000, elapsed=timedelta(days=10), month=month, cap_gross_minor=2_420, vat_rate_bp=2100
    )
    assert capped == 2_000
    # Already past the cap: what was used is charged, never less.
    over = estimate_month(
        2_500, elapsed=timedelta(days=10), month=month, cap_gross_minor=2_420, vat_rate_bp=2100
    )
    assert over == 2_500


def _no_cap() -> dict[str, int | None]:
    return {"cap_gross_minor": None, "vat_rate_bp": 2100}


def test_renewals_windows_and_the_metered_month_are_listed_soonest_first_with_their_vat(
    db: Session, owner: Owner, clock: FixedClock, app_client: TestClient
) -> None:
    db.add(VatRate(country="ES", valid_from=RAISED_FROM, rate_bp=2200))
    _monthly(db, owner, clock)
    _weekends(db, owner)
    # 10 hours on 1 March (Madrid): 15.00 net so far, 1 day and 11 hours into March.
    _metered(db, owner, [(at("2026-03-01T12:00"), 4.0), (at("2026-03-02T08:00"), 6.0)])
    login(app_client, owner.user.email)

    charges = _charges(app_client, days=40)

    # Weekends: 2 started days x 5.00, +21 % until March, +22 % from April (local time).
    weekends = [
        ("occurrence", "power_boost", f"{starts}Z", gross, None)
        for starts, gross in (
            ("2026-03-07T07:00:00", 1_210),
            ("2026-03-14T07:00:00", 1_210),
            ("2026-03-21T07:00:00", 1_210),
            ("2026-03-28T07:00:00", 1_210),  # summer time from the 29th: still 08:00 local
            ("2026-04-04T06:00:00", 1_220),
            ("2026-04-11T06:00:00", 1_220),  # the last within 40 days (11 April, 10:00)
        )
    ]
    # The subscription renews on 2 April, at 10.00 + 22 %; the month is charged on 1 April.
    so_far = 1_815  # 15.00 + 21 %
    month = ("metered", "power_boost", "2026-04-01T06:00:00Z")
    assert charges == [
        *weekends[:4],
        (*month, charges[4][3], so_far),
        ("renewal", "entertainment", "2026-04-02T10:00:00Z", 1_220, None),
        *weekends[4:],
    ]
    # The month's estimate at its pace: 15.00 net over 35 of the month's 744 hours (March
    # has 743 in Madrid), VAT of the month's last day (31 March, still 21 %).
    estimate = estimate_month(
        1_500,
        elapsed=NOW - at("2026-02-28T23:00"),
        month=at("2026-03-31T22:00") - at("2026-02-28T23:00"),
        cap_gross_minor=None,
        vat_rate_bp=2100,
    )
    assert charges[4][3] == estimate + (estimate * 2100 + 5_000) // 10_000
    assert charges[4][3] > so_far

    # A shorter horizon stops at its end; a longer one brings the next renewal.
    assert [charge[0] for charge in _charges(app_client, days=7)] == ["occurrence"]
    renewals = [c[2] for c in _charges(app_client, days=70) if c[0] == "renewal"]
    assert renewals == ["2026-04-02T10:00:00Z", "2026-05-02T10:00:00Z"]


def test_in_the_hours_before_the_monthly_run_the_month_just_ended_is_listed_as_it_is(
    db: Session, owner: Owner, clock: FixedClock, app_client: TestClient
) -> None:
    _metered(db, owner, [(at("2026-03-01T12:00"), 4.0), (at("2026-03-30T08:00"), 6.0)])
    clock.set(at("2026-04-01T03:00"))  # March is over in Madrid; its run is due at 06:00
    login(app_client, owner.user.email)

    assert _charges(app_client) == [
        ("metered", "power_boost", "2026-04-01T06:00:00Z", 1_815, 1_815)
    ]


def test_a_subscription_cancelled_at_the_periods_end_and_an_upfront_window_are_not_charged(
    db: Session, owner: Owner, clock: FixedClock, app_client: TestClient
) -> None:
    monthly = offer(db, owner.vehicle, "entertainment", "subscription", "1M", net_minor=1_000)
    subscription = subscribed(db, owner, monthly, token="tok_saved", clock=clock)
    subscription.cancel_at_period_end = True
    schedule = _weekends(db, owner)
    schedule.charge = "upfront"
    db.commit()
    login(app_client, owner.user.email)

    assert _charges(app_client) == []


def test_only_the_owner_sees_a_cars_upcoming_charges(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
) -> None:
    _monthly(db, owner, clock)
    stranger = delivered_owner(db, settings, clock)
    url = f"/api/v1/vehicles/{owner.vehicle.vin}/upcoming-charges"

    login(app_client, stranger.user.email)
    assert app_client.get(url).status_code == 404
    assert _charges(app_client) == []  # the stranger's own list has nothing of it

    login(app_client, owner.user.email)
    assert [charge[0] for charge in _charges(app_client, url)] == ["renewal"]
    assert app_client.get(url, params={"days": 0}).status_code == 422

    login(app_client, "operator@caas.example")
    assert app_client.get("/api/v1/me/upcoming-charges").status_code == 403


def test_the_customers_file_shows_the_upcoming_charges_in_their_language(
    db: Session, owner: Owner, clock: FixedClock, app_client: TestClient
) -> None:
    _monthly(db, owner, clock)
    log_in(app_client, owner.user.email)

    page = text_of(app_client.get("/portal/file", headers={"Accept-Language": "es"}).text)

    assert "Próximos cargos" in page
    assert "Renovación de la suscripción" in page
    assert "12,10 €" in page  # 10.00 + 21 %, written the Spanish way
