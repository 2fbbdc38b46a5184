"""Purchases against PostgreSQL and the payment sandbox on a real port: held, delivered over the
air, captured and invoiced when the car applies them, voided and refunded when it refuses or
stays silent past the deadline; one key charges once; an active option is extended."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.invoices import invoice_lines, invoice_of_payment
from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.errors import Conflict, InvalidInput
from caas.core.history import subject_history
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.models import ConfigurationVersion
from caas.ota.rules import add_months
from caas.protocol.mqtt import ManifestBody
from caas.protocol.payments import CARD_ANSWERS_LATE, CARD_DECLINED, CARD_SUCCEEDS
from caas.store import purchases
from caas.store.models import Entitlement, Purchase, PurchaseLine, Subscription
from caas.store.read import purchase_read
from caas.store.rules import add_duration
from tests.billing.conftest import PaymentSandbox
from tests.billing.conftest import deliver as deliver_event
from tests.conftest import SmtpInbox
from tests.store.conftest import Owner, answer, buy, item, offer, owner_of, run_relay
from tests.store.engine import Delivered, delivered, engine_keys, signing
from tests.vehicles.test_twin_api import counting_queries

__all__ = ["delivered", "engine_keys", "signing"]


@pytest.fixture
def owner(db: Session, delivered: Delivered, clock: FixedClock) -> Owner:
    return owner_of(db, delivered.car, clock.now())


def _entitlements(db: Session, purchase: Purchase) -> list[Entitlement]:
    db.expire_all()
    return list(
        db.scalars(
            select(Entitlement)
            .where(Entitlement.purchase_id == purchase.id)
            .order_by(Entitlement.id)
        )
    )


def _newest(db: Session, owner: Owner) -> ConfigurationVersion:
    return db.scalars(
        select(ConfigurationVersion)
        .where(ConfigurationVersion.vehicle_id == owner.vehicle.id)
        .order_by(ConfigurationVersion.version.desc())
    ).first()  # type: ignore[return-value]


def _on(version: ConfigurationVersion) -> set[str]:
    body = ManifestBody.model_validate(version.body)
    return {state.code for state in body.features if state.enabled}


def _notified(db: Session, owner: Owner) -> list[str]:
    return list(
        db.scalars(
            select(Notification.kind)
            .where(Notification.user_id == owner.user.id)
            .order_by(Notification.id)
        )
    )


def test_a_paid_window_is_held_delivered_then_captured_and_invoiced_when_the_car_applies_it(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    smtp: SmtpInbox,
) -> None:
    month = offer(db, owner.vehicle, "winter_traction", "window", "1M", net_minor=1_000)
    purchase = buy(
        db,
        owner,
        [item(month)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="buy-winter-0001",
        settings=settings,
        clock=clock,
    )
    # 10.00 + 21 % VAT, held on the card, not taken yet.
    assert (purchase.state, purchase.net_minor, purchase.vat_minor, purchase.gross_minor) == (
        "delivering",
        1_000,
        210,
        1_210,
    )
    payment = db.get_one(Payment, purchase.payment_id)
    assert (payment.kind, payment.state, payment.amount_minor) == ("option", "authorised", 1_210)
    (entitlement,) = _entitlements(db, purchase)
    assert (entitlement.code, entitlement.source, entitlement.state) == (
        "winter_traction",
        "purchase",
        "delivering",
    )
    assert (entitlement.valid_from, entitlement.valid_until) == (
        clock.now(),
        add_months(clock.now(), 1),
    )
    version = _newest(db, owner)
    assert purchase.configuration_version == version.version
    assert "winter_traction" in _on(version)
    assert purchase.deadline_at == clock.now() + timedelta(seconds=600)

    clock.advance(timedelta(seconds=2))
    answer(db, owner, version.version, "applied", clock)
    (entitlement,) = _entitlements(db, purchase)
    assert entitlement.state == "active"
    run_relay(settings, sessions, clock, db)

    purchase = db.get_one(Purchase, purchase.id)
    assert purchase.state == "active"
    payment = db.get_one(Payment, purchase.payment_id)
    assert payment.state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None and invoice.gross_minor == 1_210
    (line,) = invoice_lines(db, invoice.id)
    # In the customer's language (Spanish), with the window it pays for.
    assert (
        line.description == "Modos de tracción de invierno, periodo 1 mes (2026-01-15 – 2026-02-15)"
    )
    read = purchase_read(db, purchase, "en")
    assert (read.state, read.invoice_number, read.payment_state) == (
        "active",
        invoice.number,
        "captured",
    )
    assert read.lines[0].entitlement_state == "active"
    assert _notified(db, owner)[-1] == "store.purchase_active"
    events = [entry.event for entry in subject_history(db, "purchase", purchase.id)]
    assert events == ["purchase.authorising", "purchase.delivering", "purchase.active"]
    # The deadline passing later changes nothing.
    clock.advance(timedelta(hours=1))
    run_relay(settings, sessions, clock, db)
    assert db.get_one(Purchase, purchase.id).state == "active"


def test_the_car_rejecting_it_voids_the_payment_and_refunds_with_the_cars_reason(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=999)
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="buy-boost-reject",
        settings=settings,
        clock=clock,
    )
    version = purchase.configuration_version
    assert version is not None
    answer(db, owner, version, "rejected", clock, reason="certificate_expired")
    purchase = db.get_one(Purchase, purchase.id)
    assert (purchase.state, purchase.failure_code, purchase.failure_reason) == (
        "refunded",
        "car_rejected",
        "certificate_expired",
    )
    (entitlement,) = _entitlements(db, purchase)
    assert entitlement.state == "revoked"
    newest = _newest(db, owner)
    assert newest.version == version + 1 and "power_boost" not in _on(newest)
    run_relay(settings, sessions, clock, db)
    payment = db.get_one(Payment, purchase.payment_id)
    assert payment.state == "voided"
    assert payment_sandbox.captures(payment.reference) == 0
    assert invoice_of_payment(db, payment.id) is None
    read = purchase_read(db, purchase, "en")
    assert read.status == "Refunded: certificate_expired"
    assert "store.purchase_refunded" in _notified(db, owner)


def test_a_purchase_the_car_does_not_apply_in_time_is_refunded(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "7D", deadline_seconds=120)
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="buy-boost-silent",
        settings=settings,
        clock=clock,
    )
    assert purchase.deadline_at == clock.now() + timedelta(seconds=120)
    clock.advance(timedelta(seconds=119))
    run_relay(settings, sessions, clock, db)
    assert db.get_one(Purchase, purchase.id).state == "delivering"
    clock.advance(timedelta(seconds=2))
    run_relay(settings, sessions, clock, db)
    purchase = db.get_one(Purchase, purchase.id)
    assert (purchase.state, purchase.failure_code) == ("refunded", "not_applied_in_time")
    assert [e.state for e in _entitlements(db, purchase)] == ["revoked"]
    assert "power_boost" not in _on(_newest(db, owner))
    assert db.get_one(Payment, purchase.payment_id).state == "voided"
    # The car's late answer to the old version settles nothing.
    answer(db, owner, purchase.configuration_version or 0, "applied", clock)
    assert db.get_one(Purchase, purchase.id).state == "refunded"


def test_a_deferred_answer_keeps_it_delivering_and_says_it_waits_for_parking(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="buy-boost-parked",
        settings=settings,
        clock=clock,
    )
    answer(
        db, owner, purchase.configuration_version or 0, "deferred", clock, "waiting_to_be_parked"
    )
    read = purchase_read(db, db.get_one(Purchase, purchase.id), "es")
    assert (read.state, read.waiting_for_parking) == ("delivering", True)
    assert read.status == "Pagada, esperando a que el coche esté aparcado"


def test_the_same_key_twice_charges_once_and_finds_the_same_purchase(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = buy(
        db, owner, [item(boost)], token=token, key="double-click-1", settings=settings, clock=clock
    )
    again = buy(
        db, owner, [item(boost)], token=token, key="double-click-1", settings=settings, clock=clock
    )
    assert again.id == first.id
    payment = db.get_one(Payment, first.payment_id)
    assert payment_sandbox.authorisations(payment.reference) == 1
    assert (
        db.scalar(
            select(func.count())
            .select_from(Purchase)
            .where(Purchase.customer_id == owner.customer.id)
        )
        == 1
    )
    assert len(_entitlements(db, first)) == 1
    # The same key for another cart is refused.
    other = offer(db, owner.vehicle, "power_boost", "window", "7D")
    with pytest.raises(Conflict) as refused:
        buy(
            db,
            owner,
            [item(other)],
            token=token,
            key="double-click-1",
            settings=settings,
            clock=clock,
        )
    assert refused.value.code == "idempotency.key_reused"


def test_buying_an_option_that_runs_extends_it_from_its_end(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    week = offer(db, owner.vehicle, "power_boost", "window", "7D")
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = buy(
        db, owner, [item(week)], token=token, key="extend-0001", settings=settings, clock=clock
    )
    answer(db, owner, first.configuration_version or 0, "applied", clock)
    run_relay(settings, sessions, clock, db)
    clock.advance(timedelta(days=2))
    second = buy(
        db, owner, [item(week)], token=token, key="extend-0002", settings=settings, clock=clock
    )
    (running,) = _entitlements(db, first)
    (extension,) = _entitlements(db, second)
    assert running.valid_until is not None
    assert extension.valid_from == running.valid_until
    assert extension.valid_until == add_duration(running.valid_until, "7D")
    assert (
        db.scalar(
            select(func.count())
            .select_from(Entitlement)
            .where(Entitlement.vehicle_id == owner.vehicle.id, Entitlement.code == "power_boost")
        )
        == 2
    )
    (line,) = db.scalars(select(PurchaseLine).where(PurchaseLine.purchase_id == second.id))
    assert line.valid_from == running.valid_until


def test_a_subscription_starts_its_first_period_and_a_second_one_is_refused(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    monthly = offer(db, owner.vehicle, "winter_traction", "subscription", "1M", net_minor=500)
    purchase = buy(
        db,
        owner,
        [item(monthly)],
        token=token,
        key="subscribe-0001",
        settings=settings,
        clock=clock,
    )
    (subscription,) = db.scalars(
        select(Subscription).where(Subscription.vehicle_id == owner.vehicle.id)
    )
    assert (subscription.state, subscription.payment_method, subscription.code) == (
        "active",
        token,
        "winter_traction",
    )
    assert (subscription.current_period_start, subscription.current_period_end) == (
        clock.now(),
        add_months(clock.now(), 1),
    )
    (entitlement,) = _entitlements(db, purchase)
    assert (entitlement.source, entitlement.subscription_id) == ("subscription", subscription.id)
    with pytest.raises(Conflict) as refused:
        buy(
            db,
            owner,
            [item(monthly)],
            token=token,
            key="subscribe-0002",
            settings=settings,
            clock=clock,
        )
    assert refused.value.code == "store.already_subscribed"


def test_a_permanent_option_cannot_be_bought_twice(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    forever = offer(db, owner.vehicle, "power_boost", "permanent", net_minor=150_000)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    purchase = buy(
        db, owner, [item(forever)], token=token, key="forever-0001", settings=settings, clock=clock
    )
    (entitlement,) = _entitlements(db, purchase)
    assert (entitlement.source, entitlement.valid_until) == ("permanent", None)
    with pytest.raises(Conflict) as refused:
        buy(
            db,
            owner,
            [item(forever)],
            token=token,
            key="forever-0002",
            settings=settings,
            clock=clock,
        )
    assert refused.value.code == "store.not_eligible.already_permanent"


def test_a_trial_and_a_metered_option_cost_nothing_at_checkout_and_go_to_the_car(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    trial = offer(db, owner.vehicle, "winter_traction", "trial", "1M")
    metered = offer(db, owner.vehicle, "power_boost", "metered", net_minor=150, unit="hour")
    purchase = buy(
        db,
        owner,
        [item(trial), item(metered, spending_cap_minor=5_000)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="free-at-checkout",
        settings=settings,
        clock=clock,
    )
    assert (purchase.state, purchase.gross_minor, purchase.payment_id) == ("delivering", 0, None)
    trial_right, metered_right = _entitlements(db, purchase)
    assert (trial_right.source, trial_right.valid_until) == ("trial", add_months(clock.now(), 1))
    assert (metered_right.source, metered_right.spending_cap_minor) == ("metered", 5_000)
    assert {"winter_traction", "power_boost"} <= _on(_newest(db, owner))
    answer(db, owner, purchase.configuration_version or 0, "applied", clock)
    run_relay(settings, sessions, clock, db)
    assert db.get_one(Purchase, purchase.id).state == "active"
    # The trial is used: a second one is refused.
    with pytest.raises(Conflict) as refused:
        buy(
            db,
            owner,
            [item(trial)],
            token="tok_unused1",
            key="trial-again",
            settings=settings,
            clock=clock,
        )
    assert refused.value.code == "store.not_eligible.trial_used"


def test_a_declined_card_fails_the_purchase_and_delivers_nothing(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    before = _newest(db, owner).version
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_DECLINED),
        key="declined-0001",
        settings=settings,
        clock=clock,
    )
    assert (purchase.state, purchase.failure_code) == ("failed", "card_declined")
    assert _entitlements(db, purchase) == []
    assert _newest(db, owner).version == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ends_at": "end"}, "items.0.ends_at"),
        ({"starts_at": "past"}, "items.0.starts_at"),
        ({"spending_cap_minor": 100}, "items.0.spending_cap_minor"),
    ],
)
def test_bad_dates_or_caps_are_refused_per_field_and_write_nothing(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    fields: dict[str, object],
    field: str,
) -> None:
    week = offer(db, owner.vehicle, "power_boost", "window", "7D")
    values = {
        key: clock.now() + timedelta(days=3)
        if value == "end"
        else clock.now() - timedelta(hours=1)
        if value == "past"
        else value
        for key, value in fields.items()
    }
    with pytest.raises(InvalidInput) as refused:
        buy(
            db,
            owner,
            [item(week, **values)],
            token=payment_sandbox.token(CARD_SUCCEEDS),
            key=f"bad-{field}",
            settings=settings,
            clock=clock,
        )
    assert refused.value.field == field
    db.rollback()
    assert (
        db.scalar(
            select(func.count())
            .select_from(Purchase)
            .where(Purchase.customer_id == owner.customer.id)
        )
        == 0
    )
    assert (
        db.scalar(
            select(func.count())
            .select_from(Payment)
            .where(Payment.customer_id == owner.customer.id, Payment.kind == "option")
        )
        == 0
    )


def test_an_eligibility_refusal_writes_nothing(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    # The car was built without the rear screens.
    screens = offer(db, owner.vehicle, "entertainment", "window", "1M")
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    outbox_before = db.scalar(select(func.count()).select_from(OutboxMessage))
    with pytest.raises(Conflict) as refused:
        buy(
            db,
            owner,
            [item(boost), item(screens)],
            token=payment_sandbox.token(CARD_SUCCEEDS),
            key="not-eligible-1",
            settings=settings,
            clock=clock,
        )
    assert (refused.value.code, refused.value.field) == (
        "store.not_eligible.hardware_missing",
        "items.1.offer_id",
    )
    db.rollback()
    assert (
        db.scalar(
            select(func.count())
            .select_from(Purchase)
            .where(Purchase.customer_id == owner.customer.id)
        )
        == 0
    )
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == outbox_before


def test_a_custom_window_is_priced_per_started_day(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    custom = offer(db, owner.vehicle, "power_boost", "custom", net_minor=300)
    start = clock.now() + timedelta(days=1)
    end = start + timedelta(days=2, hours=1)
    priced = purchases.quote(
        db,
        vehicle=owner.vehicle,
        customer=owner.customer,
        items=[item(custom, starts_at=start, ends_at=end)],
        at=clock.now(),
        language="en",
    )
    (line,) = priced.lines
    assert (line.valid_from, line.valid_until, line.price.net_minor) == (start, end, 900)
    assert priced.gross_minor == 900 + 189


def test_a_payment_the_provider_confirms_late_is_delivered_without_the_customers_retry(
    db: Session,
    sessions: sessionmaker[Session],
    app_client: TestClient,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_ANSWERS_LATE),
        key="late-answer-1",
        settings=settings,
        clock=clock,
    )
    # The provider did not answer in time: nothing is on its way to the car yet.
    assert purchase.state == "authorising"
    assert _entitlements(db, purchase) == []
    payment = db.get_one(Payment, purchase.payment_id)
    deliver_event(
        app_client, payment_sandbox.inbox.wait_for(payment.reference, "authorization.succeeded")
    )
    clock.advance(purchases.PAYMENT_FOLLOW_UP)
    run_relay(settings, sessions, clock, db)
    purchase = db.get_one(Purchase, purchase.id)
    assert purchase.state == "delivering"
    assert [e.state for e in _entitlements(db, purchase)] == ["delivering"]
    assert payment_sandbox.authorisations(payment.reference) == 1


def test_the_cars_answer_settles_purchases_in_a_few_statements(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    """On the car's hot path: one query when the car has nothing on its way; with a purchase,
    the purchases, their entitlements, their activation and the capture job: no provider."""
    version = _newest(db, owner)
    version.state = "applied"
    db.flush()
    with counting_queries(db) as statements:
        purchases.configuration_answered(db, owner.vehicle, version, now=clock.now())
    assert len(statements) == 1

    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="hot-path-01",
        settings=settings,
        clock=clock,
    )
    version = _newest(db, owner)
    version.state = "applied"
    db.flush()
    captures_before = payment_sandbox.captures(db.get_one(Payment, purchase.payment_id).reference)
    with counting_queries(db) as statements:
        purchases.configuration_answered(db, owner.vehicle, version, now=clock.now())
    # purchases, entitlements, the entitlement's update and history row, the capture job
    # and its NOTIFY.
    assert len(statements) == 6, statements
    assert payment_sandbox.captures(db.get_one(Payment, purchase.payment_id).reference) == (
        captures_before
    )


def test_a_window_bought_while_another_is_still_being_paid_for_starts_after_it(
    db: Session, owner: Owner, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    week = offer(db, owner.vehicle, "power_boost", "window", "7D")
    first = purchases.begin_purchase(
        db,
        user=owner.user,
        vin=owner.vehicle.vin,
        items=[item(week)],
        payment_method=payment_sandbox.token(CARD_SUCCEEDS),
        idempotency_key="paying-first",
        now=clock.now(),
    )
    (paying,) = db.scalars(select(PurchaseLine).where(PurchaseLine.purchase_id == first.id))
    priced = purchases.quote(
        db,
        vehicle=owner.vehicle,
        customer=owner.customer,
        items=[item(week)],
        at=clock.now(),
        language="en",
    )
    (line,) = priced.lines
    assert paying.valid_until is not None
    assert (line.valid_from, line.extends) == (paying.valid_until, True)
