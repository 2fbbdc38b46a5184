"""Pay per use: the car's usage rated by its metered offer and summed per month, the running
amount readable by the owner, the spending cap switching the option off until next month, and
the month invoiced once on the first of the next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.invoices import invoice_lines, invoice_of_payment
from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.outbox import enqueue
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.models import ConfigurationVersion
from caas.protocol.mqtt import ManifestBody, UsageEvent
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store import metering
from caas.store.models import Entitlement, Offer, Purchase
from caas.vehicles.ingest import store_usage_events
from tests.billing.conftest import PaymentSandbox, login
from tests.store.conftest import (
    Owner,
    answer,
    buy,
    delivered_owner,
    item,
    offer,
    run_all_due,
    run_relay,
)
from tests.store.engine import engine_keys, signing
from tests.web.support import log_in, text_of

__all__ = ["engine_keys", "signing"]

# 1.50 net per hour of power boost; Spanish VAT 21 %.
HOURLY_MINOR = 150
# The customer's month (Madrid) of the test clock's 15 January 2026.
FEBRUARY = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    return delivered_owner(db, settings, clock)


@pytest.fixture
def hourly(db: Session, owner: Owner) -> Offer:
    return offer(db, owner.vehicle, "power_boost", "metered", net_minor=HOURLY_MINOR, unit="hour")


def _bought(
    db: Session,
    owner: Owner,
    metered: Offer,
    *,
    cap: int | None,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> Purchase:
    extra = {} if cap is None else {"spending_cap_minor": cap}
    purchase = buy(
        db,
        owner,
        [item(metered, **extra)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="pay-per-use",
        settings=settings,
        clock=clock,
    )
    answer(db, owner, purchase.configuration_version or 0, "applied", clock)
    run_relay(settings, sessions, clock, db)
    return purchase


_seq = iter(range(1, 1_000_000))


def _use(db: Session, owner: Owner, at: datetime, quantity: float, *, unit: str = "hour") -> None:
    event = UsageEvent(
        vin=owner.vehicle.vin,
        seq=next(_seq),
        at=at,
        feature="power_boost",
        unit=unit,  # type: ignore[arg-type]
        quantity=quantity,
    )
    store_usage_events(db, [event], now=at)
    db.commit()


def _rights(db: Session, owner: Owner) -> list[Entitlement]:
    return list(
        db.scalars(
            select(Entitlement)
            .where(Entitlement.vehicle_id == owner.vehicle.id, Entitlement.source == "metered")
            .order_by(Entitlement.id)
        )
    )


def _newest(db: Session, owner: Owner) -> ConfigurationVersion:
    return db.scalars(
        select(ConfigurationVersion)
        .where(ConfigurationVersion.vehicle_id == owner.vehicle.id)
        .order_by(ConfigurationVersion.version.desc())
        .limit(1)
    ).one()


def _on(version: ConfigurationVersion, at: datetime) -> bool:
    body = ManifestBody.model_validate(version.body)
    return any(
        state.code == "power_boost"
        and state.enabled
        and (state.valid_from is None or state.valid_from <= at)
        and (state.valid_until is None or at < state.valid_until)
        for state in body.features
    )


def _told(db: Session, owner: Owner, kind: str) -> list[Notification]:
    return list(
        db.scalars(
            select(Notification).where(
                Notification.user_id == owner.user.id, Notification.kind == kind
            )
        )
    )


def _metered_payments(db: Session, owner: Owner) -> list[Payment]:
    return list(
        db.scalars(
            select(Payment).where(
                Payment.customer_id == owner.customer.id, Payment.kind == "metered"
            )
        )
    )


def test_rating_is_half_up_on_the_line() -> None:
    assert metering.rate(Decimal("37"), 150) == 5_550
    assert metering.rate(Decimal("0.005"), 100) == 1  # 0.5 rounds up
    assert metering.rate(Decimal("0.0049"), 100) == 0


def test_usage_is_rated_per_month_by_the_offer_and_readable_by_the_owner_only(
    db: Session,
    owner: Owner,
    hourly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    bought_at = clock.now()
    _bought(
        db,
        owner,
        hourly,
        cap=None,
        settings=settings,
        sessions=sessions,
        clock=clock,
        payment_sandbox=payment_sandbox,
    )
    _use(db, owner, bought_at - timedelta(hours=1), 5)  # before the option: not charged
    _use(db, owner, bought_at + timedelta(hours=1), 10)
    _use(db, owner, bought_at + timedelta(days=2), 27)
    _use(db, owner, bought_at + timedelta(days=3), 4, unit="km")  # not its unit
    _use(db, owner, FEBRUARY + timedelta(hours=2), 8)  # next month
    clock.advance(timedelta(days=5))

    login(app_client, owner.user.email)
    response = app_client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/usage")
    assert response.status_code == 200, response.text
    usage = response.json()
    assert (usage["month"], usage["currency"]) == ("2026-01", "EUR")
    (line,) = usage["lines"]
    # 37 hours x 1.50 = 55.50 net; VAT 21 % of 55.50 = 11.655 -> 11.66 (half up).
    assert (line["code"], line["unit"], line["quantity"]) == ("power_boost", "hour", "37")
    assert (line["net_minor"], line["vat_minor"], line["gross_minor"]) == (5_550, 1_166, 6_716)
    assert usage["gross_minor"] == 6_716

    log_in(app_client, owner.customer.email)
    page = text_of(app_client.get(f"/portal/cars/{owner.vehicle.vin}/store").text)
    assert "en lo que va de mes: 67,16" in page  # a Spanish customer

    stranger = delivered_owner(db, settings, clock)
    login(app_client, stranger.user.email)
    refused = app_client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/usage")
    assert refused.status_code == 404


def test_reaching_the_cap_switches_the_option_off_until_next_month(
    db: Session,
    owner: Owner,
    hourly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    _bought(
        db,
        owner,
        hourly,
        cap=5_000,
        settings=settings,
        sessions=sessions,
        clock=clock,
        payment_sandbox=payment_sandbox,
    )
    metering.start_metering(db, now=clock.now())
    db.commit()
    _use(db, owner, clock.now(), 20)  # 36.30 gross: under the cap
    clock.advance(metering.CHECK_EVERY)
    run_all_due(settings, sessions, clock, db)
    assert [right.state for right in _rights(db, owner)] == ["active"]
    assert _on(_newest(db, owner), clock.now())

    _use(db, owner, clock.now(), 17)  # 67.16 gross in all: over the 50.00 cap
    clock.advance(metering.CHECK_EVERY)
    run_all_due(settings, sessions, clock, db)
    switched_at = clock.now()

    ended, coming_back = _rights(db, owner)
    assert ended.state == "ended" and ended.valid_until is not None
    assert (coming_back.valid_from, coming_back.valid_until) == (FEBRUARY, None)
    assert coming_back.spending_cap_minor == 5_000
    newest = _newest(db, owner)
    assert newest.reason == "metered.cap_reached"
    assert not _on(newest, switched_at)
    (told,) = _told(db, owner, "metered.cap_reached")
    assert "67,16" in told.body and "50,00" in told.body

    # More checks this month change nothing; the customer is told once.
    clock.advance(metering.CHECK_EVERY * 3)
    run_all_due(settings, sessions, clock, db)
    assert len(_rights(db, owner)) == 2
    assert len(_told(db, owner, "metered.cap_reached")) == 1

    # The first of next month (the customer's midnight) it is back on.
    clock.set(FEBRUARY + timedelta(minutes=1))
    run_all_due(settings, sessions, clock, db)
    assert _on(_newest(db, owner), clock.now())


def test_the_month_is_invoiced_once_with_the_card_of_the_purchase(
    db: Session,
    owner: Owner,
    hourly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    _bought(
        db,
        owner,
        hourly,
        cap=None,
        settings=settings,
        sessions=sessions,
        clock=clock,
        payment_sandbox=payment_sandbox,
    )
    metering.start_metering(db, now=clock.now())
    db.commit()
    _use(db, owner, clock.now() + timedelta(hours=1), 12)
    _use(db, owner, clock.now() + timedelta(days=10), 25)
    first_run = metering.next_month_run(clock.now())
    assert first_run == datetime(2026, 2, 1, 6, 0, tzinfo=UTC)

    clock.set(first_run)
    run_all_due(settings, sessions, clock, db)

    (payment,) = _metered_payments(db, owner)
    assert (payment.state, payment.amount_minor) == ("captured", 6_716)
    assert payment_sandbox.captures(payment.reference) == 1
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    (line,) = invoice_lines(db, invoice.id)
    assert "37" in line.description and "1,50" in line.description

    # The monthly run again (a stray copy, a restarted worker): nothing is charged twice.
    enqueue(
        db,
        topic=metering.MONTH_TOPIC,
        payload={"due": first_run.isoformat()},
        dedupe_key="a stray copy of the monthly run",
        now=clock.now(),
    )
    enqueue(
        db,
        topic=metering.CHARGE_TOPIC,
        payload={
            "vehicle_id": owner.vehicle.id,
            "customer_id": owner.customer.id,
            "month": "2026-01",
        },
        dedupe_key="a stray copy of the charge",
        now=clock.now(),
    )
    db.commit()
    clock.advance(timedelta(hours=1))
    run_all_due(settings, sessions, clock, db)
    assert len(_metered_payments(db, owner)) == 1
    assert payment_sandbox.captures(payment.reference) == 1
