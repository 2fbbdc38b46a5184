"""The soak's SQL checks find what they look for: each is shown a database with one violation
planted (in the test's rolled-back transaction) and must name it. Fast; runs with `make test`,
so a check that could never fail is caught without running the soak."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing.models import Invoice, InvoiceCounter, LedgerEntry, Payment
from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.mqtt import FeatureState, ManifestBody
from caas.protocol.payments import Settlement
from caas.store.models import Entitlement
from caas.vehicles.models import Vehicle
from tests.soak import invariants
from tests.vehicles.support import Car, born_car

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _car(db: Session, settings: Settings, clock: FixedClock) -> Car:
    return born_car(db, settings=settings, now=clock.now())


def _payment(db: Session, car: Car, *, state: str = "captured") -> Payment:
    payment = Payment(
        customer_id=car.customer_id,
        kind="option",
        amount_minor=1_210,
        currency="EUR",
        state=state,
        reference=f"pay_{secrets.token_hex(10)}",
        idempotency_key=f"check-{secrets.token_hex(6)}",
        request_hash="0" * 64,
        refunded_minor=0,
        created_at=NOW,
        updated_at=NOW,
        captured_at=NOW if state == "captured" else None,
    )
    db.add(payment)
    db.flush()
    return payment


def _invoice(db: Session, car: Car, series: str, sequence: int, payment: Payment | None) -> None:
    db.add(
        Invoice(
            number=f"{series}-2026-{sequence:06d}",
            series=series,
            year=2026,
            sequence=sequence,
            kind="option",
            customer_id=car.customer_id,
            payment_id=payment.id if payment else None,
            language="es",
            currency="EUR",
            issued_at=NOW,
            issue_date=date(2026, 1, 15),
            seller_name="caas",
            seller_tax_id="B00000000",
            seller_address="Madrid",
            buyer_name="Ana",
            buyer_national_id="00000000T",
            buyer_address="Madrid",
            net_minor=1_000,
            vat_minor=210,
            gross_minor=1_210,
        )
    )
    db.flush()


def test_a_capture_without_its_invoice_is_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    before = invariants.captures_have_invoices(db)
    payment = _payment(db, car)
    found = set(invariants.captures_have_invoices(db)) - set(before)
    assert found == {f"payment {payment.id} (option, captured) has 0 invoices"}


def test_an_active_purchase_without_a_captured_payment_is_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    vehicle = db.get_one(Vehicle, car.vehicle_id)
    feature = db.scalars(
        select(Feature).where(
            Feature.platform_id == vehicle.platform_id, Feature.code == "power_boost"
        )
    ).one()
    before = invariants.active_entitlements_are_paid(db)
    free = Entitlement(
        vehicle_id=vehicle.id,
        feature_id=feature.id,
        code="power_boost",
        source="purchase",
        state="active",
        enabled=True,
        valid_from=NOW,
        valid_until=NOW + timedelta(days=1),
        customer_id=car.customer_id,
        parameters={},
        created_at=NOW,
        updated_at=NOW,
    )
    db.add(free)
    db.flush()
    found = set(invariants.active_entitlements_are_paid(db)) - set(before)
    assert [line.split(" ")[1] for line in found] == [str(free.id)]


def test_a_gap_in_a_series_and_a_stale_counter_are_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    series = f"Z{secrets.token_hex(3).upper()}"
    _invoice(db, car, series, 1, _payment(db, car))
    _invoice(db, car, series, 3, _payment(db, car))
    db.add(InvoiceCounter(series=series, year=2026, last_number=3))
    db.flush()
    found = [line for line in invariants.invoice_numbers_gap_free(db) if series in line]
    assert found == [f"series {series} 2026: 2 invoices, sequences 1..3, 2 distinct, counter 3"]


def test_an_unbalanced_posting_and_a_forgotten_hold_are_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    before = invariants.ledger_balances(db, {})
    payment = _payment(db, car, state="authorised")
    key = f"check:{payment.reference}"
    db.add(
        LedgerEntry(
            idempotency_key=key,
            position=0,
            kind="capture",
            payment_id=payment.id,
            customer_id=car.customer_id,
            reference=payment.reference,
            account="cash at provider",
            debit_minor=1_210,
            credit_minor=0,
            currency="EUR",
            posted_at=NOW,
        )
    )
    db.flush()
    found = set(invariants.ledger_balances(db, {})) - set(before)
    assert f"posting {key} (EUR): debits 1210 != credits 0" in found
    # The provider says it took nothing: the ledger's cash disagrees.
    assert any(line.startswith("cash at provider EUR") for line in found)
    # The payment holds money on the card, but no hold was posted.
    assert any(line.startswith("holds EUR") for line in found)


def test_a_payment_left_authorised_is_half_done(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    payment = _payment(db, car, state="authorised")
    assert f"payment {payment.id} still authorised" in invariants.nothing_left_half_done(db)


def test_a_car_runs_the_features_on_at_the_moment_inside_their_windows() -> None:
    def state(code: str, enabled: bool, until: datetime | None) -> FeatureState:
        return FeatureState(
            code=code,
            enabled=enabled,
            valid_from=NOW - timedelta(days=1),
            valid_until=until,
            affects_driving=False,
        )

    body = ManifestBody.model_validate(
        {
            "vin": "VCAAURA02TM000001",
            "version": 3,
            "issued_at": NOW,
            "phone_keys": [],
            "messages": [],
            "features": [
                state("entertainment", True, None),
                state("climate_plus", True, NOW),  # its window ended at this moment
                state("power_boost", False, None),  # switched off by its owner
            ],
        }
    )
    assert invariants.running_at(body, NOW) == ["entertainment"]


def _settlement(kind: str, reference: str, amount: int) -> Settlement:
    return Settlement(
        kind=kind,
        id=f"set_{secrets.token_hex(6)}",
        authorization=f"auth_{reference}",
        reference=reference,
        amount_minor=amount,
        currency="EUR",
        at=NOW,
    )


def test_a_payment_authorised_or_captured_twice_at_the_provider_is_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    payment = _payment(db, car)
    twice = invariants.ProviderBooks(
        authorised=[payment.reference, payment.reference, "pay_nobody_knows"],
        settlements=[_settlement("capture", payment.reference, 1_210)] * 2,
    )
    found = invariants.one_effect_per_key(db, twice)
    assert f"payment {payment.reference} authorised 2 times at the provider" in found
    assert f"payment {payment.reference} captured 2 times at the provider" in found
    assert "the provider authorised pay_nobody_knows, which the platform does not know" in found


def test_money_the_provider_took_that_the_platform_does_not_count_is_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)
    taken = _payment(db, car)
    held = _payment(db, car, state="authorised")
    books = invariants.ProviderBooks(
        authorised=[taken.reference, held.reference],
        settlements=[
            _settlement("capture", taken.reference, 1_000),
            _settlement("capture", held.reference, 1_210),
        ],
    )
    found = invariants.provider_agrees(db, books)
    assert f"payment {taken.reference}: platform took 1210, provider 1000" in found
    assert (
        f"the provider captured {held.reference}, which the platform does not count as taken"
        in found
    )
    assert invariants.provider_cash(books) == {"EUR": 2_210}


def test_a_car_behind_its_newest_configuration_is_found(
    db: Session, settings: Settings, clock: FixedClock
) -> None:
    car = _car(db, settings, clock)  # born with its configuration version 1, not yet applied
    found = invariants.cars_run_their_configuration(db, {car.vin: (0, [])}, clock.now())
    assert f"{car.vin}: newest version 1 is pending, the car runs version 0" in found
